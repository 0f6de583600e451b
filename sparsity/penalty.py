"""Network slimming's L1 penalty on BatchNorm gammas (Liu et al., 2017).

The penalty ``s * sum(|gamma|)`` is applied as its subgradient, added to the gradient of each
prunable BN weight after backward and before the optimizer step; BNs whose channels cannot be
removed get none, so sparsity is pushed only where pruning can use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


def add_l1_subgradient(bns: Iterable[nn.BatchNorm2d], s: float) -> None:
    """``gamma.grad += s * sign(gamma)`` for every BN in ``bns``."""
    with torch.no_grad():
        for bn in bns:
            if bn.weight.grad is None:
                bn.weight.grad = torch.zeros_like(bn.weight)
            bn.weight.grad.add_(torch.sign(bn.weight), alpha=s)


@dataclass(frozen=True)
class SparsitySchedule:
    """How ``s`` evolves over training.

    ``constant``: ``s`` throughout. ``decay``: ``s`` until ``decay_start`` (fraction of the
    epochs), then ``s * final_frac``, so the last epochs let the surviving channels recover
    accuracy while the near-zero gammas stay near zero.
    """

    s: float
    kind: str = "constant"
    decay_start: float = 0.7
    final_frac: float = 0.1

    def __post_init__(self):
        if self.s < 0:
            raise ValueError(f"sparsity rate s must be >= 0, got {self.s}")
        if self.kind not in ("constant", "decay"):
            raise ValueError(f"schedule must be 'constant' or 'decay', got {self.kind!r}")
        if not 0.0 <= self.decay_start <= 1.0 or not 0.0 <= self.final_frac <= 1.0:
            raise ValueError(f"decay_start and final_frac must be in [0, 1], got "
                             f"{self.decay_start}, {self.final_frac}")

    def at(self, epoch: int, epochs: int) -> float:
        if self.kind == "decay" and epoch >= self.decay_start * epochs:
            return self.s * self.final_frac
        return self.s
