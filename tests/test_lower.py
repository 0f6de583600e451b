"""`export --format darknet`: [res2net]/[triangle] lowered to plain Darknet sections.

The oracle is the project's own model: built from the written .cfg + .weights it must give
the original model's raw logits; OpenCV DNN, an independent Darknet reader, must give the
same head inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import OFFICIAL_CFGS, ROOT, TINY_CFGS, YOLO_HEAD, calibrate_heads, images

import main
from darknet import CfgError, Darknet, parse_cfg, parse_cfg_text
from darknet.sections import SECTION_TYPES, NetSection
from darknet.weights import WeightsHeader
from prune import PruneSettings, prune_model
from prune.importance import randomize_gammas
from shipping.lower import (
    DARKNET_SECTIONS,
    LOWERINGS,
    LoweringError,
    lower_cfg,
    write_lowered,
)

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY_RES2NET = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
FULL_RES2NET = [ROOT / "cfgs" / "res2net-yolov3.cfg", ROOT / "cfgs" / "res2net-yolov3-triangle.cfg"]
HEADER_BYTES = len(WeightsHeader().to_bytes())


def calibrated(cfg, size: int, pruned: bool = False) -> Darknet:
    torch.manual_seed(0)
    model = Darknet(cfg)
    if pruned:
        model, _ = prune_model(randomize_gammas(model, seed=0).eval(), PruneSettings(ratio=0.5))
    return calibrate_heads(model, size, seed=1)


def raw(model: Darknet, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.eval()(x, raw=True)


def lowered_from_files(model: Darknet, tmp_path, size: int) -> Darknet:
    files = write_lowered(model, tmp_path / "low.cfg", tmp_path / "low.weights", img_size=size)
    assert files.lowered
    rebuilt = Darknet(tmp_path / "low.cfg")
    rebuilt.load_weights(tmp_path / "low.weights")
    return rebuilt.eval()


def assert_same_function(model: Darknet, lowered: Darknet, size: int) -> None:
    x = images(2, size, seed=2)
    want, got = raw(model, x), raw(lowered, x)
    other = raw(lowered, images(2, size, seed=3))
    assert len(got) == len(want)
    for w, g, o in zip(want, got, other, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
        assert (o - g).abs().max() > 1e-2  # the outputs follow the input


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("cfg,size", [(DEMO, 128), (TINY_RES2NET, 64)], ids=["demo", "tiny"])
def test_model_from_the_lowered_files_is_the_original(cfg, size, pruned, tmp_path):
    model = calibrated(cfg, size, pruned)
    lowered = lowered_from_files(model, tmp_path, size)
    kinds = {s.kind for s in lowered.cfg.layers}
    assert "res2net" not in kinds and "triangle" not in kinds and "route" in kinds
    assert_same_function(model, lowered, size)


@pytest.mark.slow
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("cfg", FULL_RES2NET, ids=lambda p: p.name)
def test_full_size_lowered_files_give_the_original(cfg, pruned, tmp_path):
    model = calibrated(cfg, 64, pruned)
    assert_same_function(model, lowered_from_files(model, tmp_path, 64), 64)


@pytest.mark.parametrize("cfg", [DEMO, TINY_RES2NET], ids=lambda p: p.name)
def test_weights_payload_is_the_original_float_for_float(cfg, tmp_path):
    model = calibrated(cfg, 64)
    model.save_weights(tmp_path / "orig.weights")
    write_lowered(model, tmp_path / "low.cfg", tmp_path / "low.weights", img_size=64)
    original = (tmp_path / "orig.weights").read_bytes()
    lowered = (tmp_path / "low.weights").read_bytes()
    assert lowered[HEADER_BYTES:] == original[HEADER_BYTES:]
    assert len(original) > HEADER_BYTES + 10_000


ONE_BLOCK = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[res2net]
width=2
scale=4

""" + YOLO_HEAD


