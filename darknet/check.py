"""Does a shipped form compute what the model does? One comparison for every export.

Outputs are compared per column (the last axis: box x, y, w, h, objectness, classes), each
difference relative to that column's largest value (at least 1): pixels for the box, 1 for
probabilities or logits. Above ``TOLERANCE`` the export is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from common.errors import UserError

from .model import Darknet

TOLERANCE = 1e-4


class ExportError(UserError):
    """An exported form that does not compute what the model does, or an unusable file."""


@dataclass(frozen=True)
class OutputCheck:
    max_abs_diff: float
    max_rel_diff: float  # per output column, relative to that column's largest |value|


def compare_outputs(want: np.ndarray, got: np.ndarray, what: str) -> OutputCheck:
    """``got`` against ``want`` (both ``[..., columns]``); ExportError naming ``what`` when
    their shapes differ or they are further apart than ``TOLERANCE``."""
    if got.shape != want.shape:
        raise ExportError(f"{what} output has shape {list(got.shape)}, the PyTorch model's is "
                          f"{list(want.shape)}")
    want, got = want.reshape(-1, want.shape[-1]), got.reshape(-1, got.shape[-1])
    diff = np.abs(got.astype(np.float64) - want)
    scale = np.maximum(np.abs(want).max(axis=0), 1.0)
    check = OutputCheck(float(diff.max()), float((diff / scale).max()))
    if not check.max_rel_diff <= TOLERANCE:  # also catches NaN
        raise ExportError(
            f"{what} output differs from the PyTorch model's by {check.max_abs_diff:.3g} "
            f"({check.max_rel_diff:.3g} of the output scale, more than {TOLERANCE:g})")
    return check


def float64_copy(model: Darknet) -> Darknet:
    """An eval-mode float64 CPU copy: the reference whose own rounding error is negligible."""
    return copy.deepcopy(model).cpu().double().eval()


def check_images(model: Darknet, img_size: int, batch: int = 1) -> torch.Tensor:
    """Seeded random images in 0..1 ``[batch, C, S, S]``: what the export checks run on."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, model.cfg.net.channels, img_size, img_size, generator=g)
