"""Single-conv models timed in onnxruntime: the numbers behind ``prune.latency``'s table.

Each :class:`~prune.latency.ConvShape` becomes a one-node ONNX graph (a Conv with bias, the BN
folded as deployed, and its activation as the exporter writes it: LeakyRelu, Relu, Sigmoid,
x*sigmoid(x), x*tanh(softplus(x))), opened with the project's one session function
(``shipping.backends.ort_session``: no spin-waiting, the given threads; the output reshaped
to the [B, N, C] form it expects) and timed on its own (``shipping.timing.median_ms``:
one warm-up run, then at least 5 runs, more for fast ones, up to about 50 ms in all).
Shapes are measured one after another, each session created, timed and dropped before the
next, so no other work runs inside a timing. The *overhead* is the same measurement of a
1-channel 1x1 conv on a 1x1 input: what a session call costs around any op.

The fingerprint names what the numbers depend on: CPU model and instruction set (AVX-512 or
AVX2 changes onnxruntime's channel blocking), cores, onnxruntime version, threads.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from functools import partial

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from shipping.onnx_export import OPSET
from shipping.timing import median_ms

from .latency import ConvShape, LatencyContext, LatencyTable, Measurer

RUNTIME = "onnxruntime"


def _activation(name: str, x: str) -> list[onnx.NodeProto]:
    """Nodes computing ``activation(x)`` into ``"a"``."""
    if name == "linear":
        return [helper.make_node("Identity", [x], ["a"])]
    if name == "leaky":
        return [helper.make_node("LeakyRelu", [x], ["a"], alpha=0.1)]
    if name == "relu":
        return [helper.make_node("Relu", [x], ["a"])]
    if name == "logistic":
        return [helper.make_node("Sigmoid", [x], ["a"])]
    if name == "swish":
        return [helper.make_node("Sigmoid", [x], ["s"]), helper.make_node("Mul", [x, "s"], ["a"])]
    if name == "mish":
        return [helper.make_node("Softplus", [x], ["sp"]), helper.make_node("Tanh", ["sp"], ["t"]),
                helper.make_node("Mul", [x, "t"], ["a"])]
    raise ValueError(f"no ONNX form for activation {name!r}")


def conv_model(shape: ConvShape, seed: int = 0) -> bytes:
    """The one-conv ONNX graph of ``shape`` (random weights; the time does not depend on them)."""
    rng = np.random.default_rng(seed)
    k, p, s = shape.kernel, shape.padding, shape.stride
    weight = rng.standard_normal((shape.c_out, shape.c_in, k, k), dtype=np.float32) * 0.01
    bias = rng.standard_normal(shape.c_out, dtype=np.float32) * 0.01
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k],
                            strides=[s, s], pads=[p, p, p, p])
    out_h, out_w = ((n + 2 * p - k) // s + 1 for n in (shape.h, shape.w))
    # The session function opens detectors ([B, N, 5 + C] out): the output is reshaped to
    # [1, C, H * W], which onnxruntime does in place (the overhead model pays it too).
    flat = np.array([1, shape.c_out, out_h * out_w], dtype=np.int64)
    graph = helper.make_graph(
        [conv, *_activation(shape.activation, "c"), helper.make_node("Reshape", ["a", "f"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shape.c_in, shape.h, shape.w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, flat.tolist())],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(bias, "b"),
         onnx.numpy_helper.from_array(flat, "f")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return model.SerializeToString()


def measure_convs(shapes: Sequence[ConvShape], threads: int) -> list[float]:
    """Median ms of each shape's single-conv model, one shape after another."""
    from shipping.backends import ort_session

    rng = np.random.default_rng(0)
    out = []
    for shape in shapes:
        session = ort_session(conv_model(shape), threads)
        feed = {"x": rng.random((1, shape.c_in, shape.h, shape.w), dtype=np.float32)}
        out.append(median_ms(partial(session.run, None, feed)))
        del session
    return out


OVERHEAD_SHAPE = ConvShape(1, 1, 1, 1, 0, 1, 1, "linear")


def _isa() -> str:
    try:
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    except OSError:
        flags = ""
    words = set(flags.split())
    return "avx512" if "avx512f" in words else "avx2" if "avx2" in words else platform.machine()


def _cpu_model() -> str:
    try:
        line = next((x for x in open("/proc/cpuinfo") if x.startswith("model name")), "")
    except OSError:
        line = ""
    return line.partition(":")[2].strip() or platform.processor() or platform.machine()


def fingerprint(threads: int) -> dict[str, str]:
    return {"runtime": RUNTIME, "cpu": _cpu_model(), "isa": _isa(),
            "cores": str(os.cpu_count()), "onnxruntime": ort.__version__,
            "threads": str(threads)}


def ort_measurer(threads: int) -> Measurer:
    return Measurer(fingerprint(threads), lambda shapes: measure_convs(shapes, threads),
                    lambda: measure_convs([OVERHEAD_SHAPE], threads)[0])


def ort_table(threads: int) -> LatencyTable:
    """This machine's onnxruntime table at ``threads`` threads, with what is cached."""
    return LatencyTable.cached(ort_measurer(threads))


def model_ms(model, img_size: int, runs: int = 10, warmup: int = 2) -> float:
    """Median ms of ``model``'s batch-1 forward in onnxruntime (exported, BN folded), at
    ``img_size`` px, NMS excluded."""
    import torch

    from shipping.backends import model_backend
    from shipping.timing import Timing, measure_latency

    image = torch.rand(1, model.cfg.net.channels, img_size, img_size,
                       generator=torch.Generator().manual_seed(0))
    backend = model_backend(model, RUNTIME, image)
    return measure_latency([backend], image, Timing(runs, warmup), nms=False)[0][0]


def ort_context(img_size: int, threads: int | None = None) -> LatencyContext:
    """The table of this machine at ``threads`` (default: torch's), and models timed in
    onnxruntime at ``img_size``."""
    import torch

    threads = threads or torch.get_num_threads()
    return LatencyContext(ort_table(threads), lambda model: model_ms(model, img_size))
