"""The shipped file itself: `eval --model FILE` and `compare --model NAME=FILE` score and time
the exported .onnx (FP32 or INT8) or OpenVINO IR, and count its cost from its graph."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from helpers import ROOT

import main
from darknet import Darknet
from darknet.cost import network_cost
from shipping.deployed import graph_cost
from shipping.onnx_export import export_onnx

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY_RES2NET = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"


def folded_cost(cfg, size: int) -> tuple[int, int]:
    """Parameters and multiply-adds of the cfg's convs with BN folded (one bias per output
    channel, no BN arithmetic), from darknet.cost's per-conv rows."""
    convs = [c for layer in network_cost(cfg, size, size).layers for c in layer.convs]
    params = sum(c.out_channels * (c.in_channels * c.kernel ** 2 + 1) for c in convs)
    return params, sum(c.out_channels * c.macs_per_output_channel for c in convs)


@pytest.mark.parametrize("dynamic", [False, True])
def test_graph_cost_counts_the_cfgs_convs_folded(tmp_path, dynamic):
    model = Darknet(TINY_RES2NET).eval()
    path = tmp_path / "m.onnx"
    path.write_bytes(export_onnx(model, torch.zeros(1, 3, 64, 64), dynamic))
    for size in (64, 96) if dynamic else (64,):
        cost = graph_cost(path, size)
        assert (cost.params, cost.macs) == folded_cost(model.cfg, size)
    assert cost.params < network_cost(model.cfg, size, size).params  # BN scale+shift -> bias


def test_graph_cost_of_an_openvino_ir_equals_its_onnx(tmp_path):
    pytest.importorskip("openvino")
    from shipping.formats import _ir_files

    onnx = export_onnx(Darknet(TINY_RES2NET).eval(), torch.zeros(1, 3, 64, 64))
    xml, weights = _ir_files(onnx)
    (tmp_path / "m.onnx").write_bytes(onnx)
    (tmp_path / "m.xml").write_bytes(xml)
    (tmp_path / "m.bin").write_bytes(weights)
    assert graph_cost(tmp_path / "m.xml", 64) == graph_cost(tmp_path / "m.onnx", 64)


@pytest.fixture(scope="module")
def shipped(own_labels, tmp_path_factory):
    """The own-labels demo model exported at 64 px: FP32 ONNX, INT8 ONNX (any drop allowed)
    and the INT8 export's report."""
    data, weights = own_labels
    out = tmp_path_factory.mktemp("shipped")
    common = ["export", "--cfg", str(DEMO), "--weights", str(weights), "--img-size", "64",
              "--out", str(out)]
    assert main.main(common) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main.main([*common, "--int8", "--data", str(data), "--calib-images", "8",
                          "--max-map-drop", "1", "--json"]) == 0
    return out / "demo.onnx", out / "demo-int8.onnx", json.loads(printed.getvalue())["int8"]


def eval_json(capsys, *args) -> dict:
    assert main.main(["eval", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.e2e
def test_eval_model_scores_the_exported_file_itself(own_labels, shipped, capsys):
    data, weights = own_labels
    fp32, int8, report = shipped
    torch_map = eval_json(capsys, "--cfg", DEMO, "--weights", weights, "--data", data,
                          "--img-size", 64)
    onnx_map = eval_json(capsys, "--model", fp32, "--data", data)
    assert torch_map["map"] > 0.5 and torch_map["img_size"] == onnx_map["img_size"] == 64
    assert onnx_map["map"] == pytest.approx(torch_map["map"], abs=1e-3)
    assert onnx_map["map50"] == pytest.approx(torch_map["map50"], abs=1e-3)
    # the INT8 file scores what export measured in it, not what its FP32 source scores
    int8_map = eval_json(capsys, "--model", int8, "--data", data)
    assert int8_map["map"] == pytest.approx(report["map"], abs=1e-9)
    assert int8_map["map"] < onnx_map["map"] - 1e-3


@pytest.mark.e2e
def test_eval_model_in_openvino_equals_onnxruntime(own_labels, shipped, capsys):
    pytest.importorskip("openvino")
    data, _ = own_labels
    fp32 = shipped[0]
    ort = eval_json(capsys, "--model", fp32, "--data", data)
    ov = eval_json(capsys, "--model", fp32, "--runtime", "openvino", "--data", data)
    assert ov["map"] == pytest.approx(ort["map"], abs=1e-3) and ov["map"] > 0.5


@pytest.mark.e2e
def test_compare_rows_of_exported_files_are_measured_in_the_files(own_labels, shipped, capsys,
                                                                   tmp_path):
    data, weights = own_labels
    fp32, int8, report = shipped
    out = tmp_path / "cmp"
    out.mkdir()
    assert main.main(["compare", "--model", f"dense={DEMO},{weights}", "--model",
                      f"fp32={fp32}", "--model", f"int8={int8}", "--data", str(data),
                      "--img-size", "64", "--runs", "2", "--warmup", "0", "--out",
                      str(out)]) == 0
    rows = {m["name"]: m for m in json.loads((out / "compare.json").read_text())["models"]}
    assert rows["fp32"]["map"] == pytest.approx(rows["dense"]["map"], abs=1e-3)
    assert rows["int8"]["map"] == pytest.approx(report["map"], abs=1e-9)
    assert rows["int8"]["map"] < rows["fp32"]["map"] - 1e-3
    params, macs = folded_cost(Darknet(DEMO).cfg, 64)
    for name, path in (("fp32", fp32), ("int8", int8)):
        row = rows[name]
        assert row["runtime"] == "onnxruntime"
        assert row["size_mb"] == path.stat().st_size / 2**20
        assert (row["params"], row["gflops"]) == (params, 2 * macs / 1e9)
    assert rows["int8"]["size_mb"] < 0.5 * rows["fp32"]["size_mb"]  # int8 weights
    assert "| int8 | onnxruntime |" in (out / "compare.md").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (["--model", "{fp32}", "--cfg", str(DEMO)], "--model FILE replaces --cfg and --weights"),
    (["--model", "{fp32}", "--img-size", "128"], "its input is fixed at 64x64, got image size "
                                                  "128"),
    (["--model", "{fp32}", "--device", "cuda"], "leave out --device cuda"),
    (["--cfg", str(DEMO)], "give --cfg and --weights, or --model FILE"),
    (["--model", "{dir}/w.weights"], "not an exported model"),
])
def test_eval_model_bad_input_is_one_line(shipped, capsys, args, message):
    fp32 = shipped[0]
    args = [a.format(fp32=fp32, dir=fp32.parent) for a in args]
    assert main.main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_compare_model_spec_takes_exported_files():
    from common.errors import UserError
    from comparison.compare import ModelSpec

    assert ModelSpec.parse("q=runs/x-int8.onnx") == ModelSpec("q", None, "runs/x-int8.onnx")
    assert ModelSpec.parse("v=a/b.xml").cfg is None
    assert ModelSpec.parse("d=a.cfg,a.weights") == ModelSpec("d", "a.cfg", "a.weights")
    with pytest.raises(UserError, match="NAME=CFG,WEIGHTS or NAME=FILE"):
        ModelSpec.parse("w=a.weights")
