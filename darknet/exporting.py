"""``export(model, path, format=...)``: a model shipped as files other tools run.

The one call behind ``main.py export`` and scripts. The formats themselves live in
``shipping.formats`` (one table: ONNX checked in onnxruntime, OpenVINO IR checked in
OpenVINO, plain Darknet sections); each file is checked against the PyTorch model before it
is written. ``shipping`` is imported inside the functions: it builds on this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UserError

from .model import Darknet

if TYPE_CHECKING:
    from shipping.formats import Int8Plan, Int8Report

FORMATS = ("onnx", "openvino", "darknet")  # shipping.formats.FORMATS (a test keeps them equal)


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote, and how far the written model is from ``model``.

    ``max_abs_diff``: the largest output difference of the check (0 for a cfg copied
    unchanged); ``max_rel_diff``: the same per output scale (ONNX and OpenVINO, else None);
    ``layers``: the written cfg's layer count and ``lowered`` whether any section was
    rewritten (Darknet only, else None); ``int8``: the INT8 file's and the FP32 graph's mAP
    and latency, measured in the runtime that ships the file (with ``int8=``, else None).
    """

    files: tuple[Path, ...]
    max_abs_diff: float
    max_rel_diff: float | None = None
    layers: int | None = None
    lowered: bool | None = None
    int8: Int8Report | None = None


def export_paths(path: str | Path, format: str) -> tuple[Path, ...]:
    """The files ``export(model, path, format)`` writes: ``path`` with the format's suffixes
    (``x.onnx``; ``x.xml`` + ``x.bin``; ``x.cfg`` + ``x.weights``)."""
    from shipping.formats import FORMATS as TABLE

    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    suffixes = TABLE[format].suffixes
    path = Path(path)
    return tuple(path.with_name(path.stem + suffix) if path.suffix in (*suffixes, "")
                 else Path(f"{path}{suffix}") for suffix in suffixes)


def export(model: Darknet, path: str | Path, format: str = "onnx", img_size: int | None = None,
           dynamic: bool = False, int8: Int8Plan | None = None) -> Exported:
    """Write ``model`` (in eval mode) as ``format`` at ``path`` (see :func:`export_paths`).

    ``onnx`` / ``openvino``: opset ``shipping.onnx_export.OPSET``, traced and checked at
    ``img_size`` (default: the cfg's height), ``dynamic`` batch, height and width axes when
    asked; ``int8`` (a ``shipping.formats.Int8Plan``) quantizes the graph and refuses a file
    that loses more mAP than the plan allows. ``darknet``: ``[res2net]``/``[triangle]``
    lowered to standard sections, the weights' floats unchanged (``img_size``: the size the
    check runs at). A failed check raises and writes nothing.
    """
    from shipping.formats import FORMATS as TABLE
    from shipping.formats import ExportOptions

    files = export_paths(path, format)
    model.eval()
    if format == "darknet" and (dynamic or int8 is not None):
        raise UserError("dynamic axes and int8 apply to the onnx and openvino formats only")
    written = TABLE[format].write(model, files, ExportOptions(img_size, dynamic, int8))
    if format == "darknet":
        return Exported(files, written.max_abs_diff, layers=written.layers,
                        lowered=written.lowered)
    return Exported(files, written.max_abs_diff, written.max_rel_diff, int8=written.int8)
