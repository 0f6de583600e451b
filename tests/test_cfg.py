"""Cfg parsing and writing: round trips, official files, and bad input with file:line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from helpers import OFFICIAL_CFGS, PROJECT_CFGS, ROOT, TINY_CFGS, sized

from darknet import CfgError, Darknet, format_cfg, parse_cfg, parse_cfg_text
from darknet.sections import SECTION_TYPES, RouteSection, YoloSection

ALL_CFGS = sorted(set(PROJECT_CFGS + TINY_CFGS + OFFICIAL_CFGS))


@pytest.mark.parametrize("path", ALL_CFGS, ids=lambda p: p.name)
def test_round_trip_gives_the_same_network(path):
    cfg = parse_cfg(path)
    text = format_cfg(cfg)
    again = parse_cfg_text(text, "rewritten.cfg")
    assert again == cfg
    assert format_cfg(again) == text  # writing is stable


def test_uninterpreted_darknet_keys_survive_round_trip():
    cfg = parse_cfg(ROOT / "cfgs" / "yolov3.cfg")
    yolo = next(s for s in cfg.layers if isinstance(s, YoloSection))
    assert dict(yolo.extra) == {"jitter": ".3", "truth_thresh": "1", "random": "1"}
    assert yolo.ignore_thresh == pytest.approx(0.7)
    net = dict(parse_cfg_text(format_cfg(cfg)).net.extra)
    assert net["steps"] == "400000,450000" and net["hue"] == ".1"


def test_scale_x_y_is_interpreted_and_written_back():
    cfg = parse_cfg(ROOT / "tests" / "data" / "darknet" / "yolov4-tiny.cfg")
    yolo = next(s for s in cfg.layers if isinstance(s, YoloSection))
    assert yolo.scale_x_y == pytest.approx(1.05) and yolo.new_coords == 0
    assert "scale_x_y" not in dict(yolo.extra)
    assert format_cfg(cfg).count("scale_x_y=1.05\n") == 2
    plain = parse_cfg(ROOT / "cfgs" / "yolov3.cfg")
    assert "scale_x_y" not in format_cfg(plain)  # the default stays implicit


def test_relative_route_indices_are_resolved_and_written_back_relative():
    cfg = parse_cfg(ROOT / "cfgs" / "yolov3.cfg")
    routes = [s for s in cfg.layers if isinstance(s, RouteSection)]
    assert routes[0].layers == (routes[0].index - 4,)
    assert routes[1].layers == (routes[1].index - 1, 61)
    assert "layers=-1, 61" in format_cfg(cfg)


@pytest.mark.parametrize("path", sized(OFFICIAL_CFGS))
def test_official_darknet_cfgs_build(path):
    model = Darknet(path)
    assert len(model.yolo_layers) in (2, 3)
    assert model.num_classes == 80


@pytest.mark.slow
def test_yolov3_has_the_published_parameter_count():
    model = Darknet(ROOT / "cfgs" / "yolov3.cfg")
    assert sum(p.numel() for p in model.parameters()) == 61_949_149


def test_every_section_type_is_fully_registered():
    from darknet.layers import BUILDERS
    from darknet.shapes import SHAPE_RULES

    for kind, cls in SECTION_TYPES.items():
        if kind == "net":
            continue
        assert cls in BUILDERS, kind
        assert cls in SHAPE_RULES, kind
        assert hasattr(BUILDERS[cls], "conv_bn_pairs"), kind
        assert cls.REFS is None or cls.REFS in {f.name for f in dataclasses.fields(cls)}, kind


def test_sections_declare_what_they_read():
    cfg = parse_cfg(ROOT / "cfgs" / "yolov3.cfg")
    first, shortcut = cfg.layers[0], cfg.layers[4]
    route = next(s for s in cfg.layers if isinstance(s, RouteSection) and len(s.layers) == 2)
    assert first.sources == (-1,)  # the image
    assert shortcut.sources == (3, 1) and shortcut.refs == (1,)
    assert route.sources == route.layers == (route.index - 1, 61)  # a route reads only layers=
    heads = [s.index for s in cfg.layers if s.HEAD]
    assert heads == [s.index for s in cfg.layers if isinstance(s, YoloSection)] == [82, 94, 106]


BASE = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky
"""

