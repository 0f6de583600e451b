"""OpenVINO: the FP32 IR computes what onnxruntime does, and without the package the
command says in one line what to install."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import ROOT, calibrate_heads, images

import main
from darknet import Darknet
from shipping.backends import open_file
from shipping.check import compare_outputs

DEMO = ROOT / "cfgs" / "demo.cfg"


@pytest.mark.e2e
def test_openvino_fp32_ir_equals_onnxruntime(tmp_path):
    pytest.importorskip("openvino")
    weights = tmp_path / "demo.weights"
    calibrate_heads(Darknet(DEMO), 64, seed=1).save_weights(weights)
    for fmt in ("onnx", "openvino"):
        assert main.main(["export", "--cfg", str(DEMO), "--weights", str(weights), "--format",
                          fmt, "--img-size", "64", "--dynamic", "--out", str(tmp_path)]) == 0
    x = images(2, 64, seed=5)
    want = open_file(tmp_path / "demo.onnx")(x).numpy()
    got = open_file(tmp_path / "demo.xml")(x).numpy()
    compare_outputs(want, got, "openvino", log_columns=(2, 3))  # raises above 1e-4 of scale
    assert not torch.equal(open_file(tmp_path / "demo.xml")(images(2, 64, seed=6)),
                           torch.from_numpy(got))  # the output follows the input


@pytest.mark.e2e
def test_missing_openvino_is_one_line_and_no_file(tmp_path, capsys, monkeypatch):
    weights = tmp_path / "demo.weights"
    Darknet(DEMO).save_weights(weights)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    out = tmp_path / "out"
    out.mkdir()
    code = main.main(["export", "--cfg", str(DEMO), "--weights", str(weights), "--format",
                      "openvino", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err == ("error: OpenVINO is not installed: pip install -r "
                                 "requirements-openvino.txt (or pip install openvino)\n")
    assert not any(out.iterdir())
