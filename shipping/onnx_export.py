"""The ONNX graph of a Darknet model.

The graph is the BN-folded eval model (``shipping.fold``) with one input ``images``
``[B, 3, H, W]`` (RGB in 0..1) and one output ``output`` ``[B, N, 5 + classes]``, equal to
``torch.cat(model(images), 1)``: every candidate box as ``Darknet.forward`` documents it.
NMS stays outside the graph. The decode builds its grid from the input's shape, so
``dynamic=True`` frees the batch and the spatial axes alike.

The exporter is torch's TorchScript-based one (``dynamo=False``): torch 2.13's default,
the ``torch.export``-based exporter, needs the ``onnxscript`` package, which this project
does not install; the traced graph of this forward (no data-dependent control flow) is the
same. onnxruntime optimises the graph itself when it opens a session (constant folding,
Conv+activation fusion), so the file is not simplified further.

Every ONNX graph this project writes (the models here, the single-conv graphs that
``prune.op_timing`` times) uses ``OPSET``.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from darknet.model import Darknet

from .fold import fold_batchnorm

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
