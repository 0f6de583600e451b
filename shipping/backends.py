"""One way to run a model in any runtime: a backend maps images to decoded detections.

Every backend is called the same way: ``backend(images)`` with ``images [B, 3, H, W]`` (RGB
in 0..1, letterboxed as ``main.py eval`` makes them) returns ``[B, N, 5 + classes]``, every
candidate box as ``Darknet.forward`` documents it (``torch.cat(model(images), 1)`` of the
eval model), on the CPU, NMS not applied, and ``num_classes`` is set: a backend is a
predictor ``engine.evaluator`` scores, and detection and timing take any of them.

Two ways in:

- ``model_backend(model, runtime, example)``: a ``Darknet`` in one of ``RUNTIMES``: ``eager``
  (as is), ``folded`` (BN folded, ``shipping.fold``), ``torchscript`` (folded, traced at
  ``example``'s shape and frozen: no Python in the forward), ``onnxruntime`` (folded,
  exported at ``example``'s shape, in a session without spin-waiting) or ``openvino`` (the
  same ONNX graph, compiled by OpenVINO for the CPU).
- ``open_file(path, runtime)``: an exported file: ``.onnx`` in onnxruntime (default) or
  OpenVINO, an OpenVINO IR ``.xml`` (its ``.bin`` beside it) in OpenVINO.

OpenVINO is optional (``requirements-openvino.txt``); without it, asking for it is one
UserError saying what to install. Its CPU plugin runs with ``INFERENCE_NUM_THREADS`` set to
the thread count (default: torch's, as onnxruntime's sessions here) and
``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 units OpenVINO otherwise computes float
layers in bf16, and an FP32 file would no longer compute what it was checked to.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from common.errors import UserError
from darknet.model import Darknet

from .check import ExportError
from .fold import fold_batchnorm
from .onnx_export import export_onnx

RUNTIMES = ("eager", "folded", "torchscript", "onnxruntime", "openvino")
FILE_RUNTIMES = ("onnxruntime", "openvino")  # what runs an exported .onnx


class Backend:
    """``backend(images) -> [B, N, 5 + C]``; ``input_size`` is the square input a file was
    exported at (None: any, or a PyTorch model), ``columns`` its ``5 + C`` (None: unknown)."""

    name = "backend"
    input_size: int | None = None
    columns: int | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def num_classes(self) -> int | None:
        return None if self.columns is None else self.columns - 5


class TorchBackend(Backend):
    """A PyTorch module whose eval outputs are the per-head detections (``Darknet`` or its
    traced form), joined into one tensor."""

    def __init__(self, module: nn.Module | torch.jit.ScriptModule, name: str,
                 num_classes: int | None = None):
        self.module, self.name = module, name
        self.columns = None if num_classes is None else 5 + num_classes

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat(list(self.module(images)), 1)


class _Outputs(nn.Module):
    """The model's eval outputs as a tuple (what TorchScript tracing wants)."""

    def __init__(self, model: Darknet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x))


