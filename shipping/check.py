"""Does a shipped form compute what the model does? One comparison for every export.

Outputs are compared per column (the last axis: box x, y, w, h, objectness, classes, or the
raw logits), each difference relative to that column's largest value (at least 1): pixels
for x and y, 1 for probabilities and logits. Box widths and heights are compared as their
logarithms: they are ``anchor * exp(t)``, and ``exp`` turns the float32 rounding of ``t``
(~1e-5 of it after a hundred layers) into the same *relative* error of the size, which
measured against the largest box would read as an absolute one. Above ``TOLERANCE`` the
export is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from common.errors import UserError
from darknet.model import Darknet

TOLERANCE = 1e-4


class ExportError(UserError):
    """An exported form that does not compute what the model does, or an unusable file."""


@dataclass(frozen=True)
class OutputCheck:
    max_abs_diff: float
    max_rel_diff: float  # per output column, relative to its largest |value| (see the module)


# Decoded detections' w, h columns (see the module docstring).
SIZE_COLUMNS = (2, 3)


def compare_outputs(want: np.ndarray, got: np.ndarray, what: str,
                    log_columns: tuple[int, ...] = ()) -> OutputCheck:
    """``got`` against ``want`` (both ``[..., columns]``, ``log_columns`` compared as their
    logarithms); ExportError naming ``what`` when their shapes differ or they are further
    apart than ``TOLERANCE``."""
    if got.shape != want.shape:
        raise ExportError(f"{what} output has shape {list(got.shape)}, the PyTorch model's is "
                          f"{list(want.shape)}")
    want = want.reshape(-1, want.shape[-1]).astype(np.float64)
    got = got.reshape(-1, got.shape[-1]).astype(np.float64)
    diff = np.abs(got - want)
    for c in log_columns:
        want[:, c], got[:, c] = (np.log(np.maximum(v[:, c], 1e-30)) for v in (want, got))
    scale = np.maximum(np.abs(want).max(axis=0), 1.0)
    check = OutputCheck(float(diff.max()), float((np.abs(got - want) / scale).max()))
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
