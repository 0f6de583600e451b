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

from darknet.cost import network_cost
from darknet.model import Darknet

from .analysis import ChannelAnalysis
from .graph import layer_module


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


def class_macs(analysis: ChannelAnalysis, probe: int = PROBE) -> np.ndarray:
    """Per class: the multiply-adds one forward at ``probe`` px spends on its channels.

    A class's channel costs its producing convs one output channel each
    (``C_in * k * k * H * W``) and every conv that reads it one input channel
    (``C_out * k * k * H * W``), at the conv's output size (``darknet.cost``). The ranking does
    not depend on ``probe``: all areas scale by the same factor.
    """
    cost = network_cost(analysis.cfg, probe, probe)
    convs = {f"{layer_module(layer.index)}.{c.name}": c for layer in cost.layers
             for c in layer.convs}
    macs = np.zeros(analysis.num_classes, dtype=np.float64)
    for space in analysis.graph.spaces:
        if space.conv is not None:
            np.add.at(macs, analysis.classes_of_space(space),
                      convs[space.conv].macs_per_output_channel)
    for reader in analysis.graph.consumers:
        np.add.at(macs, analysis.classes_of_tensor(reader.input),
                  convs[reader.conv].macs_per_input_channel)
    return macs


def class_scores(analysis: ChannelAnalysis, model: Darknet,
                 flops_exponent: float) -> np.ndarray:
    """What the global ratio ranks classes by (lowest removed first).

    Mean |gamma| divided by ``(class MACs / mean class MACs) ** flops_exponent`` (in [0, 1],
    checked by ``PruneSettings``): 0 is network slimming's plain gamma; 1 ranks importance per
    multiply-add, so of two channels equally weak the one read at 64x64 goes before the one
    read at 4x4.
    """
    importance = class_importance(analysis, model)
    if flops_exponent == 0.0:
        return importance
    macs = np.maximum(class_macs(analysis), 1.0)
    return importance / (macs / macs.mean()) ** flops_exponent


def randomize_gammas(model: nn.Module, seed: int) -> nn.Module:
    """Draw every BN gamma from U(0, 1): stand-in scores for demos and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    return model
