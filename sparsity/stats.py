"""The |gamma| distribution of the prunable BNs: is the model sparse enough to prune?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

# Log-spaced bins from 1e-4 to 10; values outside are clamped into the end bins.
EDGES: tuple[float, ...] = tuple(float(v) for v in torch.logspace(-4, 1, 41))


@dataclass(frozen=True)
class GammaStats:
    count: int  # number of prunable channels
    l1: float  # sum of |gamma|
    below: float  # fraction of |gamma| under ``threshold``
    threshold: float
    histogram: tuple[float, ...]  # fraction of channels per bin of EDGES
    cut_ratio: float  # a pruning ratio ...
    cut: float  # ... and the |gamma| quantile at it: where a cut by gamma alone would fall

    def as_dict(self) -> dict:
        return {"count": self.count, "l1": self.l1, "below": self.below,
                "threshold": self.threshold, "cut_ratio": self.cut_ratio, "cut": self.cut}


def gamma_stats(bns: Sequence[nn.BatchNorm2d], threshold: float = 0.01,
                cut_ratio: float = 0.5) -> GammaStats:
    """The spread of the |gamma| of ``bns``.

    ``cut`` is the ``cut_ratio`` quantile of all their |gamma| (linear interpolation, as
    ``numpy.quantile``): the threshold a per-channel network-slimming cut at that ratio would
    use. ``prune`` ranks coupled groups by mean |gamma| and a FLOPs exponent, so its actual
    cut lies near this value, not exactly on it.
    """
    gammas = torch.cat([bn.weight.detach().abs().flatten().float().cpu() for bn in bns])
    edges = torch.tensor(EDGES)
    idx = torch.bucketize(gammas.clamp(EDGES[0], EDGES[-1]), edges[1:-1])
    hist = torch.bincount(idx, minlength=len(EDGES) - 1).float() / max(len(gammas), 1)
    return GammaStats(
        count=len(gammas),
        l1=float(gammas.sum()),
        below=float((gammas < threshold).float().mean()) if len(gammas) else 0.0,
        threshold=threshold,
        histogram=tuple(float(v) for v in hist),
        cut_ratio=cut_ratio,
        cut=float(torch.quantile(gammas.double(), cut_ratio)) if len(gammas) else 0.0,
    )
