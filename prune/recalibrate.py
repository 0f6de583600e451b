"""BatchNorm recalibration: re-estimate every BN's running statistics after a cut.

A cut (blocks removed, channels removed with their ``act(beta)`` folded downstream) changes
what every later BatchNorm sees, but its running mean/var are still the dense model's. Running
a few hundred training images through the slim model, with no gradients and no weight changed,
and letting each BN re-estimate its statistics is NNCF's "batchnorm adaptation" and EagleEye's
"adaptive BN" (Li et al., ECCV 2020). It makes the model right after a cut, and candidate cuts
compared with each other (``prune.sensitivity``), score what their weights can do.

Only the BatchNorms run in train mode; every other module stays in eval mode, so nothing else
with a train-mode behaviour (a ``[yolo]`` head returns raw logits in train mode, dropout would
drop) takes part. During the pass each BN's ``momentum`` is None, PyTorch's cumulative
average: afterwards its running mean is the average of the batches' means and its running var
the average of the batches' unbiased variances, each batch weighing the same (hence equal-sized
batches give the average over images). Each BN's momentum is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class Recalibration:
    """What a prune report records of the recalibration of its slim model."""

    data: str  # the dataset (``--data``)
    split: str  # the split the images came from
    images: int  # how many


def tracked_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorms of ``model`` that keep running statistics (the ones to recalibrate)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _saved_stats(bns: list[_BatchNorm]) -> list[tuple[Tensor, Tensor, Tensor]]:
    return [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
            for bn in bns]


def _restore_stats(bns: list[_BatchNorm], saved: list[tuple[Tensor, Tensor, Tensor]]) -> None:
    for bn, (mean, var, count) in zip(bns, saved, strict=True):
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.num_batches_tracked.copy_(count)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor], images: int | None = None) -> int:
    """Re-estimate the running mean/var of every BN of ``model`` over ``batches`` (image
    tensors ``[B, C, H, W]``), the first ``images`` images of them (None: all).

    No parameter changes; the model is left in eval mode. Returns the number of images used.
    If the pass fails or sees no image, every statistic is put back as it was (and, for no
    image, ValueError).
    """
    bns = tracked_batchnorms(model)
    model.eval()
    if not bns:
        return 0
    device = next(model.parameters()).device
    saved, momenta = _saved_stats(bns), [bn.momentum for bn in bns]
    seen = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for x in batches:
            x = x if images is None else x[:images - seen]
            if len(x):
                model(x.to(device))
                seen += len(x)
            if images is not None and seen >= images:
                break
        if not seen:
            raise ValueError("BN recalibration got no image")
    except BaseException:
        _restore_stats(bns, saved)
        raise
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    return seen
