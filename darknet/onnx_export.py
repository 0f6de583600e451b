"""ONNX export of a Darknet model and the onnxruntime session that runs it.

The graph is the BN-folded eval model (``deploy.fold_batchnorm``) with one input ``images``
``[B, 3, H, W]`` (RGB in 0..1) and one output ``output`` ``[B, N, 5 + classes]``, equal to
``torch.cat(model(images), 1)``: every candidate box as ``Darknet.forward`` documents it.
NMS stays outside the graph. The decode builds its grid from the input's shape, so
``dynamic=True`` frees the batch and the spatial axes alike.

The exporter is torch's TorchScript-based one (``dynamo=False``): torch 2.13's default,
the ``torch.export``-based exporter, needs the ``onnxscript`` package, which this project
does not install; the traced graph of this forward (no data-dependent control flow) is the
same. onnxruntime optimises the graph itself when it opens a session (constant folding,
Conv+activation fusion), so the file is not simplified further.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from common.io import atomic_write_bytes

from .check import (
    SIZE_COLUMNS,
    ExportError,
    OutputCheck,
    check_images,
    compare_outputs,
    float64_copy,
)
from .deploy import fold_batchnorm
from .model import Darknet

OPSET = 17
INPUT, OUTPUT = "images", "output"


class _Detections(nn.Module):
    """Every candidate box in one tensor: ``torch.cat(model(x), 1)``."""

    def __init__(self, model: Darknet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.model(x), 1)


def export_onnx(model: Darknet, example: torch.Tensor, dynamic: bool = False,
                opset: int = OPSET) -> bytes:
    """The ONNX file (bytes) of ``model``'s BN-folded eval forward, traced at ``example``."""
    axes = {INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 1: "boxes"}}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy-exporter deprecation notice (see the module docstring for the choice),
        # and its note that a strided Slice is left for onnxruntime to fold.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(_Detections(fold_batchnorm(model)), (example,), buffer, dynamo=False,
                          opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes=axes if dynamic else None)
    return buffer.getvalue()


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


def _name(onnx: bytes | str | Path) -> str:
    return "ONNX model" if isinstance(onnx, bytes) else str(onnx)


def _check_signature(session: ort.InferenceSession, onnx) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 1 \
            or len(outputs[0].shape) != 3:
        raise ExportError(
            f"{_name(onnx)}: expected one [B, 3, H, W] input and one [B, N, 5 + classes] "
            f"output, got inputs {[i.shape for i in inputs]}, outputs {[o.shape for o in outputs]}")


class OrtDetector:
    """An onnxruntime session as an inference form: images -> ``[detections [B, N, 5 + C]]``.

    Like every form in ``darknet.deploy`` it returns a sequence of tensors whose concat along
    dim 1 is ``torch.cat(model(images), 1)``; here that sequence has one element.
    """

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        feed = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return [torch.from_numpy(self.session.run(None, {self.input: feed})[0])]


def check_onnx(session: ort.InferenceSession, model: Darknet,
               images: torch.Tensor) -> OutputCheck:
    """Run ``images`` through the session and through ``model``; ExportError when they differ
    by more than ``TOLERANCE`` of the output scale (``darknet.check``).

    The model runs in float64 (on a copy), so what is measured is the graph's own float32
    error, not that of both.
    """
    with torch.no_grad():
        want = torch.cat(float64_copy(model)(images.cpu().double()), 1).numpy()
    return compare_outputs(want, OrtDetector(session)(images)[0].numpy(), "onnxruntime",
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
    check = check_onnx(ort_session(data), model, images)
    atomic_write_bytes(path, data)
    return check
