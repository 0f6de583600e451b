"""Model building: the seed's architecture tables, output layout, and `main.py info`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from darknet import Darknet, infer_shapes, parse_cfg

FULL_RES2NET = ["res2net-yolov3.cfg", "res2net-yolov3-triangle.cfg"]


@pytest.mark.parametrize("name", FULL_RES2NET + ["yolov3.cfg"])
def test_heads_at_608_are_19_38_76_by_255(name):
    shapes = infer_shapes(parse_cfg(ROOT / "cfgs" / name), 608, 608)
    heads = [(s.out.c, s.out.h, s.out.w) for s in shapes if s.kind == "yolo"]
    assert heads == [(255, 19, 19), (255, 38, 38), (255, 76, 76)]
    assert [s.stride for s in shapes if s.kind == "yolo"] == [32, 16, 8]


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_RES2NET)
def test_full_res2net_cfgs_run_at_reduced_size(name):
    model = Darknet(ROOT / "cfgs" / name).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 96, 96))  # grids 3, 6, 12 (= /32, /16, /8)
    assert [tuple(o.shape) for o in outs] == [(1, 3 * 9, 85), (1, 3 * 36, 85), (1, 3 * 144, 85)]
    model.train()
    raw = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in raw] == [(2, 3, 2, 2, 85), (2, 3, 4, 4, 85), (2, 3, 8, 8, 85)]


def test_seed_table_blocks():
    """Section 3: one Res2Net block per Darknet-53 residual unit (1, 2, 8, 8, 4)."""
    cfg = parse_cfg(ROOT / "cfgs" / "res2net-yolov3.cfg")
    kinds = [s.kind for s in cfg.layers]
    assert kinds.count("res2net") == 23 and "shortcut" not in kinds
    assert kinds.count("triangle") == 0
    tri = [s.kind for s in parse_cfg(ROOT / "cfgs" / "res2net-yolov3-triangle.cfg").layers]
    assert tri.count("triangle") == 6 and tri.count("res2net") == 23


@pytest.mark.parametrize("name", ["yolov3-tiny.cfg",
                                  pytest.param("yolov3-spp.cfg", marks=pytest.mark.slow)])
def test_official_variants_forward(name):
    model = Darknet(ROOT / "tests" / "data" / "darknet" / name).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    grids = [o.shape[1] // 3 for o in outs]
    expected = {"yolov3-tiny.cfg": [4, 16], "yolov3-spp.cfg": [4, 16, 64]}[name]
    assert grids == expected


def test_eval_decoding_follows_the_documented_layout():
    """Zero logits decode to cell centres, the anchors' sizes and probability 0.5."""
    model = Darknet(ROOT / "tests" / "cfgs" / "tiny-res2net.cfg").eval()
    for layer in model.layers:
        for conv, bn in layer.conv_bn_pairs():
            if bn is None:  # the detector convs in front of [yolo]
                torch.nn.init.zeros_(conv.weight)
                torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        coarse, fine = model(torch.randn(1, 3, 64, 64))
    # coarse head: stride 8 on a 64 px input -> 8x8 cells, anchors 3..5 of the cfg
    boxes = coarse.view(1, 3, 8, 8, 7)
    assert torch.allclose(boxes[0, 0, 2, 5, :2], torch.tensor([5.5 * 8, 2.5 * 8]))
    assert torch.allclose(boxes[0, :, 0, 0, 2:4], torch.tensor([[16.0, 18], [24, 30], [40, 36]]))
    assert torch.allclose(boxes[..., 4:], torch.full_like(boxes[..., 4:], 0.5))
    assert fine.shape == (1, 3 * 16 * 16, 7)


@pytest.mark.slow
def test_layer_outputs_kept_only_where_needed():
    model = Darknet(ROOT / "cfgs" / "yolov3.cfg")
    assert 61 in model._saved and 36 in model._saved
    assert len(model._saved) < 30


def run_info(*args):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "info", *args],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.e2e
def test_info_json_reports_params_gflops_outputs():
    proc = run_info("--cfg", "cfgs/demo.cfg", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    model = Darknet(ROOT / "cfgs" / "demo.cfg")
    assert data["params"] == sum(p.numel() for p in model.parameters())
    assert data["outputs"] == [[27, 4, 4], [27, 8, 8], [27, 16, 16]]
    assert isinstance(data["gflops"], float) and data["gflops"] > 0
    assert sum(r["params"] for r in data["layers"]) == data["params"]


@pytest.mark.e2e
def test_info_gflops_scale_with_input_area():
    small = json.loads(run_info("--cfg", "cfgs/demo.cfg", "--json", "--img-size", "128").stdout)
    big = json.loads(run_info("--cfg", "cfgs/demo.cfg", "--json", "--img-size", "256").stdout)
    assert big["gflops"] == pytest.approx(4 * small["gflops"], rel=1e-6)


@pytest.mark.e2e
def test_info_table_and_bad_size():
    proc = run_info("--cfg", "tests/cfgs/tiny-darknet.cfg")
    assert proc.returncode == 0 and "maxpool" in proc.stdout and "params:" in proc.stdout
    bad = run_info("--cfg", "tests/cfgs/tiny-darknet.cfg", "--img-size", "100")
    assert bad.returncode == 2 and "multiple of 32, got 100" in bad.stderr


def test_raw_forward_in_eval_mode_equals_training_layout():
    model = Darknet(ROOT / "tests" / "cfgs" / "tiny-res2net.cfg").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw = model(x, raw=True)
        decoded = model(x)
    assert [tuple(r.shape) for r in raw] == [(1, 3, 8, 8, 7), (1, 3, 16, 16, 7)]
    assert torch.allclose(raw[0][..., 4:].sigmoid().flatten(), decoded[0][..., 4:].flatten())