def test_a_res2net_block_lowers_to_the_documented_layout():
    cfg = lower_cfg(parse_cfg_text(ONE_BLOCK))
    assert [s.kind for s in cfg.layers[1:14]] == [
        "convolutional", "route", "convolutional", "route", "shortcut", "convolutional",
        "route", "shortcut", "convolutional", "route", "route", "convolutional", "shortcut"]
    conv1, g0, k0, g1, add1, k1, g2, add2, k2, g3, cat, conv3, residual = cfg.layers[1:14]
    assert (conv1.filters, conv1.size, conv1.activation) == (8, 1, "leaky")
    assert all(c.filters == 2 and c.size == 3 and c.pad == 1 and c.activation == "leaky"
               for c in (k0, k1, k2))
    assert [(g.layers, g.groups, g.group_id) for g in (g0, g1, g2, g3)] == \
        [((1,), 4, i) for i in range(4)]
    assert add1.from_ == (3,) and add2.from_ == (6,)  # G_i + the previous K's output
    assert cat.layers == (3, 6, 9, 10)  # K_0, K_1, K_2, G_3
    assert (conv3.filters, conv3.size, conv3.activation) == (8, 1, "linear")
    assert residual.from_ == (0,) and residual.activation == "linear"  # the block's input
    assert all(c.batch_normalize for c in (conv1, k0, k1, k2, conv3))
    assert cfg.layers[15].kind == "yolo" and len(cfg.layers) == 16


@pytest.mark.parametrize("block", ["[res2net]\nwidth=3\nscale=1", "[triangle]\nwidth=3\nscale=1",
                                   "[triangle]\nwidth=2\nscale=3"])
def test_scale_one_and_triangle_blocks_lower_exactly(block, tmp_path):
    text = ONE_BLOCK.replace("[res2net]\nwidth=2\nscale=4", block)
    (tmp_path / "b.cfg").write_text(text)
    model = calibrated(tmp_path / "b.cfg", 32)
    assert_same_function(model, lowered_from_files(model, tmp_path, 32), 32)


PLAIN_CFGS = [p for p in [*OFFICIAL_CFGS, *TINY_CFGS]
              if p.name in ("yolov3-tiny.cfg", "yolov4-tiny.cfg", "tiny-darknet.cfg")]


@pytest.mark.parametrize("cfg", PLAIN_CFGS, ids=lambda p: p.name)
def test_a_plain_darknet_cfg_is_written_unchanged(cfg, tmp_path):
    model = Darknet(cfg)
    model.save_weights(tmp_path / "in.weights")
    model.load_weights(tmp_path / "in.weights")
    files = write_lowered(model, tmp_path / "out.cfg", tmp_path / "out.weights")
    assert not files.lowered
    assert (tmp_path / "out.cfg").read_bytes() == cfg.read_bytes()
    assert (tmp_path / "out.weights").read_bytes() == (tmp_path / "in.weights").read_bytes()


def test_every_section_type_has_a_plain_darknet_form():
    for kind in SECTION_TYPES.values():
        assert kind is NetSection or (kind in DARKNET_SECTIONS) != (kind in LOWERINGS), kind


def test_a_section_without_a_plain_form_is_named(monkeypatch):
    import shipping.lower as lower

    monkeypatch.setattr(lower, "DARKNET_SECTIONS", DARKNET_SECTIONS - {SECTION_TYPES["maxpool"]})
    cfg = next(p for p in TINY_CFGS if p.name == "tiny-darknet.cfg")
    with pytest.raises(LoweringError, match=r"tiny-darknet.cfg:\d+: \[maxpool\] has no plain"):
        lower.lower_cfg(parse_cfg(cfg))


READS_THE_IMAGE = """[net]
width=32
height=32
channels=3

[res2net]
width=2
scale=2

""" + YOLO_HEAD


def test_a_block_whose_residual_is_the_image_is_refused_with_its_line():
    with pytest.raises(LoweringError, match=r"img.cfg:6: \[res2net\] reads the input image"):
        lower_cfg(parse_cfg_text(READS_THE_IMAGE, "img.cfg"))
    assert issubclass(LoweringError, CfgError)


# ---------------------------------------------------------------- OpenCV DNN

def opencv_head_inputs(cfg_path, weights_path, x: torch.Tensor,
                       heads: list[int]) -> list[np.ndarray]:
    """The outputs of the convs in front of each [yolo] (OpenCV names them conv_<layer>)."""
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setInput(x.numpy())
    return net.forward([f"conv_{h - 1}" for h in heads])


