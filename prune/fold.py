"""What a removed channel still contributed, folded into the layers that read it.

The masked model removes a channel by zeroing its gamma: its BN then emits ``beta``, and after
the activation the constant ``act(beta)`` (0 for leaky/linear when beta is 0). That constant
travels like any channel: added (shortcut, residual, cumulative add: ``act(c1 + c2)``),
concatenated, split, upsampled and max-pooled unchanged. A conv that reads it adds
``sum_j c_j * sum(W[:, j])`` to every output, which the slim conv's BN absorbs into
``running_mean`` (or its bias, without BN).

Exact for 1x1 and unpadded convs. A padded kxk conv sees the constant only inside the image,
so at the border the fold over-corrects by the padded taps' share; :class:`FoldNote` says
where that happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from darknet.layers import make_activation

from .analysis import ChannelAnalysis
from .graph import Add, Concat, Produce, Same, Slice
from .select import KeepPlan


@dataclass(frozen=True)
class FoldNote:
    """One conv that absorbed the constants of removed input channels."""

    conv: str
    removed_inputs: int
    exact: bool  # 1x1 or unpadded: no border effect
    max_shift: float  # largest |change| of one output's mean / bias


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    return make_activation(name)(x.clone())


def tensor_constants(analysis: ChannelAnalysis, model: nn.Module) -> list[torch.Tensor]:
    """Per graph tensor: the value each position takes when its channel is removed (float64)."""
    modules = dict(model.named_modules())
    graph = analysis.graph
    consts: list[torch.Tensor | None] = [None] * len(graph.tensors)
    for op in graph.ops:
        if isinstance(op, Produce):
            space = graph.spaces[op.space]
            if space.bn is None:  # never removed
                consts[op.out] = torch.zeros(space.size, dtype=torch.float64)
            else:
                beta = modules[space.bn].bias.detach().to("cpu", torch.float64)
                consts[op.out] = _act(space.activation, beta)
        elif isinstance(op, Add):
            consts[op.out] = _act(op.activation, sum(consts[t] for t in op.inputs))
        elif isinstance(op, Concat):
            consts[op.out] = torch.cat([consts[t] for t in op.inputs])
        elif isinstance(op, Slice):
            consts[op.out] = consts[op.input][op.start:op.stop]
        elif isinstance(op, Same):
            consts[op.out] = consts[op.input]
        else:
            raise TypeError(f"no constant rule for {type(op).__name__}")
    return consts


def fold_shifts(analysis: ChannelAnalysis, plan: KeepPlan,
                model: nn.Module) -> tuple[dict[str, torch.Tensor], list[FoldNote]]:
    """Per reading conv: what its (dense) outputs gain from removed inputs, and notes."""
    modules = dict(model.named_modules())
    consts = tensor_constants(analysis, model)
    shifts: dict[str, torch.Tensor] = {}
    notes: list[FoldNote] = []
    for c in analysis.graph.consumers:
        removed = np.flatnonzero(~plan.keep[analysis.classes_of_tensor(c.input)])
        if not len(removed):
            continue
        value = consts[c.input][torch.from_numpy(removed)]
        if not value.any():
            continue
        weight = modules[c.conv].weight.detach()
        taps = weight[:, torch.from_numpy(removed).to(weight.device)].to("cpu", torch.float64)
        shift = taps.sum(dim=(2, 3)) @ value
        shifts[c.conv] = shift
        notes.append(FoldNote(c.conv, len(removed), c.size == 1 or c.padding == 0,
                              float(shift.abs().max())))
    return shifts, notes
