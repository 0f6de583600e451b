"""Property: for random small cfgs, prune -> write -> reload keeps the contract.

Channels: the reloaded model equals the masked dense model. Blocks (``--layers``, with or
without channels): it equals the dense model with the removed blocks' pre-add BN zeroed.

Cfgs mix conv (with and without BN, 1x1/3x3, stride 1/2), [res2net], [triangle], [shortcut],
Darknet residual units (1x1, kxk, ``[shortcut] from=-3``), [route] (concat and
groups/group_id), [upsample], [maxpool] and [yolo] heads. Each example is
pruned at a random ratio/scope/floor/rounding, written, reloaded through ``Darknet(...)``,
and the reloaded model must equal the masked dense model (removed betas zero).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
import torch
from helpers import (
    assert_outputs_close,
    assert_same_outputs,
    calibrate,
    randomize_bn,
    raw,
    removed_masks,
    spread_gammas,
    zero_blocks,
    zero_channels,
)
from hypothesis import HealthCheck, given, settings

from darknet import Darknet, parse_cfg_text
from prune import PruneError, PruneSettings, analyze, prune_model, write_pruned
from prune.blocks import find_blocks

IMG = 16
HEAD = 18  # 3 anchors x (1 class + 5)


@dataclass
class Out:
    c: int
    h: int
    yolo: bool = False  # a [yolo] layer's output is boxes, not channels: nothing reads it


def _head(lines: list[str], outs: list[Out]) -> None:
    lines += ["[convolutional]", "size=1", f"filters={HEAD}", "activation=linear", "",
              "[yolo]", "mask=0,1,2", "anchors=2,3, 4,5, 6,7", "classes=1", "num=3", ""]
    outs += [Out(HEAD, outs[-1].h), Out(HEAD, outs[-1].h, yolo=True)]


KINDS = ("conv", "conv", "res2net", "triangle", "shortcut", "unit", "route", "route_groups",
         "upsample", "maxpool", "yolo")


def written_and_reloaded(slim: Darknet, report) -> Darknet:
    """``slim`` through pruned.cfg / pruned.weights and back."""
    with tempfile.TemporaryDirectory() as tmp:
        files = write_pruned(slim, report, tmp)
        reloaded = Darknet(files.cfg)
        reloaded.load_weights(files.weights)
    return reloaded


@st.composite
def random_cfgs(draw, kinds: tuple[str, ...] = KINDS) -> str:
    """A random cfg text, its layers drawn from ``kinds`` (a kind twice: twice as likely)."""
    lines = ["[net]", f"width={IMG}", f"height={IMG}", "channels=3", ""]
    outs: list[Out] = []

    def conv(filters, size, stride, bn, act):
        lines.extend(["[convolutional]", f"batch_normalize={int(bn)}", f"filters={filters}",
                      f"size={size}", f"stride={stride}", "pad=1", f"activation={act}", ""])
        h = outs[-1].h if outs else IMG
        outs.append(Out(filters, (h + 2 * (size // 2) - size) // stride + 1))

    conv(draw(st.integers(2, 8)), 3, 1, True, "leaky")
    for _ in range(draw(st.integers(2, 9))):
        if outs[-1].yolo:  # as in Darknet: a route back into the network
            back = draw(st.sampled_from([i for i, o in enumerate(outs) if not o.yolo]))
            lines += ["[route]", f"layers={back}", ""]
            outs.append(outs[back])
        last = outs[-1]
        kind = draw(st.sampled_from(kinds))
        same_h = [i for i, o in enumerate(outs) if o.h == last.h and not o.yolo]
        if kind == "conv":
            stride = draw(st.sampled_from([1, 2])) if last.h >= 4 else 1
            conv(draw(st.integers(1, 10)), draw(st.sampled_from([1, 3])), stride,
                 draw(st.booleans()) or draw(st.booleans()), draw(st.sampled_from(["leaky",
                                                                                  "linear"])))
        elif kind in ("res2net", "triangle"):
            width, scale = draw(st.integers(1, 3)), draw(st.integers(1, 4))
            lines += [f"[{kind}]", f"width={width}", f"scale={scale}", ""]
            outs.append(Out(last.c if kind == "res2net" else width * scale, last.h))
        elif kind == "unit":  # squeeze, back to the width, add (linear: a removable unit)
            conv(draw(st.integers(1, 6)), 1, 1, True, "leaky")
            conv(last.c, draw(st.sampled_from([1, 3])), 1, True, "leaky")
            act = draw(st.sampled_from(["linear", "linear", "leaky"]))
            lines += ["[shortcut]", "from=-3", f"activation={act}", ""]
            outs.append(last)
        elif kind == "shortcut":
            mates = [i for i in same_h[:-1] if outs[i].c == last.c]
            if not mates:
                continue
            act = draw(st.sampled_from(["linear", "leaky"]))
            lines += ["[shortcut]", f"from={draw(st.sampled_from(mates))}",
                      f"activation={act}", ""]
            outs.append(last)
        elif kind == "route":
            picks = draw(st.lists(st.sampled_from(same_h), min_size=1, max_size=3))
            lines += ["[route]", "layers=" + ",".join(map(str, picks)), ""]
            outs.append(Out(sum(outs[i].c for i in picks), last.h))
        elif kind == "route_groups":
            even = [i for i in same_h if outs[i].c % 2 == 0]
            if not even:
                continue
            pick = draw(st.sampled_from(even))
            lines += ["[route]", f"layers={pick}", "groups=2",
                      f"group_id={draw(st.integers(0, 1))}", ""]
            outs.append(Out(outs[pick].c // 2, last.h))
        elif kind == "upsample":
            if last.h > IMG:
                continue
            lines += ["[upsample]", "stride=2", ""]
            outs.append(Out(last.c, last.h * 2))
        elif kind == "maxpool":
            if draw(st.booleans()) and last.h >= 2 and last.h % 2 == 0:
                lines += ["[maxpool]", "size=2", "stride=2", ""]
                outs.append(Out(last.c, last.h // 2))
            else:
                lines += ["[maxpool]", "size=3", "stride=1", ""]
                outs.append(last)
        else:
            _head(lines, outs)
    if not outs[-1].yolo:
        _head(lines, outs)
    return "\n".join(lines)


@pytest.mark.slow  # 25 random models pruned, written (with the chart), reloaded
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=random_cfgs(), seed=st.integers(0, 2**16), ratio=st.floats(0.0, 0.9),
       scope=st.sampled_from(["all", "inner"]), min_keep=st.sampled_from(["0.1", "1", "2"]),
       round_to=st.sampled_from([1, 1, 2]))
def test_prune_write_reload_equals_masked(text, seed, ratio, scope, min_keep, round_to):
    cfg = parse_cfg_text(text, "random.cfg")
    torch.manual_seed(seed)
    model = spread_gammas(randomize_bn(Darknet(cfg), seed), seed).eval()
    chosen = PruneSettings(ratio=ratio, scope=scope, min_keep=min_keep, round_to=round_to)
    if not analyze(cfg).prunable(scope).any():
        try:
            prune_model(model, chosen)
        except PruneError as e:
            assert "nothing to prune" in str(e)
            return
        raise AssertionError("expected PruneError for a cfg with nothing to prune")

    _, first = prune_model(model, chosen)
    with torch.no_grad():
        for bn, mask in removed_masks(model, first.kept):
            bn.bias[mask] = 0
    slim, report = prune_model(model, chosen)
    assert report.kept == first.kept
    reloaded = written_and_reloaded(slim, report)
    # Compared in float64: the written float32 values, computed exactly.
    x = torch.randn(2, 3, IMG, IMG, dtype=torch.float64)
    out = raw(reloaded.double(), x)
    with torch.no_grad():
        for bn, mask in removed_masks(model, report.kept):
            bn.weight[mask] = 0
    assert_outputs_close(out, raw(model.double(), x))
    # The plan itself: every BN keeps something; the slim model is no bigger.
    assert all(len(idx) > 0 for idx in report.kept.values())
    assert report.params_after <= report.params_before


# Blocks and the routes and shortcuts that read them, more often than above.
BLOCK_KINDS = ("conv", "res2net", "res2net", "unit", "unit", "route", "shortcut", "upsample",
               "maxpool", "yolo")


def _prune_blocks_and_channels(model, layers, ratio):
    try:
        return prune_model(model, PruneSettings(ratio, layers=layers))
    except PruneError as e:  # the blocks took the last prunable channels with them
        assert "nothing to prune" in str(e)
        return prune_model(model, PruneSettings(0.0, layers=layers))


@pytest.mark.slow  # 25 random models pruned, written (with the chart), reloaded
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=random_cfgs(BLOCK_KINDS), seed=st.integers(0, 2**16), data=st.data())
def test_layer_prune_write_reload_equals_zeroed_dense(text, seed, data):
    """Remove a random number of the blocks found (then maybe channels): the reloaded slim
    model equals the dense one with the removed blocks' pre-add BN and channels zeroed."""
    cfg = parse_cfg_text(text, "random.cfg")
    blocks = find_blocks(cfg)
    model = calibrate(spread_gammas(randomize_bn(Darknet(cfg), seed), seed), IMG, seed).eval()
    with pytest.raises(PruneError, match=f"--layers {len(blocks) + 1} is more than the "
                                         f"{len(blocks)} removable blocks"):
        prune_model(model, PruneSettings(0.0, layers=len(blocks) + 1))
    layers = data.draw(st.integers(0, len(blocks)), label="layers")
    ratio = data.draw(st.sampled_from([0.0, 0.0, 0.5]), label="ratio")

    _, first = _prune_blocks_and_channels(model, layers, ratio)
    zero_blocks(model, first)
    zero_channels(model, first.kept, "bias")
    slim, report = _prune_blocks_and_channels(model, layers, ratio)
    assert [b.layers for b in report.removed_blocks] == [b.layers for b in first.removed_blocks]
    assert report.kept == first.kept
    reloaded = written_and_reloaded(slim, report)
    x = torch.randn(2, 3, IMG, IMG)
    out = raw(reloaded, x)
    zero_channels(model, report.kept, "weight")
    assert_same_outputs(out, raw(model, x))
    removed = sum(len(b.layers) for b in report.removed_blocks)
    assert len(reloaded.cfg.layers) == len(cfg.layers) - removed
