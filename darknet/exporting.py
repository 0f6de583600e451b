"""``export(model, path, format=...)``: a model shipped as files other tools run.

The one call behind ``main.py export`` and scripts; the formats themselves live in
``darknet.onnx_export`` (ONNX, checked in onnxruntime) and ``darknet.lower`` (plain Darknet
sections). Each is checked against the PyTorch model before any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

from .model import Darknet

FORMATS = ("onnx", "darknet")


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote, and how far the written model is from ``model``.

    ``max_abs_diff``: the largest output difference of the check (0 for a cfg copied
    unchanged); ``max_rel_diff``: the same per output scale (ONNX only, else None);
    ``layers``: the written cfg's layer count and ``lowered`` whether any section was
    rewritten (Darknet only, else None).
    """

    files: tuple[Path, ...]
    max_abs_diff: float
    max_rel_diff: float | None = None
    layers: int | None = None
    lowered: bool | None = None


def export_paths(path: str | Path, format: str) -> tuple[Path, ...]:
    """The files ``export(model, path, format)`` writes: ``path`` with the format's suffixes
    (``x.onnx``; ``x.cfg`` + ``x.weights``)."""
    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    suffixes = (".onnx",) if format == "onnx" else (".cfg", ".weights")
    path = Path(path)
    return tuple(path.with_name(path.stem + suffix) if path.suffix in (*suffixes, "")
                 else Path(f"{path}{suffix}") for suffix in suffixes)


def export(model: Darknet, path: str | Path, format: str = "onnx", img_size: int | None = None,
           dynamic: bool = False) -> Exported:
    """Write ``model`` (in eval mode) as ``format`` at ``path`` (see :func:`export_paths`).

    ``onnx``: opset ``darknet.onnx_export.OPSET``, traced and checked at ``img_size``
    (default: the cfg's height), ``dynamic`` batch, height and width axes when asked.
    ``darknet``: ``[res2net]``/``[triangle]`` lowered to standard sections, the weights'
    floats unchanged (``img_size``: the size the check runs at). A failed check raises and
    writes nothing.
    """
    files = export_paths(path, format)
    model.eval()
    if format == "onnx":
        from .onnx_export import write_onnx

        check = write_onnx(model, files[0], img_size or model.cfg.net.height, dynamic)
        return Exported(files, check.max_abs_diff, check.max_rel_diff)
    if dynamic:
        raise UserError("dynamic axes apply to the onnx format only")
    from .lower import write_lowered

    written = write_lowered(model, *files, img_size)
    return Exported(files, written.max_abs_diff, layers=written.layers,
                    lowered=written.lowered)
