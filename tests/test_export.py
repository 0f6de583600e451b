"""`main.py export --format onnx`: the ONNX graph in onnxruntime computes the model's output."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import OFFICIAL_CFGS, PROJECT_CFGS, ROOT, TINY_CFGS, calibrate_heads, images

import main
from darknet import Darknet
from prune import PruneSettings, prune_model
from prune.importance import randomize_gammas
from shipping.backends import OrtBackend, ort_session
from shipping.check import TOLERANCE, ExportError
from shipping.formats import check_backend, write_onnx
from shipping.onnx_export import OPSET, export_onnx

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY_RES2NET = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"

YOLOV4_TINY = ROOT / "tests" / "data" / "darknet" / "yolov4-tiny.cfg"  # route groups, scale_x_y


def demo_pruned() -> Darknet:
    dense = randomize_gammas(Darknet(DEMO), seed=0).eval()
    slim, _ = prune_model(dense, PruneSettings(ratio=0.5))
    return slim


MODELS = {
    "demo": lambda: Darknet(DEMO),
    "demo-pruned": demo_pruned,
    "tiny-res2net": lambda: Darknet(TINY_RES2NET),
    "yolov4-tiny": lambda: Darknet(YOLOV4_TINY),
}


def size_of(model: Darknet) -> int:
    return min(model.cfg.net.height, 128)  # yolov4-tiny's 416 is more than the test needs


def model_for(name: str) -> Darknet:
    torch.manual_seed(0)
    model = MODELS[name]()
    return calibrate_heads(model, size_of(model), seed=1)


def detections(model: Darknet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(model(x), 1)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch,dynamic", [(1, False), (3, True)])
def test_onnxruntime_gives_the_pytorch_output(name, batch, dynamic):
    model = model_for(name)
    size = size_of(model)
    session = ort_session(export_onnx(model, torch.zeros(1, 3, size, size), dynamic))
    run = OrtBackend(session)
    x = images(batch, size, seed=2)
    got, want = run(x), detections(model, x)
    assert got.shape == want.shape == (batch, want.shape[1], 5 + model.num_classes)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    other = images(batch, size, seed=3)
    assert not torch.allclose(run(other), got, atol=1e-2)  # the output follows the input
    if dynamic:  # height and width too: the decode grid follows the input's shape
        wide = torch.rand(2, 3, size - 32, size + 32)
        torch.testing.assert_close(run(wide), detections(model, wide), rtol=1e-4, atol=1e-4)


def test_static_graph_refuses_another_batch_the_backend_slices_it():
    model = model_for("tiny-res2net")
    session = ort_session(export_onnx(model, torch.zeros(1, 3, 64, 64)))
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]
    x = images(2, 64)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"images": x.numpy()})
    # the backend runs a larger batch in slices of the file's fixed one
    torch.testing.assert_close(OrtBackend(session)(x), detections(model, x),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", sorted({*PROJECT_CFGS, *OFFICIAL_CFGS, *TINY_CFGS}),
                         ids=lambda p: p.name)
def test_every_cfg_exports_and_passes_the_check(cfg, tmp_path):
    torch.manual_seed(0)
    model = calibrate_heads(Darknet(cfg), 64, seed=1)
    check = write_onnx(model, tmp_path / "m.onnx", 64)
    assert check.max_rel_diff <= TOLERANCE and (tmp_path / "m.onnx").stat().st_size > 0


# ---------------------------------------------------------------- the command

@pytest.fixture
def demo_weights(tmp_path):
    path = tmp_path / "demo.weights"
    model_for("demo").save_weights(path)
    return path


@pytest.mark.e2e
def test_export_writes_a_checked_onnx_file(demo_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = main.main(["export", "--cfg", str(DEMO), "--weights", str(demo_weights), "--out",
                      str(out), "--dynamic", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [str(out / "demo.onnx")]
    assert report["max_abs_diff"] > 0  # a real comparison ran (the tolerance: below)
    session = ort_session(out / "demo.onnx")
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    model = Darknet(DEMO)
    model.load_weights(demo_weights)
    x = images(3, 128, seed=4)
    torch.testing.assert_close(OrtBackend(session)(x), detections(model.eval(), x),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(SystemExit):
        main.main(["export", "--help"])
    assert f"opset {OPSET}" in capsys.readouterr().out


@pytest.mark.e2e
def test_export_refuses_a_graph_that_disagrees(demo_weights, tmp_path, capsys, monkeypatch):
    import shipping.onnx_export as onnx_export

    forward = onnx_export._Detections.forward
    monkeypatch.setattr(onnx_export._Detections, "forward",
                        lambda self, x: forward(self, x) * (1 + 1e-3))
    out = tmp_path / "out"
    code = main.main(["export", "--cfg", str(DEMO), "--weights", str(demo_weights), "--out",
                      str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: onnxruntime output differs") \
        and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_check_names_the_tolerance():
    model = model_for("tiny-res2net")
    session = ort_session(export_onnx(model, torch.zeros(1, 3, 64, 64)))
    with torch.no_grad():
        model.layers[0].bn.bias.add_(1e-2)  # the file no longer matches the model
    with pytest.raises(ExportError, match=f"more than {TOLERANCE:g}"):
        check_backend(OrtBackend(session), model, images(1, 64))


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (["--img-size", "100"], "--img-size must be a positive multiple of 32, got 100"),
    (["--format", "darknet", "--dynamic"], "--dynamic, --img-size and --int8 apply to --format"),
    (["--weights-of-tiny"], "expects"),
])
def test_export_bad_input_is_one_line_and_no_file(args, message, demo_weights, tmp_path, capsys):
    weights = demo_weights
    if args == ["--weights-of-tiny"]:
        weights, args = tmp_path / "tiny.weights", []
        Darknet(TINY_RES2NET).save_weights(weights)
    out = tmp_path / "out"
    code = main.main(["export", "--cfg", str(DEMO), "--weights", str(weights), "--out", str(out),
                      *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_unreadable_onnx_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ExportError, match=f"{bad}: onnxruntime cannot load it"):
        ort_session(bad)
