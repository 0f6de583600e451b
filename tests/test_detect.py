"""`main.py detect`: pictures and detections equal to the eval forward + NMS of main.py eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import ROOT, calibrate_heads
from PIL import Image

import main
from darknet import Darknet
from evaluation import postprocess
from yolodata import Letterbox, YoloDataset
from yolodata.synth import render, sample_scene

DEMO = ROOT / "cfgs" / "demo.cfg"
CONF, IOU = 0.6, 0.45


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A calibrated demo model's weights, and a folder with two generated scenes (one of
    them not square, so the letterbox has padding to undo)."""
    root = tmp_path_factory.mktemp("detect")
    torch.manual_seed(0)
    model = calibrate_heads(Darknet(DEMO), 128, seed=1)
    model.save_weights(root / "demo.weights")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    render(sample_scene(rng, 160)).save(src / "a.png")
    render(sample_scene(rng, 160)).resize((200, 130)).save(src / "b.png")
    return model, root / "demo.weights", src


def expected(model: Darknet, path) -> torch.Tensor:
    """What main.py eval would detect: its loader's input, eval forward, NMS, letterbox undone."""
    sample = YoloDataset([path], model.num_classes, img_size=128, cache_images=False)[0]
    with torch.no_grad():
        det = postprocess(model.eval()(sample.image[None]), CONF, IOU, multi_label=False)[0]
    lb = Letterbox.fit(sample.orig_hw, 128)
    return torch.cat((lb.to_original(det[:, :4]), det[:, 4:]), 1)


def run_detect(capsys, *args) -> tuple[int, str, str]:
    code = main.main(["detect", "--cfg", str(DEMO), "--conf-thres", str(CONF), "--iou-thres",
                      str(IOU), *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def as_rows(image_json: dict) -> torch.Tensor:
    return torch.tensor([[*d["box"], d["score"], d["class"]] for d in image_json["detections"]])


@pytest.mark.e2e
def test_detect_writes_pictures_and_the_eval_detections(demo, tmp_path, capsys):
    model, weights, src = demo
    out = tmp_path / "out"
    code, _, err = run_detect(capsys, "--weights", weights, "--source", src, "--out", out,
                              "--data", "demo")
    assert code == 0 and err == ""
    report = json.loads((out / "detections.json").read_text())
    assert [r["path"] for r in report["images"]] == [str(src / "a.png"), str(src / "b.png")]
    assert report["errors"] == []
    for image in report["images"]:
        want = expected(model, image["path"])
        assert len(want) > 0  # the comparison is about something
        got = as_rows(image)
        torch.testing.assert_close(got[:, :4], want[:, :4], atol=0.01, rtol=0)
        torch.testing.assert_close(got[:, 4], want[:, 4], atol=1e-5, rtol=0)
        assert got[:, 5].tolist() == want[:, 5].tolist()
        assert {d["name"] for d in image["detections"]} <= {"circle", "square", "triangle",
                                                             "cross"}
        original = Image.open(image["path"]).convert("RGB")
        picture = Image.open(out / image["path"].rsplit("/", 1)[1])
        assert (image["width"], image["height"]) == original.size == picture.size
        assert np.asarray(picture).tolist() != np.asarray(original).tolist()  # boxes drawn


@pytest.mark.e2e
def test_nothing_found_leaves_the_picture_as_it_was(demo, tmp_path, capsys):
    _, weights, src = demo
    out = tmp_path / "out"
    code = main.main(["detect", "--cfg", str(DEMO), "--weights", str(weights), "--source",
                      str(src / "b.png"), "--out", str(out), "--conf-thres", "0.999"])
    assert code == 0
    report = json.loads((out / "detections.json").read_text())
    assert report["images"][0]["detections"] == []
    assert np.array_equal(np.asarray(Image.open(out / "b.png")),
                          np.asarray(Image.open(src / "b.png").convert("RGB")))


@pytest.mark.e2e
def test_detect_in_onnxruntime_finds_the_same_boxes(demo, tmp_path, capsys):
    model, weights, src = demo
    assert main.main(["export", "--cfg", str(DEMO), "--weights", str(weights), "--out",
                      str(tmp_path)]) == 0
    code, _, _ = run_detect(capsys, "--onnx", tmp_path / "demo.onnx", "--source", src, "--out",
                            tmp_path / "ort")
    assert code == 0
    report = json.loads((tmp_path / "ort" / "detections.json").read_text())
    for image in report["images"]:
        # Boxes within float32 noise of the score threshold may fall either side of it.
        want, got = (d[d[:, 4] > CONF + 1e-3] for d in (expected(model, image["path"]),
                                                         as_rows(image)))
        assert got.shape == want.shape and len(got) > 0
        torch.testing.assert_close(got[:, :5], want[:, :5], atol=0.02, rtol=1e-4)
        assert got[:, 5].tolist() == want[:, 5].tolist()
    code, _, err = run_detect(capsys, "--onnx", tmp_path / "demo.onnx", "--source", src,
                              "--img-size", "160", "--out", tmp_path / "x")
    assert code == 2 and "fixed at 128x128" in err and not (tmp_path / "x").exists()


@pytest.mark.e2e
def test_an_unreadable_image_is_named_and_the_others_still_processed(demo, tmp_path, capsys):
    _, weights, src = demo
    folder = tmp_path / "src"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes((src / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    code, stdout, err = run_detect(capsys, "--weights", weights, "--source", folder, "--out",
                                   out)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {folder / 'broken.png'}: cannot read")
    report = json.loads((out / "detections.json").read_text())
    assert [r["path"].rsplit("/", 1)[1] for r in report["images"]] == ["a.png", "b.png"]
    assert [e["path"] for e in report["errors"]] == [str(folder / "broken.png")]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "detections.json"]


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (["--source", "missing.png"], "missing.png: no such file or folder"),
    (["--source", "SRC", "--img-size", "100"], "--img-size must be a positive multiple of 32"),
    (["--source", "SRC", "--conf-thres", "1"], "--conf-thres must be in [0, 1)"),
    (["--source", "SRC", "--out", "SRC"], "would overwrite the source images"),
    (["--source", "SRC", "--data", "TINY"], "but the model detects 4"),
])
def test_detect_bad_input_is_one_line(args, message, demo, tmp_path, capsys):
    _, weights, src = demo
    tiny = tmp_path / "tiny.names"
    tiny.write_text("a\nb\n")
    args = [str(src) if a == "SRC" else str(tiny) if a == "TINY" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    code, _, err = run_detect(capsys, "--weights", weights, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()
