"""Every file format ``main.py export`` writes, from one table.

A ``Format`` names its files (suffixes after the cfg's stem) and a writer that checks the
file against the PyTorch model before it appears: an exported form that does not compute
what the model does is an ExportError (``shipping.check``), and nothing is written.

- ``onnx``: ``<stem>.onnx`` (``shipping.onnx_export``), checked in onnxruntime.
- ``openvino``: ``<stem>.xml`` + ``.bin``, OpenVINO IR of that ONNX graph (FP32 weights kept
  FP32), checked in OpenVINO.
- ``darknet``: ``<stem>.cfg`` + ``.weights`` with the project-only sections lowered to plain
  Darknet ones (``shipping.lower``), checked in PyTorch.

With an ``Int8Plan`` the ONNX graph is quantized (``shipping.quantize``) and the file's own
mAP is measured in the runtime that ships it, beside the FP32 graph's in the same runtime;
a drop above the plan's limit is an ExportError and nothing is written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from common.io import write_together
from darknet.model import Darknet
from evaluation import MapResult

from .backends import (
    Backend,
    OpenVinoBackend,
    OrtBackend,
    import_openvino,
    openvino_model,
    ort_session,
)
from .check import (
    SIZE_COLUMNS,
    ExportError,
    OutputCheck,
    check_images,
    compare_outputs,
    float64_copy,
)
from .lower import write_lowered
from .onnx_export import export_onnx
from .quantize import QuantSettings, quantize_onnx
from .timing import Timing, measure_latency


@dataclass(frozen=True)
class Int8Plan:
    """How to quantize, and what the INT8 file must score to be written."""

    images: Sequence[torch.Tensor]  # calibration images, each [1, 3, S, S] at the export's S
    accuracy: Callable[[Backend], MapResult]  # the val set's mAP of a backend
    max_map_drop: float = 0.01  # mAP@.5:.95 the INT8 file may lose against FP32
    settings: QuantSettings = QuantSettings()
    timing: Timing = Timing(runs=20, warmup=3)


@dataclass(frozen=True)
class Int8Report:
    runtime: str  # where both forms were measured: the runtime that ships the file
    fp32: MapResult
    int8: MapResult
    fp32_ms: float  # batch-1 forward, same runtime, timed in turns
    int8_ms: float

    @property
    def map_drop(self) -> float:
        return self.fp32.map - self.int8.map


@dataclass(frozen=True)
class ExportOptions:
    img_size: int | None = None  # square input the graph is traced and checked at (None: cfg's)
    dynamic: bool = False  # onnx: dynamic batch, height and width axes
    int8: Int8Plan | None = None  # onnx: quantize, gated by its measured mAP


@dataclass(frozen=True)
class Written:
    files: tuple[Path, ...]
    max_abs_diff: float  # the FP32 form's outputs against the PyTorch model's
    max_rel_diff: float | None = None  # onnx: the same, relative to the output scale
    lowered: bool = True  # darknet: False when the cfg had nothing to lower
    layers: int = 0  # darknet: layers in the written cfg
    int8: Int8Report | None = None


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    write: Callable[[Darknet, tuple[Path, ...], ExportOptions], Written]

    def targets(self, out_dir: str | Path, stem: str) -> tuple[Path, ...]:
        return tuple(Path(out_dir) / f"{stem}{suffix}" for suffix in self.suffixes)


def check_backend(backend: Backend, model: Darknet, images: torch.Tensor) -> OutputCheck:
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
               dynamic: bool = False) -> Written:
    """Export ``model`` to ``path`` (FP32), checked in onnxruntime before the file appears.

    The check runs seeded random images (batch 2 with ``dynamic``, else 1) through the
    file's bytes and through ``model``; on a mismatch it raises ExportError and writes nothing.
    """
    return FORMATS["onnx"].write(model, (Path(path),), ExportOptions(img_size, dynamic))


def gate_int8(fp32: Backend, int8: Backend, plan: Int8Plan) -> Int8Report:
    """Both forms' mAP (``plan.accuracy``) and batch-1 latency (on the first calibration
    image), in their one runtime; ExportError when INT8 loses more than
    ``plan.max_map_drop`` of mAP@.5:.95."""
    maps = [plan.accuracy(backend) for backend in (fp32, int8)]
    image = plan.images[0]
    (fp32_ms, _), (int8_ms, _) = measure_latency([fp32, int8], image, plan.timing, nms=False)
    report = Int8Report(int8.name, *maps, fp32_ms, int8_ms)
    if not report.map_drop <= plan.max_map_drop:
        raise ExportError(
            f"INT8 mAP@.5:.95 {report.int8.map:.4f} (mAP@.5 {report.int8.map50:.4f}) is "
            f"{report.map_drop:.4f} below FP32 {report.fp32.map:.4f} (mAP@.5 "
            f"{report.fp32.map50:.4f}) in {int8.name}, more than the allowed "
            f"{plan.max_map_drop:g}; no file written")
    return report


@dataclass(frozen=True)
class _Runtime:
    """How an ONNX graph becomes a format's files (bytes, in its suffixes' order), and how
    those bytes are opened to be checked and measured before they are written."""

    files: Callable[[bytes], tuple[bytes, ...]]
    open: Callable[[tuple[bytes, ...]], Backend]


def _ir_files(onnx: bytes) -> tuple[bytes, bytes]:
    """OpenVINO IR (``.xml``, ``.bin``) of an ONNX graph, float weights kept FP32."""
    ov = import_openvino()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(openvino_model(onnx), xml, compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


ONNXRUNTIME = _Runtime(lambda onnx: (onnx,), lambda files: OrtBackend(ort_session(files[0])))
OPENVINO = _Runtime(_ir_files, lambda files: OpenVinoBackend(openvino_model(*files)))


def _graph_writer(runtime: _Runtime):
    """The writer of a format made from the ONNX graph, run and checked in ``runtime``."""

    def write(model: Darknet, paths: tuple[Path, ...], options: ExportOptions) -> Written:
        img_size = options.img_size or model.cfg.net.height
        images = check_images(model, img_size, 2 if options.dynamic else 1)
        device = next(model.parameters()).device
        onnx = export_onnx(model, torch.zeros_like(images[:1], device=device), options.dynamic)
        files = runtime.files(onnx)
        fp32 = runtime.open(files)
        check = check_backend(fp32, model, images)
        report = None
        if options.int8 is not None:
            files = runtime.files(quantize_onnx(onnx, options.int8.images,
                                                options.int8.settings))
            report = gate_int8(fp32, runtime.open(files), options.int8)
        # the first file (the one a user opens) is renamed into place last
        write_together([(p, _writer(data)) for p, data in zip(paths, files, strict=True)][::-1])
        return Written(paths, check.max_abs_diff, check.max_rel_diff, int8=report)

    return write


def _writer(data: bytes):
    return lambda f: f.write(data)


def _darknet(model: Darknet, files: tuple[Path, ...], options: ExportOptions) -> Written:
    lowered = write_lowered(model, *files, options.img_size)
    return Written(files, lowered.max_abs_diff, lowered=lowered.lowered, layers=lowered.layers)


FORMATS = {f.name: f for f in (
    Format("onnx", (".onnx",), _graph_writer(ONNXRUNTIME)),
    Format("openvino", (".xml", ".bin"), _graph_writer(OPENVINO)),
    Format("darknet", (".cfg", ".weights"), _darknet),
)}