def _torchscript(model: Darknet, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it still runs, and it is the one form
        # here whose forward has no Python in it.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        return torch.jit.freeze(torch.jit.trace(_Outputs(fold_batchnorm(model)).eval(), example))


def model_backend(model: Darknet, runtime: str, example: torch.Tensor) -> Backend:
    """``model`` in ``runtime`` (one of ``RUNTIMES``, see the module); traced forms fix their
    decode grid at ``example``'s size."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "eager":
        return TorchBackend(model.eval(), runtime, model.num_classes)
    if runtime == "folded":
        return TorchBackend(fold_batchnorm(model), runtime, model.num_classes)
    if runtime == "torchscript":
        return TorchBackend(_torchscript(model, example), runtime, model.num_classes)
    if runtime == "openvino":
        return OpenVinoBackend(openvino_model(export_onnx(model, example)))
    return OrtBackend(ort_session(export_onnx(model, example)))


def ort_session(onnx: bytes | str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with ``threads`` (default: torch's) intra-op threads and no spin-waiting.

    onnxruntime's idle worker threads spin by default; in a process that also runs torch (or
    other sessions) that spinning takes the cores the next forward needs, so every timing
    and every run in this project opens its sessions here.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    source = str(onnx) if isinstance(onnx, Path) else onnx
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except _LOAD_ERRORS as e:
        raise ExportError(f"{_name(onnx)}: onnxruntime cannot load it "
                          f"({str(e).splitlines()[0]})") from None
    _check_signature(session, onnx)
    return session


_LOAD_ERRORS = tuple(getattr(ort.capi.onnxruntime_pybind11_state, name) for name in (
    "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented",
    "RuntimeException"))


def _name(source: bytes | str | Path) -> str:
    return "ONNX model" if isinstance(source, bytes) else str(source)


def _check_signature(session: ort.InferenceSession, onnx) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 1 \
            or len(outputs[0].shape) != 3:
        raise ExportError(
            f"{_name(onnx)}: expected one [B, 3, H, W] input and one [B, N, 5 + classes] "
            f"output, got inputs {[i.shape for i in inputs]}, outputs {[o.shape for o in outputs]}")


def _static_size(height, width) -> int | None:
    """A fixed square input's side; None for symbolic (dynamic) axes."""
    return height if isinstance(height, int) and height == width else None


def _in_batches(run, images: torch.Tensor, batch: int | None) -> torch.Tensor:
    """``run`` over ``images`` in slices of a file's fixed ``batch`` (None: all at once)."""
    feed = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
    if batch is None or batch == len(feed):
        return torch.from_numpy(run(feed))
    return torch.cat([torch.from_numpy(run(feed[i:i + batch]))
                      for i in range(0, len(feed), batch)])


class OrtBackend(Backend):
    """An onnxruntime session (``ort_session``). A file exported with a fixed batch runs a
    larger batch in slices of it (a last partial slice is refused by onnxruntime)."""

    name = "onnxruntime"

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.input = session.get_inputs()[0].name
        batch, _, height, width = session.get_inputs()[0].shape
        self.batch = batch if isinstance(batch, int) else None
        self.input_size = _static_size(height, width)
        columns = session.get_outputs()[0].shape[-1]
        self.columns = columns if isinstance(columns, int) else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return _in_batches(lambda x: self.session.run(None, {self.input: x})[0], images,
                           self.batch)


def import_openvino() -> ModuleType:
    """The ``openvino`` module; UserError saying what to install when it is missing."""
    try:
        import openvino
    except ImportError:
        raise UserError("OpenVINO is not installed: pip install -r requirements-openvino.txt "
                        "(or pip install openvino)") from None
    return openvino


def openvino_model(source: bytes | str | Path, weights: bytes | None = None):
    """An ``openvino.Model`` read from ONNX bytes or file, or IR ``.xml`` bytes + ``.bin``
    bytes, or an IR ``.xml`` path; ExportError when OpenVINO cannot read it."""
    core = import_openvino().Core()
    try:
        if weights is not None:
            return core.read_model(source, weights)
        return core.read_model(source if isinstance(source, bytes) else str(source))
    except RuntimeError as e:
        raise ExportError(f"{_name(source)}: OpenVINO cannot read it "
                          f"({str(e).strip().splitlines()[0]})") from None


class OpenVinoBackend(Backend):
    """An OpenVINO model compiled for the CPU (see the module for its settings). A model with
    a fixed batch runs a larger one in slices of it, as ``OrtBackend`` does."""

    name = "openvino"

    def __init__(self, model, threads: int | None = None):
        ov = import_openvino()
        if len(model.inputs) != 1 or len(model.outputs) != 1 \
                or model.inputs[0].get_partial_shape().rank.get_length() != 4:
            raise ExportError("OpenVINO model: expected one [B, 3, H, W] input and one "
                              "[B, N, 5 + classes] output")
        batch, _, height, width = (_dim(d) for d in model.inputs[0].get_partial_shape())
        self.batch, self.input_size = batch, _static_size(height, width)
        self.columns = _dim(model.outputs[0].get_partial_shape()[-1])
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
                  "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        def run(x: np.ndarray) -> np.ndarray:
            return np.array(self.request.infer({0: x})[0], copy=True)  # its buffer is reused

        return _in_batches(run, images, self.batch)


def _dim(dim) -> int | None:
    return dim.get_length() if dim.is_static else None


def open_file(path: str | Path, runtime: str | None = None,
              threads: int | None = None) -> Backend:
    """The exported file at ``path`` ready to run with ``threads`` threads (default:
    torch's): ``.onnx`` in ``runtime`` (``FILE_RUNTIMES``, default onnxruntime), ``.xml``
    (OpenVINO IR) in OpenVINO; ExportError when no runtime here reads it."""
    path = Path(path)
    if path.suffix == ".xml" and runtime in (None, "openvino"):
        if not path.with_suffix(".bin").is_file():
            raise ExportError(f"{path}: its weights {path.with_suffix('.bin').name} are not "
                              "beside it")
        return OpenVinoBackend(openvino_model(path), threads)
    if path.suffix == ".onnx" and runtime in (None, "onnxruntime"):
        return OrtBackend(ort_session(path, threads))
    if path.suffix == ".onnx" and runtime == "openvino":
        if not path.is_file():
            raise ExportError(f"{path}: no such file")
        return OpenVinoBackend(openvino_model(path), threads)
    raise ExportError(f"{path}: not an exported model that {runtime or 'a runtime here'} "
                      "runs (expected .onnx, or an OpenVINO .xml)")
