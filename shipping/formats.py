"""Every file format ``main.py export`` writes, from one table.

A ``Format`` names its files (suffixes after the cfg's stem) and a writer that checks the
file against the PyTorch model before it appears: an exported form that does not compute
what the model does is an ExportError (``shipping.check``), and nothing is written.

- ``onnx``: ``<stem>.onnx`` (``shipping.onnx_export``), checked in onnxruntime.
- ``darknet``: ``<stem>.cfg`` + ``.weights`` with the project-only sections lowered to plain
  Darknet ones (``shipping.lower``), checked in PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from common.io import atomic_write_bytes
from darknet.model import Darknet

from .backends import OrtBackend, ort_session
from .check import SIZE_COLUMNS, OutputCheck, check_images, compare_outputs, float64_copy
from .lower import write_lowered
from .onnx_export import export_onnx


@dataclass(frozen=True)
class ExportOptions:
    img_size: int | None = None  # square input the graph is traced and checked at (None: cfg's)
    dynamic: bool = False  # onnx: dynamic batch, height and width axes


@dataclass(frozen=True)
class Written:
    files: tuple[Path, ...]
    max_abs_diff: float  # the written form's outputs against the PyTorch model's
    max_rel_diff: float | None = None  # onnx: the same, relative to the output scale
    lowered: bool = True  # darknet: False when the cfg had nothing to lower
    layers: int = 0  # darknet: layers in the written cfg


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    write: Callable[[Darknet, tuple[Path, ...], ExportOptions], Written]

    def targets(self, out_dir: str | Path, stem: str) -> tuple[Path, ...]:
        return tuple(Path(out_dir) / f"{stem}{suffix}" for suffix in self.suffixes)


def check_onnx(backend: OrtBackend, model: Darknet, images: torch.Tensor) -> OutputCheck:
    """Run ``images`` through the backend and through ``model``; ExportError when they differ
    by more than ``TOLERANCE`` of the output scale (``shipping.check``).

    The model runs in float64 (on a copy), so what is measured is the graph's own float32
    error, not that of both.
    """
    with torch.no_grad():
        want = torch.cat(float64_copy(model)(images.cpu().double()), 1).numpy()
    return compare_outputs(want, backend(images).numpy(), backend.name,
                           log_columns=SIZE_COLUMNS)


def write_onnx(model: Darknet, path: str | Path, img_size: int,
               dynamic: bool = False) -> OutputCheck:
    """Export ``model`` to ``path``, checked in onnxruntime before the file appears there.

    The check runs seeded random images (batch 2 with ``dynamic``, else 1) through the
    file's bytes and through ``model``; on a mismatch it raises ExportError and writes nothing.
    """
    images = check_images(model, img_size, 2 if dynamic else 1)
    device = next(model.parameters()).device
    data = export_onnx(model, torch.zeros_like(images[:1], device=device), dynamic)
    check = check_onnx(OrtBackend(ort_session(data)), model, images)
    atomic_write_bytes(path, data)
    return check


def _onnx(model: Darknet, files: tuple[Path, ...], options: ExportOptions) -> Written:
    img_size = options.img_size or model.cfg.net.height
    check = write_onnx(model, files[0], img_size, options.dynamic)
    return Written(files, check.max_abs_diff, check.max_rel_diff)


def _darknet(model: Darknet, files: tuple[Path, ...], options: ExportOptions) -> Written:
    lowered = write_lowered(model, *files, options.img_size)
    return Written(files, lowered.max_abs_diff, lowered=lowered.lowered, layers=lowered.layers)


FORMATS = {f.name: f for f in (
    Format("onnx", (".onnx",), _onnx),
    Format("darknet", (".cfg", ".weights"), _darknet),
)}
