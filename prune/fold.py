"""What the slim model no longer computes, folded into the layers that read it.

Both cuts leave a constant behind. Channel pruning removes a channel by zeroing its gamma: its
BN then emits ``beta``, and after the activation the constant ``act(beta)`` (0 for
leaky/linear when beta is 0). Layer pruning removes an identity-residual block whose pre-add
BN has gamma ~ 0: the branch still adds ``act(beta)`` to the block's input, so every tensor
downstream of the block carries that offset in the dense model and not in the slim one.

Either way the value travels like any channel (:func:`propagate` walks the channel graph):
concatenated, split, upsampled and max-pooled unchanged, and through adds by a rule of the
cut's own (a removed channel is constant in every input: ``act(c1 + c2)``; an offset on a live
signal passes only a linear add). A conv that reads it adds ``sum_j c_j * sum(W[:, j])`` to
every output, which the slim conv's BN absorbs into ``running_mean`` (or its bias, without
BN): :func:`absorb`.

Exact for 1x1 and unpadded convs. A padded kxk conv sees the constant only inside the image,
so at the border the fold over-corrects by the padded taps' share; :class:`FoldNote` says
where that happens. An offset that meets a non-linear add (a ``[shortcut]`` with an
activation) or a head cannot be folded past it: :class:`OffsetNote` says where.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from darknet.layers import make_activation

from .analysis import ChannelAnalysis
from .graph import Add, ChannelGraph, ChannelSpace, Concat, Consume, Produce, Same, Slice
from .select import KeepPlan


@dataclass(frozen=True)
class FoldNote:
    """One conv that absorbed the constants of removed channels or blocks it reads."""

    conv: str
    removed_inputs: int  # input channels that carried a constant
    exact: bool  # 1x1 or unpadded: no border effect
    max_shift: float  # largest |change| of one output's mean / bias


@dataclass(frozen=True)
class OffsetNote:
    """A removed block's constant that reaches ``where`` and is not folded past it."""

    where: str  # "layer 7: an add with activation=leaky", "read by [yolo] layer 9"
    max_offset: float


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    return make_activation(name)(x.clone())


AddRule = Callable[[Add, list[torch.Tensor]], torch.Tensor]


def propagate(graph: ChannelGraph, produced: Callable[[ChannelSpace], torch.Tensor],
              add: AddRule) -> list[torch.Tensor]:
    """Per graph tensor, one value per position: ``produced(space)`` where a space is made,
    ``add(op, inputs)`` at an add, and moved unchanged by concat, slice, upsample, maxpool."""
    values: list[torch.Tensor | None] = [None] * len(graph.tensors)
    for op in graph.ops:
        if isinstance(op, Produce):
            values[op.out] = produced(graph.spaces[op.space])
        elif isinstance(op, Add):
            values[op.out] = add(op, [values[t] for t in op.inputs])
        elif isinstance(op, Concat):
            values[op.out] = torch.cat([values[t] for t in op.inputs])
        elif isinstance(op, Slice):
            values[op.out] = values[op.input][op.start:op.stop]
        elif isinstance(op, Same):
            values[op.out] = values[op.input]
        else:
            raise TypeError(f"no constant rule for {type(op).__name__}")
    return values


def _beta(modules: Mapping[str, nn.Module], space: ChannelSpace) -> torch.Tensor:
    """``act(beta)``: what the space's channels emit with gamma = 0 (float64, on the CPU)."""
    beta = modules[space.bn].bias.detach().to("cpu", torch.float64)
    return _act(space.activation, beta)


def tensor_constants(analysis: ChannelAnalysis, model: nn.Module) -> list[torch.Tensor]:
    """Per graph tensor: the value each position takes when its channel is removed (float64)."""
    modules = dict(model.named_modules())

    def produced(space: ChannelSpace) -> torch.Tensor:
        if space.bn is None:  # never removed
            return torch.zeros(space.size, dtype=torch.float64)
        return _beta(modules, space)

    return propagate(analysis.graph, produced,
                     lambda op, inputs: _act(op.activation, sum(inputs)))


def _shift(modules: Mapping[str, nn.Module], c: Consume, positions: np.ndarray,
           value: torch.Tensor) -> tuple[torch.Tensor, FoldNote]:
    """What conv ``c`` outputs more when its input ``positions`` carry ``value``."""
    weight = modules[c.conv].weight.detach()
    taps = weight[:, torch.from_numpy(positions).to(weight.device)].to("cpu", torch.float64)
    shift = taps.sum(dim=(2, 3)) @ value
    return shift, FoldNote(c.conv, len(positions), c.size == 1 or c.padding == 0,
                           float(shift.abs().max()))


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
        shifts[c.conv], note = _shift(modules, c, removed, value)
        notes.append(note)
    return shifts, notes


def block_offsets(graph: ChannelGraph, model: nn.Module,
                  branches: Collection[int]) -> tuple[list[torch.Tensor], list[OffsetNote]]:
    """Per graph tensor: what the dense model adds that the model without the blocks whose
    pre-add spaces are ``branches`` lacks (float64), and where an offset stops unfolded."""
    modules = dict(model.named_modules())
    notes: list[OffsetNote] = []

    def produced(space: ChannelSpace) -> torch.Tensor:
        if space.id in branches:
            return _beta(modules, space)
        return torch.zeros(space.size, dtype=torch.float64)

    def add(op: Add, inputs: list[torch.Tensor]) -> torch.Tensor:
        total = sum(inputs)
        if op.activation == "linear" or not total.any():
            return total
        notes.append(OffsetNote(f"layer {op.layer_index}: an add with "
                                f"activation={op.activation}", float(total.abs().max())))
        return torch.zeros_like(total)

    offsets = propagate(graph, produced, add)
    for f in graph.fixed:
        if offsets[f.input].any():
            notes.append(OffsetNote(f.reason, float(offsets[f.input].abs().max())))
    return offsets, notes


def offset_shifts(graph: ChannelGraph, model: nn.Module, branches: Collection[int],
                  removed_layers: Collection[int]
                  ) -> tuple[dict[str, torch.Tensor], list[FoldNote], list[OffsetNote]]:
    """Per conv outside ``removed_layers`` that reads a removed block's offset: its shift."""
    modules = dict(model.named_modules())
    offsets, lost = block_offsets(graph, model, branches)
    shifts: dict[str, torch.Tensor] = {}
    notes: list[FoldNote] = []
    for c in graph.consumers:
        value = offsets[c.input]
        if c.layer_index in removed_layers or not value.any():
            continue
        positions = np.flatnonzero(value.numpy())
        shifts[c.conv], note = _shift(modules, c, positions, value[positions])
        notes.append(note)
    return shifts, notes, lost


def absorb(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, shift: torch.Tensor) -> None:
    """Make ``conv`` (+ ``bn``) output ``shift`` more, per output channel."""
    with torch.no_grad():
        if bn is not None:
            bn.running_mean.sub_(shift.to(bn.running_mean.device, bn.running_mean.dtype))
        else:
            conv.bias.add_(shift.to(conv.bias.device, conv.bias.dtype))
