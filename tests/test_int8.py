"""INT8 export: the quantized graph computes what the FP32 one does within a quantization
tolerance, its decode is float, and `export --int8` writes only a file whose measured mAP
stays within --max-map-drop of FP32."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from helpers import ROOT, calibrate_heads, images

import main
from darknet import Darknet
from shipping.backends import OrtBackend, open_file, ort_session
from shipping.onnx_export import export_onnx
from shipping.quantize import (
    BODY_OPS,
    QDQ_OPS,
    QuantSettings,
    decode_nodes,
    head_convs,
    quantize_onnx,
)

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY_RES2NET = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"


@pytest.fixture(scope="module")
def quantized():
    """A calibrated tiny Res2Net model, its FP32 graph and that graph in INT8, calibrated on
    16 random images (the test images below come from the same distribution)."""
    with torch.random.fork_rng():  # the conv init draws from the global generator
        torch.manual_seed(1)
        model = calibrate_heads(Darknet(TINY_RES2NET), 64, seed=1)
    fp32 = export_onnx(model, torch.zeros(1, 3, 64, 64), dynamic=True)
    return model, fp32, quantize_onnx(fp32, list(images(16, 64, seed=0).split(1)))


def test_int8_outputs_agree_with_fp32_within_a_quantization_tolerance(quantized):
    _, fp32, int8 = quantized
    x = images(4, 64, seed=9)
    want, got = OrtBackend(ort_session(fp32))(x), OrtBackend(ort_session(int8))(x)
    assert got.shape == want.shape
    assert not torch.equal(got, want)  # it is a different graph
    # Mean error per output column, against that column's spread: ~0.005 for box centres,
    # ~0.04 for sizes, ~0.11 for probabilities here; a calibration on the wrong range of
    # inputs (images 10x darker) gives 0.2-0.97.
    spread = want.flatten(0, 1).std(0)
    error = (got - want).abs().flatten(0, 1).mean(0) / spread
    assert error[:2].max() < 0.02 and error[2:4].max() < 0.1 and error[4:].max() < 0.2, error


def activation_scales(int8: bytes) -> dict[str, float]:
    """The per-tensor scales of the graph's QuantizeLinear nodes (the calibrated ranges)."""
    graph = onnx.load_from_string(int8).graph
    values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    return {n.input[0]: float(values[n.input[1]]) for n in graph.node
            if n.op_type == "QuantizeLinear" and values[n.input[1]].size == 1}


@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
def test_calibration_in_slices_merges_them(quantized, monkeypatch, calibration):
    """16 images calibrated 8 at a time give the ranges of one pass over all 16: the second
    slice (brighter images, wider ranges) is merged in, not dropped or replacing the first."""
    import shipping.quantize as quantize

    _, fp32, _ = quantized
    calib = [*images(8, 64, seed=0).split(1), *(images(8, 64, seed=1) * 3).split(1)]
    settings = QuantSettings(calibration=calibration)
    sliced = activation_scales(quantize_onnx(fp32, calib, settings))
    first = activation_scales(quantize_onnx(fp32, calib[:8], settings))
    monkeypatch.setattr(quantize, "CALIBRATION_SLICE", 16)
    whole = activation_scales(quantize_onnx(fp32, calib, settings))
    assert sliced.keys() == whole.keys() and len(whole) > 10
    off = torch.tensor([abs(sliced[k] / whole[k] - 1) for k in whole])
    first_off = torch.tensor([abs(first[k] / whole[k] - 1) for k in whole])
    assert first_off.median() > 0.3  # the brighter slice widened the ranges
    if calibration == "minmax":
        assert off.max() < 1e-6
    else:  # histograms are re-binned as a slice widens them: close, not to the bit
        assert off.median() < 0.01 and off.quantile(0.9) < 0.05 and off.max() < 0.3, off


