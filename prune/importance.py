"""How important a coupled channel is: the sum of |gamma| over every BatchNorm it spans.

Network slimming (Liu et al., 2017) reads a channel's scaling factor gamma as its importance;
a class of coupled channels (``prune.analysis``) is removed as one, so its importance is the
sum of its members' |gamma|. Classes without any BN member score 0; they are fixed anyway.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .analysis import ChannelAnalysis


def class_importance(analysis: ChannelAnalysis, model: nn.Module) -> np.ndarray:
    """Per class of ``analysis``: sum of |gamma| of its channels in ``model``'s BNs."""
    modules = dict(model.named_modules())
    importance = np.zeros(analysis.num_classes, dtype=np.float64)
    for space in analysis.graph.spaces:
        if space.bn is None:
            continue
        gamma = modules[space.bn].weight.detach().abs().double().cpu().numpy()
        np.add.at(importance, analysis.classes_of_space(space), gamma)
    return importance


def randomize_gammas(model: nn.Module, seed: int) -> nn.Module:
    """Draw every BN gamma from U(0, 1): stand-in scores for demos and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    return model