def project_head_inputs(model: Darknet, x: torch.Tensor, eps: float) -> list[np.ndarray]:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = eps
    out = []
    for r in raw(model, x):  # [B, A, H, W, 5 + C] -> the conv's [B, A * (5 + C), H, W]
        b, a, h, w, n = r.shape
        out.append(r.permute(0, 1, 4, 2, 3).reshape(b, a * n, h, w).numpy())
    return out


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_opencv_runs_the_lowered_demo_and_gives_the_head_inputs(pruned, tmp_path):
    """OpenCV's BN divides by sqrt(var + 1e-6), the project's by sqrt(var + 1e-5): with the
    project's model set to OpenCV's eps the two agree to float32 noise (1e-4 of the logits'
    scale); at the project's eps the calibrated model's small variances put them ~100x
    further apart, which is that eps difference and nothing else."""
    model = calibrated(DEMO, 128, pruned)
    lowered = lowered_from_files(model, tmp_path, 128)
    heads = [s.index for s in lowered.cfg.layers if s.kind == "yolo"]
    x = images(1, 128, seed=4)
    theirs = opencv_head_inputs(tmp_path / "low.cfg", tmp_path / "low.weights", x, heads)
    ours_at_their_eps = project_head_inputs(model, x, 1e-6)
    ours = project_head_inputs(model, x, 1e-5)
    assert [t.shape for t in theirs] == [o.shape for o in ours] and len(theirs) == 3
    for t, same_eps, own_eps in zip(theirs, ours_at_their_eps, ours, strict=True):
        scale = np.abs(same_eps).max()
        assert np.abs(t - same_eps).max() <= 1e-4 * scale
        assert np.abs(t - own_eps).max() > 10 * np.abs(t - same_eps).max()
    other = opencv_head_inputs(tmp_path / "low.cfg", tmp_path / "low.weights",
                               images(1, 128, seed=5), heads)
    assert np.abs(other[0] - theirs[0]).max() > 1e-2


# ---------------------------------------------------------------- the command

@pytest.mark.e2e
def test_export_darknet_writes_both_files(tmp_path, capsys):
    model = calibrated(TINY_RES2NET, 64)
    model.save_weights(tmp_path / "tiny.weights")
    out = tmp_path / "out"
    code = main.main(["export", "--cfg", str(TINY_RES2NET), "--weights",
                      str(tmp_path / "tiny.weights"), "--format", "darknet", "--out", str(out),
                      "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["max_abs_diff"] == 0.0  # float64, the same arithmetic
    assert report["files"] == [str(out / "tiny-res2net.cfg"), str(out / "tiny-res2net.weights")]
    rebuilt = Darknet(out / "tiny-res2net.cfg")
    rebuilt.load_weights(out / "tiny-res2net.weights")
    assert_same_function(model, rebuilt, 64)


@pytest.mark.e2e
def test_export_darknet_refuses_what_it_cannot_express(tmp_path, capsys):
    (tmp_path / "img.cfg").write_text(READS_THE_IMAGE)
    Darknet(tmp_path / "img.cfg").save_weights(tmp_path / "img.weights")
    out = tmp_path / "out"
    code = main.main(["export", "--cfg", str(tmp_path / "img.cfg"), "--weights",
                      str(tmp_path / "img.weights"), "--format", "darknet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'img.cfg'}:6: [res2net] reads the input image")
    assert not out.exists()


@pytest.mark.e2e
def test_export_refuses_to_overwrite_its_input(tmp_path, capsys):
    cfg = tmp_path / "tiny-res2net.cfg"
    cfg.write_bytes(TINY_RES2NET.read_bytes())
    Darknet(cfg).save_weights(tmp_path / "w.weights")
    code = main.main(["export", "--cfg", str(cfg), "--weights", str(tmp_path / "w.weights"),
                      "--format", "darknet", "--out", str(tmp_path)])
    assert code == 2 and "would overwrite the input" in capsys.readouterr().err
    assert cfg.read_bytes() == TINY_RES2NET.read_bytes()
