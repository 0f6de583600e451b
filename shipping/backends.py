"""One way to run a model in any runtime: a backend maps images to decoded detections.

Every backend is called the same way: ``backend(images)`` with ``images [B, 3, H, W]`` (RGB
in 0..1, letterboxed as ``main.py eval`` makes them) returns ``[B, N, 5 + classes]``, every
candidate box as ``Darknet.forward`` documents it (``torch.cat(model(images), 1)`` of the
eval model), on the CPU, NMS not applied. Evaluation, detection and timing take any of them.

Two ways in:

- ``model_backend(model, runtime, example)``: a ``Darknet`` in one of ``RUNTIMES``: ``eager``
  (as is), ``folded`` (BN folded, ``shipping.fold``), ``torchscript`` (folded, traced at
  ``example``'s shape and frozen: no Python in the forward) or ``onnxruntime`` (folded,
  exported at ``example``'s shape, in a session without spin-waiting).
- ``open_file(path)``: an exported file (``.onnx``), in the runtime that ships it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from darknet.model import Darknet

from .check import ExportError
from .fold import fold_batchnorm
from .onnx_export import export_onnx

RUNTIMES = ("eager", "folded", "torchscript", "onnxruntime")


class Backend:
    """``backend(images) -> [B, N, 5 + C]``; ``input_size`` is the square input a file was
    exported at (None: any, or a PyTorch model), ``columns`` its ``5 + C`` (None: unknown)."""

    name = "backend"
    input_size: int | None = None
    columns: int | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchBackend(Backend):
    """A PyTorch module whose eval outputs are the per-head detections (``Darknet`` or its
    traced form), joined into one tensor."""

    def __init__(self, module: nn.Module | torch.jit.ScriptModule, name: str):
        self.module, self.name = module, name

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
        return TorchBackend(model.eval(), runtime)
    if runtime == "folded":
        return TorchBackend(fold_batchnorm(model), runtime)
    if runtime == "torchscript":
        return TorchBackend(_torchscript(model, example), runtime)
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


class OrtBackend(Backend):
    """An onnxruntime session (``ort_session``)."""

    name = "onnxruntime"

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.input = session.get_inputs()[0].name
        _, _, height, width = session.get_inputs()[0].shape
        self.input_size = _static_size(height, width)
        columns = session.get_outputs()[0].shape[-1]
        self.columns = columns if isinstance(columns, int) else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input: feed})[0])


def open_file(path: str | Path, threads: int | None = None) -> Backend:
    """The exported file at ``path`` ready to run, ``threads`` intra-op threads (default:
    torch's); ExportError when no runtime here reads it."""
    path = Path(path)
    if path.suffix == ".onnx":
        return OrtBackend(ort_session(path, threads))
    raise ExportError(f"{path}: not an exported model (expected a .onnx file)")
