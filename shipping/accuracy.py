"""The mAP of a backend: what a shipped file scores, in the runtime that runs it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from evaluation import MapResult
from yolodata import Batch

from .backends import Backend


class _AsModel(nn.Module):
    """A backend with ``Darknet``'s eval call (a list of detection tensors)."""

    def __init__(self, backend: Backend):
        super().__init__()
        self.backend = backend

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.backend(images)]


def backend_map(backend: Backend, batches: Iterable[Batch],
                class_names: Sequence[str]) -> MapResult:
    """mAP@.5 and mAP@.5:.95 of ``backend`` over ``batches``, as ``main.py eval`` counts."""
    from engine.evaluator import evaluate

    return evaluate(_AsModel(backend), batches, class_names)
