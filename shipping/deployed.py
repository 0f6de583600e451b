"""An exported file as the thing that ships: opened in its runtime, sized, and costed.

``main.py eval --model FILE``, ``compare --model NAME=FILE`` and ``detect --onnx FILE`` score
and time the file itself (``.onnx``, FP32 or INT8, or an OpenVINO IR ``.xml`` + ``.bin``),
so an INT8 row's mAP is what that file scores, not its PyTorch source.

``open_deployed`` opens a file (``shipping.backends.open_file``) and settles the input size
it runs at; ``graph_cost`` counts its parameters and GFLOPs from the graph's convolutions,
the way ``darknet.cost`` counts a cfg's: multiply-adds ``C_out * H_out * W_out * C_in * k * k``
per convolution, GFLOPs ``2 * multiply-adds / 1e9``. An exported graph has BatchNorm folded
into its convolutions, so a file counts one bias per output channel where its cfg counts a
BN's scale and shift (two), and no BN multiply-adds: a few tenths of a percent fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

from .backends import Backend, import_openvino, open_file

SUFFIXES = (".onnx", ".xml")


def is_deployed(path: str | Path) -> bool:
    """Whether ``path`` names an exported file (by its suffix) rather than Darknet weights."""
    return Path(path).suffix in SUFFIXES


def deployed_runtime(path: str | Path, runtime: str | None) -> str:
    """The runtime that runs ``path``: an IR always OpenVINO; an ``.onnx`` ``runtime`` when
    that runs files (onnxruntime, openvino), else onnxruntime."""
    if Path(path).suffix == ".xml":
        return "openvino"
    return runtime if runtime in ("onnxruntime", "openvino") else "onnxruntime"


def open_deployed(path: str | Path, runtime: str | None = None, img_size: int | None = None,
                  num_classes: int | None = None,
                  dynamic_size: int | None = None) -> tuple[Backend, int]:
    """The file at ``path`` open in ``deployed_runtime(path, runtime)`` and the square input
    size to run it at: ``img_size``, else the file's fixed input size, else (a file exported
    with dynamic axes) ``dynamic_size``.

    UserError: the file is fixed at another size than ``img_size``, its input is dynamic and
    no ``img_size`` is given, or its outputs do not hold ``num_classes`` classes.
    """
    path = Path(path)
    backend = open_file(path, deployed_runtime(path, runtime))
    if num_classes is not None and backend.columns not in (None, 5 + num_classes):
        raise UserError(f"{path}: output has {backend.columns} columns per box, "
                        f"{num_classes} classes need {5 + num_classes}")
    static = backend.input_size
    if static is not None and img_size not in (None, static):
        raise UserError(f"{path}: its input is fixed at {static}x{static}, got image size "
                        f"{img_size} (export with --dynamic to choose)")
    size = img_size or static or dynamic_size
    if size is None:
        raise UserError(f"{path}: its input size is dynamic; give --img-size")
    if backend.num_classes is None:
        raise UserError(f"{path}: its output's class count is not fixed in the graph")
    return backend, size


def file_bytes(path: str | Path) -> int:
    """What ships: the ``.onnx``, or an IR's ``.xml`` and ``.bin`` together."""
    path = Path(path)
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files)


@dataclass(frozen=True)
class GraphCost:
    params: int  # convolution weights and biases
    macs: int  # convolution multiply-adds at batch 1

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9


def graph_cost(path: str | Path, img_size: int) -> GraphCost:
    """Parameters and multiply-adds of the convolutions of the exported file at ``path``,
    at batch 1 and a square ``img_size`` input (``.onnx`` read with ``onnx``, an IR with
    OpenVINO)."""
    path = Path(path)
    convs = _ir_convs(path, img_size) if path.suffix == ".xml" else _onnx_convs(path, img_size)
    params = macs = 0
    for weight, out, bias in convs:
        params += math.prod(weight) + bias
        macs += math.prod(weight) * math.prod(out[2:])
    return GraphCost(params, macs)


Conv = tuple[tuple[int, ...], tuple[int, ...], int]  # weight shape, output shape, bias count


def _onnx_convs(path: Path, img_size: int) -> list[Conv]:
    """Every Conv of the graph, with its input fixed at [1, C, S, S] and shapes inferred (a
    quantized weight's shape is its DequantizeLinear output's)."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, None, img_size, img_size), strict=True):
        if value is not None:
            dim.Clear()
            dim.dim_value = value
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for info in (*model.graph.value_info, *model.graph.output):
        shapes[info.name] = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
    return [(shapes[node.input[1]], shapes[node.output[0]],
             math.prod(shapes[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0)
            for node in model.graph.node if node.op_type == "Conv"]


def _ir_convs(path: Path, img_size: int) -> list[Conv]:
    """Every Convolution of the IR, reshaped to [1, C, S, S]. OpenVINO keeps a conv's bias
    as the Add after it; every exported conv has one (BN folded, or the heads' own)."""
    core = import_openvino().Core()
    model = core.read_model(str(path))
    channels = model.inputs[0].get_partial_shape()[1].get_length()
    model.reshape([1, channels, img_size, img_size])
    convs = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Convolution":
            weight = tuple(op.input(1).get_shape())
            convs.append((weight, tuple(op.output(0).get_shape()), weight[0]))
    return convs