BAD_CASES = [
    # (text appended to BASE, expected message, line)
    ("\n[convolutinal]\nfilters=8\n", r"unknown section \[convolutinal\] \(did you mean "
     r"'convolutional'\?\)", 14),
    ("\n[convolutional]\nfilter=8\n", r"unknown key 'filter' \(did you mean 'filters'\?\)", 15),
    ("\n[convolutional]\nfilters=eight\n", r"bad value filters='eight'", 15),
    ("\n[convolutional]\nfilters=8\nactivation=leaky_relu\n", r"expected one of", 16),
    ("\n[route]\nlayers=-3\n", r"layers=-3 is out of range: layer 1 can only refer to "
     r"layers 0..0", 14),
    ("\n[route]\nlayers=5\n", r"layers=5 is out of range", 14),
    ("\n[convolutional]\nfilters=8\nsize=1\n\n[shortcut]\nfrom=-2\n",
     r"channel mismatch at shortcut: layer 1 has 8 channels, layer 0 \(from\) has 16", 18),
    ("\n[shortcut]\nfrom=-5\n", r"from=-5 is out of range", 14),
    ("\n[convolutional]\nfilters=20\nsize=1\n\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\n"
     "classes=2\nnum=3\n", r"expects 3 anchors x \(2 classes \+ 5\) = 21 channels from "
     r"layer 1, which has 20", 18),
    ("\n[convolutional]\nfilters=21\nsize=1\n\n[yolo]\nmask=0,1,5\nanchors=1,2,3,4,5,6\n"
     "classes=2\nnum=3\n", r"mask index 5 is outside 0..num-1", 18),
    ("\n[convolutional]\nfilters=21\nsize=1\n\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5\n"
     "classes=2\nnum=3\n", r"num=3 needs 6 anchor values, got 5", 18),
    ("\n[convolutional]\nfilters=21\nsize=1\n\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\n"
     "classes=2\nnum=3\nscale_x_y=0\n", r"scale_x_y must be > 0, got 0.0", 18),
    ("\n[res2net]\nplanes=4\n", r"planes=4 gives 8 output channels, but the identity residual",
     14),
    ("\n[res2net]\ninplanes=32\n", r"inplanes=32 but its input has 16 channels", 14),
    ("\n[triangle]\nplanes=2\n", r"group width is 0; set width= explicitly", 14),
]


@pytest.mark.parametrize("tail,message,line", BAD_CASES)
def test_bad_cfg_is_reported_with_file_and_line(tmp_path, tail, message, line):
    path = tmp_path / "bad.cfg"
    path.write_text(BASE + tail)
    with pytest.raises(CfgError, match=rf"bad\.cfg:{line}: .*{message}"):
        Darknet(path)


@pytest.mark.parametrize("tail,message,line", BAD_CASES[:1] + BAD_CASES[6:7])
@pytest.mark.e2e
def test_cli_reports_bad_cfg_in_one_line_with_exit_2(tmp_path, tail, message, line):
    path = tmp_path / "bad.cfg"
    path.write_text(BASE + tail)
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "info", "--cfg", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"bad.cfg:{line}:" in lines[0]


def test_duplicate_key_and_missing_required_key(tmp_path):
    with pytest.raises(CfgError, match=r":16: \[convolutional\] key 'size' given twice"):
        parse_cfg_text(BASE + "\n[convolutional]\nsize=1\nsize=3\nfilters=2\n")
    with pytest.raises(CfgError, match=r":14: \[convolutional\] missing required key 'filters'"):
        parse_cfg_text(BASE + "\n[convolutional]\nsize=1\n")
    with pytest.raises(CfgError, match=r"the first section must be \[net\]"):
        parse_cfg_text("[convolutional]\nfilters=2\n")
