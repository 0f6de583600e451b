"""The library calls a script uses (README, "In Python"): evaluate, compare, export."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT, TINY_CFGS, calibrate_heads

from common.errors import UserError
from darknet import Darknet, export
from darknet.exporting import export_paths
from engine import evaluate

DEMO_CFG = ROOT / "cfgs" / "demo.cfg"


@pytest.fixture(scope="module")
def demo_model():
    torch.manual_seed(0)
    return calibrate_heads(Darknet(DEMO_CFG), 64, seed=1)


class DecodedOutput:
    """A predictor that is not a torch module: what an ONNX or OpenVINO model plugs in."""

    def __init__(self, model):
        self.model, self.num_classes, self.calls = model.eval(), model.num_classes, 0

    def __call__(self, images):
        self.calls += 1
        with torch.no_grad():
            return torch.cat(self.model(images), 1).numpy()  # as onnxruntime returns it


def test_a_predictor_is_scored_as_the_module_it_wraps(demo_model, demo_data):
    module = evaluate(demo_model, demo_data, img_size=64, device="cpu")
    predictor = DecodedOutput(demo_model)
    plugged = evaluate(predictor, demo_data, img_size=64, device="cpu", batch_size=2)
    assert predictor.calls == 2  # 4 val images, batch 2
    assert plugged.coco == module.coco and plugged.images == module.images == 4
    assert module.as_dict()["map50"] == module.map50 and module.img_size == 64
    with pytest.raises(UserError, match="img_size is needed"):
        evaluate(predictor, demo_data)


def test_evaluate_refuses_a_data_set_with_other_classes(demo_data):
    tiny = Darknet(TINY_CFGS[0])
    with pytest.raises(UserError, match=rf"4 class names but the model's \[yolo\] layers have "
                                        rf"classes={tiny.num_classes}"):
        evaluate(tiny, demo_data, img_size=64, device="cpu")


def test_export_paths_take_the_formats_suffixes(tmp_path):
    assert export_paths(tmp_path / "slim", "onnx") == (tmp_path / "slim.onnx",)
    assert export_paths(tmp_path / "slim.onnx", "onnx") == (tmp_path / "slim.onnx",)
    assert export_paths(tmp_path / "slim.cfg", "darknet") == (tmp_path / "slim.cfg",
                                                              tmp_path / "slim.weights")
    with pytest.raises(UserError,
                       match="format must be one of onnx, openvino, darknet, got 'tflite'"):
        export_paths(tmp_path / "slim", "tflite")


def test_export_writes_what_the_written_files_load_back_to(demo_model, tmp_path):
    exported = export(demo_model, tmp_path / "slim", format="darknet")
    assert exported.files == (tmp_path / "slim.cfg", tmp_path / "slim.weights")
    assert exported.lowered and exported.max_abs_diff < 1e-4
    back = Darknet(*exported.files).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(back(x), demo_model(x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # an ONNX export and its onnxruntime check: several seconds
def test_export_onnx_is_checked_in_onnxruntime(demo_model, tmp_path):
    onnx = export(demo_model, tmp_path / "slim", img_size=64)
    assert onnx.files == (tmp_path / "slim.onnx",) and onnx.max_rel_diff < 1e-4
    assert onnx.layers is None and onnx.lowered is None