def test_the_convs_are_int8_and_the_decode_float(quantized):
    model, _, int8 = quantized
    graph = onnx.load_from_string(int8)
    heads = head_convs(graph)
    assert len(heads) == len(model.yolo_layers)  # one last conv per [yolo] head
    produced_by = {out: n.op_type for n in graph.graph.node for out in n.output}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    quantized_convs = [n for n in convs if produced_by.get(n.input[1]) == "DequantizeLinear"]
    assert len(quantized_convs) == len(convs) - len(heads)  # every other conv's weights
    decode = decode_nodes(graph)
    assert decode and not [n.op_type for n in decode if n.op_type in QDQ_OPS]
    for node in graph.graph.node:
        if node.name in heads:  # float weights, float output
            assert produced_by.get(node.input[1]) != "DequantizeLinear"


# ---------------------------------------------------------------- the command

def export_int8(own_labels, out, *args):
    data, weights = own_labels
    return main.main(["export", "--cfg", str(DEMO), "--weights", str(weights), "--img-size",
                      "64", "--int8", "--data", str(data), "--calib-images", "8", "--out",
                      str(out), *args])


@pytest.mark.e2e
def test_max_map_drop_0_refuses_in_one_line_and_writes_nothing(own_labels, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert export_int8(own_labels, out, "--max-map-drop", "0") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: INT8 mAP@.5:.95 ") and err.count("\n") == 1
    assert "more than the allowed 0; no file written" in err
    assert not any(out.iterdir())


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_int8_prints_both_maps_and_writes_the_file_it_measured(own_labels, tmp_path,
                                                                      capsys, fmt):
    from engine.evaluator import evaluate_batches
    from yolodata import YoloDataset, collate, load_spec

    out = tmp_path / "out"
    out.mkdir()
    assert export_int8(own_labels, out, "--format", fmt, "--max-map-drop", "1", "--json") == 0
    report = json.loads(capsys.readouterr().out)["int8"]
    assert report["runtime"] == ("onnxruntime" if fmt == "onnx" else "openvino")
    assert report["fp32_map"] > 0.5 and report["map"] < report["fp32_map"]
    spec = load_spec(own_labels[0])
    val = YoloDataset(spec.val, spec.num_classes, 64)
    batches = [collate([val[i] for i in range(len(val))])]
    shipped = open_file(out / ("demo-int8.onnx" if fmt == "onnx" else "demo-int8.xml"))
    assert evaluate_batches(shipped, batches, spec.names).map == pytest.approx(report["map"])


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (["--calib-images", "17"], "calibration needs 17 training images, the data set has 16"),
    (["--max-map-drop", "-0.1"], "--max-map-drop must be >= 0, got -0.1"),
    (["--format", "darknet"], "--int8 apply to --format onnx and openvino"),
])
def test_int8_bad_input_is_one_line_and_no_file(own_labels, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    out.mkdir()
    assert export_int8(own_labels, out, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not any(out.iterdir())


def test_body_ops_keep_tensors_8_bit_between_convs_and_the_decode_float(quantized):
    """--int8-ops body: every LeakyReLU's output is quantized again (a QuantizeLinear is its
    only reader, so onnxruntime runs it on 8-bit tensors), where with convs alone some feed
    the float splits, adds and concats; the decode still reads float, and the outputs still
    agree with FP32."""
    _, fp32, convs_only = quantized
    body = quantize_onnx(fp32, list(images(16, 64, seed=0).split(1)),
                         QuantSettings(ops=BODY_OPS))
    for int8, quantized_between in ((body, True), (convs_only, False)):
        graph = onnx.load_from_string(int8)
        readers: dict[str, set[str]] = {}
        for node in graph.graph.node:
            for name in node.input:
                readers.setdefault(name, set()).add(node.op_type)
        requantized = [readers[n.output[0]] == {"QuantizeLinear"} for n in graph.graph.node
                       if n.op_type == "LeakyRelu"]
        assert all(requantized) == quantized_between and any(requantized)
        decode = decode_nodes(graph)
        assert decode and not [n for n in decode if n.op_type in QDQ_OPS]
    x = images(4, 64, seed=9)
    want, got = OrtBackend(ort_session(fp32))(x), OrtBackend(ort_session(body))(x)
    error = (got - want).abs().flatten(0, 1).mean(0) / want.flatten(0, 1).std(0)
    assert error[:2].max() < 0.03 and error[2:4].max() < 0.15 and error[4:].max() < 0.3, error
