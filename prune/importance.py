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
channel (E = 0.1: a channel 100x as costly needs 1.6x the gamma to stay). ``--ranking
latency`` weighs the same importance against the latency a channel's removal saves instead
(``prune.latency``); :func:`weighed` is the rule for both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from darknet.cost import ConvCost, NetworkCost, network_cost
from darknet.model import Darknet

from .analysis import ChannelAnalysis
from .graph import layer_module

Gammas = Mapping[str, np.ndarray]  # BN module name -> |gamma| per channel (float64)


def abs_gammas(model: nn.Module) -> dict[str, np.ndarray]:
    """|gamma| of every BN of ``model``, by module name: all the ranking reads of a model."""
    return {name: m.weight.detach().abs().double().cpu().numpy()
            for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def gamma_sums(analysis: ChannelAnalysis, gammas: Gammas) -> tuple[np.ndarray, np.ndarray]:
    """Per class: the sum of its channels' |gamma| over the BNs it spans, and how many."""
    total = np.zeros(analysis.num_classes, dtype=np.float64)
    members = np.zeros(analysis.num_classes, dtype=np.int64)
    for space in analysis.graph.spaces:
        if space.bn is None:
            continue
        classes = analysis.classes_of_space(space)
        np.add.at(total, classes, gammas[space.bn])
        np.add.at(members, classes, 1)
    return total, members


def importance_of(analysis: ChannelAnalysis, gammas: Gammas) -> np.ndarray:
    """Per class: mean |gamma| of its channels (``gammas`` by BN name of ``analysis.cfg``)."""
    total, members = gamma_sums(analysis, gammas)
    return total / np.maximum(members, 1)


def class_importance(analysis: ChannelAnalysis, model: nn.Module) -> np.ndarray:
    """Per class of ``analysis``: mean |gamma| of its channels in ``model``'s BNs."""
    return importance_of(analysis, abs_gammas(model))


PROBE = 32  # input size the MACs are counted at; every layer's area scales alike with it


def class_macs(analysis: ChannelAnalysis, probe: int = PROBE) -> np.ndarray:
    """Per class: the multiply-adds one forward at ``probe`` px spends on its channels.

    A class's channel costs its producing convs one output channel each
    (``C_in * k * k * H * W``) and every conv that reads it one input channel
    (``C_out * k * k * H * W``), at the conv's output size (``darknet.cost``). The ranking does
    not depend on ``probe``: all areas scale by the same factor.
    """
    convs = conv_costs(network_cost(analysis.cfg, probe, probe))
    return class_costs(analysis, {n: c.macs_per_output_channel for n, c in convs.items()},
                       {n: c.macs_per_input_channel for n, c in convs.items()})


def conv_costs(cost: NetworkCost) -> dict[str, ConvCost]:
    """Every conv of a network by module name (``layers.5.convs.1``)."""
    return {f"{layer_module(layer.index)}.{c.name}": c for layer in cost.layers
            for c in layer.convs}


def class_costs(analysis: ChannelAnalysis, per_output: Mapping[str, float],
                per_input: Mapping[str, float]) -> np.ndarray:
    """Per class: what one of its channels costs every conv that produces it (``per_output``,
    by conv name) and every conv that reads it (``per_input``)."""
    cost = np.zeros(analysis.num_classes, dtype=np.float64)
    for space in analysis.graph.spaces:
        if space.conv is not None:
            np.add.at(cost, analysis.classes_of_space(space), per_output[space.conv])
    for reader in analysis.graph.consumers:
        np.add.at(cost, analysis.classes_of_tensor(reader.input), per_input[reader.conv])
    return cost


def weighed(importance: np.ndarray, cost: np.ndarray, exponent: float) -> np.ndarray:
    """``importance / (cost / mean cost) ** exponent``: 0 leaves the importance alone; 1 is
    importance per unit of cost, the greedy order of a knapsack. Costs are floored at a
    millionth of the mean, so a free item ranks first among equals rather than dividing by 0."""
    importance = np.asarray(importance, dtype=np.float64)
    if exponent == 0.0 or not len(cost):
        return importance
    cost = np.asarray(cost, dtype=np.float64)
    mean = cost.mean() if cost.mean() > 0 else 1.0
    return importance / (np.maximum(cost, 1e-6 * mean) / mean) ** exponent


def class_scores(analysis: ChannelAnalysis, model: Darknet,
                 flops_exponent: float) -> np.ndarray:
    """What the global ratio ranks classes by (lowest removed first).

    Mean |gamma| divided by ``(class MACs / mean class MACs) ** flops_exponent`` (in [0, 1],
    checked by ``PruneSettings``): 0 is network slimming's plain gamma; 1 ranks importance per
    multiply-add, so of two channels equally weak the one read at 64x64 goes before the one
    read at 4x4.
    """
    return macs_scores(analysis, abs_gammas(model), flops_exponent)


def macs_scores(analysis: ChannelAnalysis, gammas: Gammas, flops_exponent: float) -> np.ndarray:
    """:func:`class_scores` from the gammas alone."""
    importance = importance_of(analysis, gammas)
    if flops_exponent == 0.0:
        return importance
    return weighed(importance, np.maximum(class_macs(analysis), 1.0), flops_exponent)


def randomize_gammas(model: nn.Module, seed: int) -> nn.Module:
    """Draw every BN gamma from U(0, 1): stand-in scores for demos and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    return model
