"""How important a coupled channel is: the mean |gamma| over the BatchNorms it spans.

Network slimming (Liu et al., 2017) reads a channel's scaling factor gamma as its importance;
a class of coupled channels (``prune.analysis``) is removed as one, so its importance is the
mean of its members' |gamma| (torch-pruning's default group reduction). The mean keeps one
scale for every class: a sum would rank a residual-chain channel that spans twenty BNs above
any single-BN channel however small its gammas are, so the chains -- where most parameters
sit -- would never be pruned. Classes without any BN member score 0; they are fixed anyway.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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


def randomize_gammas(model: nn.Module, seed: int) -> nn.Module:
    """Draw every BN gamma from U(0, 1): stand-in scores for demos and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    return model
