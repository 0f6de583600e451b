"""How important a coupled channel is: the mean |gamma| over the BatchNorms it spans.

Network slimming (Liu et al., 2017) reads a channel's scaling factor gamma as its importance;
a class of coupled channels (``prune.analysis``) is removed as one, so its importance is the
mean of its members' |gamma| (torch-pruning's default group reduction). The mean keeps one
scale for every class: a sum would rank a residual-chain channel that spans twenty BNs above
any single-BN channel however small its gammas are, so the chains -- where most parameters
sit -- would never be pruned. Classes without any BN member score 0; they are fixed anyway.

``class_scores`` can weigh that importance against cost: divided by the multiply-adds the
channel costs raised to a ``flops_exponent`` E. Sparse training mostly frees channels of the
wide, low-resolution layers, where the parameters are; the FLOPs sit in the narrow
high-resolution ones, which a positive E reaches sooner. E = 1 is importance per multiply-add
(the greedy order for a compute budget); a small E only breaks near-ties towards the costly
channel (E = 0.1: a channel 100x as costly needs 1.6x the gamma to stay).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from darknet.model import Darknet
from darknet.shapes import infer_shapes

from .analysis import ChannelAnalysis


def class_importance(analysis: ChannelAnalysis, model: nn.Module) -> np.ndarray:
    """Per class of ``analysis``: mean |gamma| of its channels in ``model``'s BNs."""
    modules = dict(model.named_modules())
    total = np.zeros(analysis.num_classes, dtype=np.float64)
    members = np.zeros(analysis.num_classes, dtype=np.int64)
    for space in analysis.graph.spaces:
        if space.bn is None:
            continue
        gamma = modules[space.bn].weight.detach().abs().double().cpu().numpy()
        classes = analysis.classes_of_space(space)
        np.add.at(total, classes, gamma)
        np.add.at(members, classes, 1)
    return total / np.maximum(members, 1)


PROBE = 32  # input size the MACs are counted at; every layer's area scales alike with it


def class_macs(analysis: ChannelAnalysis, model: Darknet, probe: int = PROBE) -> np.ndarray:
    """Per class: the multiply-adds one forward at ``probe`` px spends on its channels.

    A class's channel costs its producing convs one output channel each
    (``C_in / groups * k * k * H * W``) and every conv that reads it one input channel
    (``C_out / groups * k * k * H * W``). H, W are the conv's output size: that of its layer
    (a block's inner convs keep the block's resolution), from shape inference at ``probe``.
    The ranking does not depend on ``probe``: all areas scale by the same factor.
    """
    areas = [s.out.h * s.out.w for s in infer_shapes(model.cfg, probe, probe)]
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    macs = np.zeros(analysis.num_classes, dtype=np.float64)
    for space in analysis.graph.spaces:
        if space.conv is not None:
            per_output = convs[space.conv].weight[0].numel() * areas[space.layer_index]
            np.add.at(macs, analysis.classes_of_space(space), per_output)
    for reader in analysis.graph.consumers:
        conv = convs[reader.conv]
        per_input = (conv.out_channels // conv.groups * conv.weight[0, 0].numel()
                     * areas[reader.layer_index])
        np.add.at(macs, analysis.classes_of_tensor(reader.input), per_input)
    return macs


def class_scores(analysis: ChannelAnalysis, model: Darknet,
                 flops_exponent: float = 0.0) -> np.ndarray:
    """What the global ratio ranks classes by (lowest removed first).

    Mean |gamma| divided by ``(class MACs / mean class MACs) ** flops_exponent``: 0 is
    network slimming's plain gamma; 1 ranks importance per multiply-add, so of two channels
    equally weak the one read at 64x64 goes before the one read at 4x4.
    """
    if not 0.0 <= flops_exponent <= 1.0:
        raise ValueError(f"flops_exponent must be in [0, 1], got {flops_exponent:g}")
    importance = class_importance(analysis, model)
    if flops_exponent == 0.0:
        return importance
    macs = np.maximum(class_macs(analysis, model), 1.0)
    return importance / (macs / macs.mean()) ** flops_exponent


def randomize_gammas(model: nn.Module, seed: int) -> nn.Module:
    """Draw every BN gamma from U(0, 1): stand-in scores for demos and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    return model
