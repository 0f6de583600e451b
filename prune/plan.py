"""The planned cut: what ``prune_model`` would remove from a model, as data on the dense model.

Sparse training that knows the cut (``sparsity.target``) needs three things from the pruner
without cutting anything: which BN channels and which blocks the settings would remove
(:func:`plan_cut`), the dense model as the cut would leave it (:func:`masked_model`, whose
outputs the slim model reproduces: the pruning contract), and how much of the model's |gamma|
still sits in what goes (:meth:`CutPlan.mass`).

The plan is read off a real ``prune_model`` run on the same weights and settings, so it is the
cut ``main.py prune`` makes from those weights: one selection code path, not two.

Masking follows the pruning contract (``prune.fold``): a removed channel has its gamma zeroed
and keeps its beta (the cut folds ``act(beta)`` into the readers); a removed block has the
gamma and beta of its pre-add BN zeroed, which makes it the identity. Where the betas of the
removed channels are zero as well, the masked and the slim model agree to float tolerance.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from darknet.model import Darknet

from .pipeline import PruneReport, prune_model
from .settings import PruneSettings


@dataclass(frozen=True)
class CutPlan:
    """Removed channels per BN module name, and the pre-add BN of every removed block."""

    channels: Mapping[str, tuple[int, ...]]  # BN name -> removed channel indices (ascending)
    blocks: tuple[str, ...]  # pre-add BN names of the removed blocks (all their channels go)
    params: int  # the slim model's parameters ...
    gflops: float  # ... and GFLOPs, from the report

    @classmethod
    def of(cls, model: Darknet, report: PruneReport) -> CutPlan:
        """The plan ``report`` (of a ``prune_model`` run on ``model``) carried out."""
        modules = dict(model.named_modules())
        channels = {}
        for name, kept in report.kept.items():
            removed = sorted(set(range(modules[name].num_features)) - set(kept))
            if removed:
                channels[name] = tuple(removed)
        return cls(channels, tuple(b.bn for b in report.removed_blocks), report.params_after,
                   report.gflops_after)

    @property
    def removed_channels(self) -> int:
        return sum(map(len, self.channels.values()))

    def groups(self, model: nn.Module) -> Iterator[tuple[nn.BatchNorm2d, torch.Tensor, bool]]:
        """``(bn, channel index, whole_block)`` for every BN the plan touches in ``model``
        (the dense model, or a copy of it such as the EMA)."""
        modules = dict(model.named_modules())
        for name, idx in self.channels.items():
            bn = modules[name]
            yield bn, torch.tensor(idx, dtype=torch.long, device=bn.weight.device), False
        for name in self.blocks:
            bn = modules[name]
            yield bn, torch.arange(bn.num_features, device=bn.weight.device), True

    def mass(self, model: nn.Module) -> float:
        """Sum of |gamma| (and |beta| of the blocks' BNs) that the cut would remove from
        ``model``: zero when the cut removes nothing the model computes with."""
        total = 0.0
        with torch.no_grad():
            for bn, idx, block in self.groups(model):
                total += float(bn.weight[idx].abs().sum())
                if block:
                    total += float(bn.bias[idx].abs().sum())
        return total

    def diff(self, other: CutPlan) -> int:
        """Channels (blocks counted whole) removed by one plan and not by the other."""
        changed = 0
        for name in {*self.channels, *other.channels}:
            changed += len(set(self.channels.get(name, ())) ^ set(other.channels.get(name, ())))
        return changed + len(set(self.blocks) ^ set(other.blocks))

    def as_dict(self) -> dict:
        return {"channels": {k: list(v) for k, v in self.channels.items()},
                "blocks": list(self.blocks), "removed_channels": self.removed_channels,
                "params": self.params, "gflops": self.gflops}


def plan_cut(model: Darknet, settings: PruneSettings, img_size: int | None = None,
             latency=None) -> CutPlan:
    """What ``prune_model(model, settings)`` removes (``model`` is not modified).

    ``latency``: as for ``prune_model`` (the table serving ``--ranking latency``)."""
    _, report = prune_model(model, settings, img_size, latency)
    return CutPlan.of(model, report)


def consumer_inputs(model: Darknet, plan: CutPlan, size: int = 64) -> dict[str, torch.Tensor]:
    """Per conv module name, the input channels that read only what the plan removes.

    Found by running the model with the planned gammas and betas zeroed: a removed channel
    then carries exactly zero (leaky(0) = 0) through every route, split, concat and
    upsample, so a conv input channel that is zero everywhere on a random batch, and is not
    in the model as it is, reads removed channels only. These are the weights the slim model
    drops with them; left alone, training grows them to make up for the fading channels.
    """
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for bn, idx, _ in plan.groups(probe):
            bn.weight[idx] = 0
            bn.bias[idx] = 0
    device = next(model.parameters()).device
    x = torch.rand(2, model.cfg.net.channels, size, size,
                   generator=torch.Generator().manual_seed(0)).to(device)
    masked, live = _zero_inputs(probe, x), _zero_inputs(model, x)
    return {name: torch.nonzero(dead & ~live[name]).flatten()
            for name, dead in masked.items() if (dead & ~live[name]).any()}


def _zero_inputs(model: Darknet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per conv module name, which of its input channels are zero everywhere on ``x``
    (``model`` run in eval mode, its mode restored)."""
    zero: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(conv, inputs, output):
            zero[name] = inputs[0].abs().amax(dim=(0, 2, 3)) == 0
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return zero


def masked_model(model: Darknet, plan: CutPlan) -> Darknet:
    """A copy of ``model`` computing what the cut leaves: removed channels' gammas zeroed,
    removed blocks' pre-add BN gamma and beta zeroed."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for bn, idx, block in plan.groups(masked):
            bn.weight[idx] = 0
            if block:
                bn.bias[idx] = 0
    return masked
