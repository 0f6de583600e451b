"""Rewriting cfgs (darknet.edit): renumbered references, identity drops, replacements."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import OFFICIAL_CFGS, PROJECT_CFGS, TINY_CFGS, randomize_bn

from darknet import CfgError, Darknet, format_cfg, parse_cfg, parse_cfg_text
from darknet.edit import remove_layers, rewrite
from darknet.sections import ConvSection, Res2NetSection, RouteSection

TINY = next(p for p in TINY_CFGS if p.name == "tiny-res2net.cfg")


@pytest.mark.parametrize("path", sorted(set(PROJECT_CFGS + TINY_CFGS + OFFICIAL_CFGS)),
                         ids=lambda p: p.name)
def test_keeping_every_layer_gives_back_the_same_cfg_text(path):
    cfg = parse_cfg(path)
    again = rewrite(cfg, lambda rw, s: rw.keep(s))
    assert again == cfg
    assert format_cfg(again) == format_cfg(cfg)


def _copy_kept_layers(dense: Darknet, slim: Darknet, removed: set[int]) -> None:
    kept = [i for i in range(len(dense.layers)) if i not in removed]
    for new, old in enumerate(kept):
        slim.layers[new].load_state_dict(dense.layers[old].state_dict())


def test_dropping_identity_blocks_renumbers_routes_and_keeps_the_function():
    cfg = parse_cfg(TINY)
    blocks = {4, 5}  # two [res2net] blocks; the route at layer 13 reads layer 5
    assert all(isinstance(cfg.layers[i], Res2NetSection) for i in blocks)
    slim_cfg = remove_layers(cfg, blocks)
    assert len(slim_cfg.layers) == len(cfg.layers) - 2
    route = slim_cfg.layers[11]  # was layer 13: layers=-1, 5
    assert isinstance(route, RouteSection) and route.layers == (10, 3)
    assert "layers=-1, 3" in format_cfg(slim_cfg)  # absolute refs stay absolute, renumbered
    assert parse_cfg_text(format_cfg(slim_cfg)) == slim_cfg

    torch.manual_seed(0)
    dense = randomize_bn(Darknet(cfg)).eval()
    with torch.no_grad():  # zeroed bn3 makes each block exactly the identity
        for i in blocks:
            dense.layers[i].bn3.weight.zero_()
            dense.layers[i].bn3.bias.zero_()
    slim = Darknet(slim_cfg).eval()
    _copy_kept_layers(dense, slim, blocks)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want, got = dense(x, raw=True), slim(x, raw=True)
        other = slim(torch.rand(2, 3, 64, 64), raw=True)
    for w, g, o in zip(want, got, other, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
        assert (o - g).abs().max() > 1e-3  # the outputs depend on the input


def test_a_layer_replaced_by_several_is_read_through_its_last():
    cfg = parse_cfg(TINY)

    def widen(rw, s):
        if s.index == 3:  # the stride-2 conv before the second stage: conv, then identity route
            conv = rw.emit(s)
            rw.emit(RouteSection(layers=(conv,), relative=(True,)))
        else:
            rw.keep(s)

    new = rewrite(cfg, widen)
    assert len(new.layers) == len(cfg.layers) + 1
    assert isinstance(new.layers[4], RouteSection) and new.layers[4].layers == (3,)
    assert new.layers[14].layers == (13, 6)  # was layers=-1, 5: layer 5 moved to 6
    torch.manual_seed(0)
    dense = randomize_bn(Darknet(cfg)).eval()
    slim = Darknet(new).eval()
    for new_i, old_i in [(i if i <= 3 else i + 1, i) for i in range(len(cfg.layers))]:
        slim.layers[new_i].load_state_dict(dense.layers[old_i].state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for w, g in zip(dense(x, raw=True), slim(x, raw=True), strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_a_reference_that_would_point_at_the_image_is_refused():
    text = """[net]
width=32
height=32
channels=3

[convolutional]
filters=4
size=1
activation=leaky

[route]
layers=0
"""
    cfg = parse_cfg_text(text, "x.cfg")
    with pytest.raises(CfgError, match=r"x.cfg:\d+: \[route\] reads layer 0, which now stands"):
        remove_layers(cfg, {0})


def test_a_miswired_rewrite_is_caught_by_shape_inference():
    cfg = parse_cfg(TINY)

    def bad(rw, s):
        if isinstance(s, ConvSection) and s.index == 3:
            rw.emit(dataclasses.replace(s, filters=s.filters + 1))  # the res2net after breaks
        else:
            rw.keep(s)

    with pytest.raises(CfgError):
        rewrite(cfg, bad)
