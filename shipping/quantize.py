"""INT8 ONNX: onnxruntime static quantization of an exported FP32 graph, in QDQ form.

What is quantized, and why:

- **Convolutions** (``QuantSettings.ops``), weights int8 per output channel, activations
  uint8 with ranges calibrated on training images. onnxruntime fuses each
  ``DequantizeLinear -> Conv -> QuantizeLinear`` into an integer ``QLinearConv``; the
  LeakyReLU, residual adds, route concats, splits and upsamples between convs stay float.
  ``ops=BODY_OPS`` quantizes those too, so a tensor stays 8-bit from one conv to the next:
  on res2net-yolov3 @416 the slim INT8 model ran at 0.23 instead of 0.27 of the dense FP32
  latency in onnxruntime (OpenVINO fuses them itself either way), but the demo's slim
  model lost 0.0043 mAP@.5:.95 instead of 0.0025 (``docs/shipping.md``).
- **The decode stays float**: every node after the heads' last convs (sigmoid, exp, grid
  offsets, anchor scaling, the concat of boxes and probabilities). Under one 8-bit scale the
  box coordinates (hundreds of pixels) would leave the class probabilities (0..1) a step or
  two of resolution, and the scores would collapse. ``decode_nodes`` finds that part of the
  graph, so tests can check it.
- The heads' last convs themselves are ``QuantSettings.heads``: quantized, their outputs
  (the raw logits the decode reads) are 8-bit too.

``QuantSettings``' defaults are the ones measured best on the demo (``docs/shipping.md``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from .onnx_export import INPUT

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
BODY_OPS = ("Conv", "LeakyRelu", "Add", "Concat", "Split", "Resize")
OP_SETS = {"conv": ("Conv",), "body": BODY_OPS}  # main.py export --int8-ops
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class QuantSettings:
    """Chosen on the demo pipeline's models with ``bench/bench_quant.py`` (300 calibration
    images, mAP@.5:.95 on the val split in onnxruntime; ``docs/shipping.md`` has the
    table). The fine-tuned slim model (FP32 0.5999) is the sensitive one: as here 0.5974;
    percentile 99.99 0.5930, 99.999 0.5959; 7-bit weights 0.5943; MinMax 0.5853, with 7-bit
    weights 0.5804; entropy 0.5969; symmetric activations 0.5937; heads quantized 0.5745.
    The dense model (FP32 0.6786) moves within 0.002 under all but the last (0.6382)."""

    ops: tuple[str, ...] = OP_SETS["conv"]  # the op types quantized (BODY_OPS: all between convs)
    calibration: str = "percentile"  # one of CALIBRATION_METHODS
    percentile: float = 99.995  # percentile calibration: the |activation| range kept
    symmetric_activations: bool = False  # uint8 activations with a zero point at 128
    reduce_range: bool = False  # 7-bit weights (for u8s8 kernels that saturate)
    heads: bool = False  # quantize the heads' last convs too (their logits become 8-bit)


def head_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes whose outputs reach the graph's output without another Conv:
    the heads' last convs, found from the graph alone (no layer numbers)."""
    return sorted(n.name for n in _upstream(model, stop_at={"Conv"}) if n.op_type == "Conv")


def decode_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every node downstream of the heads' last convs (the decode, and anything the
    quantizer put on its input): what must compute in float."""
    heads = set(head_convs(model))
    produced = {out for n in model.graph.node if n.name in heads for out in n.output}
    found = []
    for node in model.graph.node:  # ONNX nodes are topologically sorted
        if node.name not in heads and produced.intersection(node.input):
            found.append(node)
            produced.update(node.output)
    return found


def _upstream(model: onnx.ModelProto, stop_at: set[str]) -> list[onnx.NodeProto]:
    """Nodes reached walking back from the graph outputs, not walking past ``stop_at`` ops."""
    producer = {out: n for n in model.graph.node for out in n.output}
    todo = [o.name for o in model.graph.output]
    seen: dict[str, onnx.NodeProto] = {}
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen[node.name] = node
        if node.op_type not in stop_at:
            todo.extend(node.input)
    return list(seen.values())


class _Images:
    """onnxruntime's calibration reader over ``images`` (each ``[1, 3, S, S]``), read in
    the slices onnxruntime asks for with ``set_range`` (its ``CalibStridedMinMax``)."""

    def __init__(self, images: Sequence[torch.Tensor]):
        self.images = images
        self._iter: Iterator[torch.Tensor] = iter(images)

    def __len__(self) -> int:
        return len(self.images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self.images[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._iter, None)
        return None if image is None else {INPUT: image.numpy().astype(np.float32)}


CALIBRATION_SLICE = 8  # images whose activations calibration holds at once, at most


def _slice(count: int) -> int:
    """The largest divisor of ``count`` up to ``CALIBRATION_SLICE`` (onnxruntime needs
    equal slices): the histogram calibrators keep every activation of a slice in memory,
    which for 300 images of a 416 px model would be tens of GB."""
    return max(k for k in range(1, min(count, CALIBRATION_SLICE) + 1) if count % k == 0)


def quantize_onnx(fp32: bytes, images: Sequence[torch.Tensor],
                  settings: QuantSettings = QuantSettings()) -> bytes:
    """The QDQ INT8 form of the FP32 ONNX file ``fp32``, activation ranges calibrated on
    ``images`` (each ``[1, 3, S, S]``, as the model's input)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if settings.calibration not in CALIBRATION_METHODS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, "
                         f"got {settings.calibration!r}")
    model = onnx.load_from_string(fp32)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            model, out, _Images(images), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(settings.ops), per_channel=True,
            reduce_range=settings.reduce_range, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[n.name for n in decode_nodes(model)]
            + ([] if settings.heads else head_convs(model)),
            calibrate_method=method,
            # calibrated slice by slice, ranges (MinMax) or histograms merged between
            # slices (not CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the batches
            # it flushes)
            extra_options={"ActivationSymmetric": settings.symmetric_activations,
                           "CalibStridedMinMax": _slice(len(images)),
                           "CalibPercentile": settings.percentile},
            calibration_cache_path=None)
        return out.read_bytes()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizer prints its progress and logs advice on the root logger;
    library code here is silent."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(disabled)


def calibration_images(paths: Sequence[Path], count: int, img_size: int) -> list[torch.Tensor]:
    """``count`` of ``paths`` spread evenly over them (a data set's order often follows its
    sources), each letterboxed to ``[1, 3, S, S]`` as the val loader makes its input;
    UserError when there are fewer, or one cannot be read."""
    from common.errors import UserError
    from detection import open_image
    from yolodata import letterbox_image

    if count < 1:
        raise UserError(f"--calib-images must be >= 1, got {count}")
    if len(paths) < count:
        raise UserError(f"calibration needs {count} training images, the data set has "
                        f"{len(paths)} (lower --calib-images)")
    picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [letterbox_image(open_image(paths[i]), img_size)[0].unsqueeze(0) for i in picks]
