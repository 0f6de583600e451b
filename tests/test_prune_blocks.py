"""Layer pruning: which blocks are removable, how they rank, and the cut's contract.

The contract (docs/pruning.md, "Removing whole blocks"): zeroing the gamma and beta of a
block's pre-add BN makes the block the identity, so the slim model must equal the dense model
with those BNs zeroed, and, with ``ratio`` too, with the removed channels zeroed as in
``test_prune_contract``. The removed blocks and channels are read from the report alone
(dense layer indices and BN names), so a wrong mapping back to the dense model fails these
tests too.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import (
    FULL_RES2NET,
    OFFICIAL_CFGS,
    ROOT,
    TINY_CFGS,
    YOLO_HEAD,
    assert_same_outputs,
    calibrate,
    randomize_bn,
    raw,
    set_gammas,
    spread_gammas,
    zero_blocks,
    zero_channels,
)

from darknet import Darknet, format_cfg, parse_cfg, parse_cfg_text
from prune import PruneError, PruneSettings, prune_model
from prune.block_cut import prune_blocks
from prune.blocks import RES2NET, UNIT, block_scores, find_blocks, select_blocks

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
YOLOV3, YOLOV3_SPP = OFFICIAL_CFGS[0], ROOT / "tests" / "data" / "darknet" / "yolov3-spp.cfg"
TOL = dict(atol=1e-5, rtol=1e-5)


def dense(path, seed=0, size=64) -> Darknet:
    """Random BN affines (half the gammas near zero), running statistics calibrated."""
    torch.manual_seed(seed)
    model = spread_gammas(randomize_bn(Darknet(path), seed), seed)
    return calibrate(model, size, seed).eval()


def check_block_contract(model: Darknet, x: torch.Tensor, layers: int, ratio: float = 0.0,
                         **kw):
    """Prune; zero what it removed (blocks: gamma, beta; channels: beta), prune again with the
    same plan, zero the removed channels' gammas: slim == the zeroed dense model. ``kw``:
    other :class:`PruneSettings` fields.

    Both sides run in float64 (``model`` is converted in place, and ``x``): what is compared is
    the cut, not float32 rounding through ~100 layers."""
    model.double()
    x = x.double()
    original = raw(model, x)
    _, first = prune_model(model, PruneSettings(ratio, layers=layers, **kw))
    zero_blocks(model, first)
    zero_channels(model, first.kept, "bias")
    slim, report = prune_model(model, PruneSettings(ratio, layers=layers, **kw))
    assert report.removed_blocks == tuple(replace(b, score=0.0) for b in first.removed_blocks)
    assert report.kept == first.kept
    zero_channels(model, report.kept, "weight")
    got = raw(slim, x)
    assert all(g.dtype == torch.float64 for g in got)
    assert_same_outputs(got, raw(model, x))
    moved = raw(slim, torch.rand_like(x))
    assert all((g - m).abs().max() > 1e-3 for g, m in zip(got, moved, strict=True))
    assert max((g - o).abs().max() for g, o in zip(got, original, strict=True)) > 1e-3
    return slim, report


# ---------------------------------------------------------------- which blocks

def test_darknet_cfgs_have_their_23_residual_units():
    for path in (YOLOV3, YOLOV3_SPP):
        cfg = parse_cfg(path)
        blocks = find_blocks(cfg)
        assert len(blocks) == path.read_text().count("from=-3") == 23
        for b in blocks:
            first, last = (cfg.layers[j] for j in b.layers[:2])
            assert b.kind == UNIT and b.layers == (b.layer - 2, b.layer - 1, b.layer)
            assert (first.size, last.size) == (1, 3)
            assert b.bn == f"layers.{b.layer - 1}.bn"


@pytest.mark.parametrize("path", [DEMO, TINY, *FULL_RES2NET], ids=lambda p: p.name)
def test_every_res2net_block_is_removable(path):
    cfg = parse_cfg(path)
    blocks = find_blocks(cfg)
    assert len(blocks) == len(re.findall(r"^\[res2net\]", path.read_text(), re.M))
    assert all(b.kind == RES2NET and b.layers == (b.layer,) and b.bn == f"layers.{b.layer}.bn3"
               for b in blocks)


def _conv(filters, size=1, bn=1, act="leaky") -> str:
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\npad=1\n"
            f"activation={act}\n\n")


def _shortcut(frm=-3, act="linear") -> str:
    return f"[shortcut]\nfrom={frm}\nactivation={act}\n\n"


NOT_BLOCKS = ("[net]\nwidth=16\nheight=16\nchannels=3\n\n[res2net]\nwidth=1\nscale=3\n\n"  # 0
              + _conv(8, 3)  # 1
              + "[res2net]\nwidth=2\nscale=4\n\n"  # 2: removable
              + _conv(4) + _conv(8, 3) + _shortcut()  # 3-5: removable unit
              + _conv(4) + _conv(8, 3) + _shortcut(act="leaky")  # 6-8: activation after add
              + _conv(4) + _conv(8, 3, bn=0) + _shortcut()  # 9-11: no gamma before the add
              + _conv(8) + _shortcut(-2)  # 12-13: one conv only
              + _conv(4) + _conv(8, 3) + _shortcut()  # 14-16: 14 is read by the route below
              + _conv(8) + "[route]\nlayers=-2\n\n" + _conv(8) + _shortcut()  # 17-20: a route
              + "[route]\nlayers=-1,14\n\n" + _conv(8) + _conv(4) + _conv(8, 3)  # 21-24
              + _shortcut()  # 25: removable
              + YOLO_HEAD)


def test_only_identity_residual_blocks_are_found():
    """A [res2net] on the image, a unit with a leaky add, without BN before the add, with one
    conv, with an inner conv read from outside, or with a route inside are not blocks."""
    cfg = parse_cfg_text(NOT_BLOCKS, "blocks.cfg")
    blocks = find_blocks(cfg)
    assert [(b.layer, b.layers, b.kind) for b in blocks] == [
        (2, (2,), RES2NET), (5, (3, 4, 5), UNIT), (25, (23, 24, 25), UNIT)]
    slim, report = prune_model(calibrate(Darknet(cfg), 16).eval(), PruneSettings(0.0, layers=3))
    assert len(slim.cfg.layers) == len(cfg.layers) - 7


# ---------------------------------------------------------------- how they rank

def test_score_is_the_mean_absolute_gamma_before_the_add():
    model = Darknet(parse_cfg_text(NOT_BLOCKS))
    blocks = find_blocks(model.cfg)
    values = torch.linspace(-2.0, 1.0, 8)
    set_gammas(model, {"layers.2.bn3": values.tolist(), "layers.3.bn": [-5.0] * 4,
                       "layers.24.bn": [0.25] * 8})
    scores = block_scores(model, blocks)
    assert scores.tolist() == pytest.approx([values.abs().mean().item(), 1.0, 0.25])
    # unit 3-5 scores its last conv (still at the initial gamma 1), not layers.3.bn


def test_selection_takes_the_lowest_scores_earlier_first_on_ties():
    scores = np.array([0.3, 0.1, 0.5, 0.1, 0.2])
    assert select_blocks(scores, 0).tolist() == []
    assert select_blocks(scores, 1).tolist() == [1]
    assert select_blocks(scores, 3).tolist() == [1, 3, 4]
    assert select_blocks(scores, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot select 6 of 5"):
        select_blocks(scores, 6)


def test_the_lowest_scored_blocks_go():
    model = dense(DEMO, size=128)
    gammas = {"layers.2.bn3": 0.9, "layers.4.bn3": 0.05, "layers.6.bn3": 0.8,
              "layers.7.bn3": 0.04, "layers.9.bn3": 0.7, "layers.10.bn3": 0.6,
              "layers.12.bn3": 0.06}
    modules = dict(model.named_modules())
    set_gammas(model, {n: [g] * modules[n].num_features for n, g in gammas.items()})
    _, report = prune_model(model, PruneSettings(0.0, layers=3))
    assert [b.layer for b in report.removed_blocks] == [4, 7, 12]
    assert [b.score for b in report.removed_blocks] == pytest.approx([0.05, 0.04, 0.06])


# ---------------------------------------------------------------- slim == zeroed dense

CONTRACT = [(DEMO, 3, 128), (TINY, 2, 64)]
SLOW_CONTRACT = [(YOLOV3, 8, 64), (YOLOV3_SPP, 8, 64), *((p, 8, 64) for p in FULL_RES2NET)]


@pytest.mark.parametrize("path,layers,size", CONTRACT, ids=lambda v: str(getattr(v, "name", v)))
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_slim_equals_dense_with_removed_blocks_zeroed(path, layers, size, ratio):
    model = dense(path, size=size)
    slim, report = check_block_contract(model, torch.rand(2, 3, size, size), layers, ratio)
    assert len(report.removed_blocks) == layers
    gone = {j for b in report.removed_blocks for j in b.layers}
    assert len(slim.cfg.layers) == len(model.cfg.layers) - len(gone)
    assert not any(name.startswith(tuple(f"layers.{j}." for j in gone)) for name in report.kept)


@pytest.mark.slow
@pytest.mark.parametrize("path,layers,size", SLOW_CONTRACT,
                         ids=lambda v: str(getattr(v, "name", v)))
def test_slim_equals_dense_with_removed_blocks_zeroed_full_size(path, layers, size):
    model = dense(path, size=size)
    x = torch.rand(1, 3, size, size)
    check_block_contract(copy.deepcopy(model), x, layers)
    slim, report = check_block_contract(model, x, layers, 0.5)
    assert report.removed_channels > 0.45 * report.prunable_channels


def test_tiny_darknet_has_no_block_to_remove():
    model = dense(TINY_CFGS[0])
    with pytest.raises(PruneError, match=r"--layers 1 is more than the 0 removable blocks of "
                                         r".*tiny-darknet.cfg"):
        prune_model(model, PruneSettings(0.5, layers=1))


def test_more_layers_than_blocks_names_both_numbers():
    with pytest.raises(PruneError, match=r"--layers 8 is more than the 7 removable blocks"):
        prune_model(Darknet(DEMO), PruneSettings(0.0, layers=8))
    with pytest.raises(PruneError, match=r"--layers must be a whole number >= 0 or auto, got -1"):
        prune_model(Darknet(DEMO), PruneSettings(0.5, layers=-1))


def test_layers_zero_is_the_channel_pruner_alone():
    model = dense(TINY, seed=3)
    assert prune_blocks(model, 0).model is model
    slim, report = prune_model(model, PruneSettings(0.5, layers=0))
    again, plain = prune_model(model, PruneSettings(0.5))
    assert report.removed_blocks == () and report.removable_blocks == 3
    assert report == plain
    for (k, v), (k2, v2) in zip(slim.state_dict().items(), again.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert len(slim.cfg.layers) == len(model.cfg.layers)


def test_every_block_of_a_stage_goes_and_the_route_reads_the_stage_conv():
    """The demo's third stage is a stride-2 conv (layer 8) and blocks 9, 10; the route at 22
    read block 10 and must now read the stage conv, still at index 8."""
    model = dense(DEMO, size=128)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in ("layers.9.bn3", "layers.10.bn3"):
            modules[name].weight.mul_(1e-3)
    route = model.cfg.layers[22]
    assert route.layers == (21, 10)
    slim, report = check_block_contract(model, torch.rand(2, 3, 128, 128), 2)
    assert [b.layer for b in report.removed_blocks] == [9, 10]
    assert slim.cfg.layers[20].layers == (19, 8)
    assert "layers=-1, 8" in format_cfg(slim.cfg)


UNIT_STAGE = ("[net]\nwidth=32\nheight=32\nchannels=3\n\n" + _conv(8, 3)  # 0
              + "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=2\npad=1\n"
                "activation=leaky\n\n"  # 1: the stage conv
              + (_conv(8) + _conv(16, 3) + _shortcut()) * 2  # 2-4, 5-7: the stage's units
              + _conv(16, 3) + YOLO_HEAD  # 8-10
              + "\n[route]\nlayers=7\n\n" + YOLO_HEAD)  # 11-13


def test_every_unit_of_a_stage_goes_and_the_route_reads_the_stage_conv():
    model = dense(parse_cfg_text(UNIT_STAGE, "units.cfg"), size=32)
    slim, report = check_block_contract(model, torch.rand(2, 3, 32, 32), 2)
    assert [b.layers for b in report.removed_blocks] == [(2, 3, 4), (5, 6, 7)]
    assert slim.cfg.layers[5].layers == (1,) and "layers=1\n" in format_cfg(slim.cfg)


# ---------------------------------------------------------------- the fold

FOLD_CFG = ("[net]\nwidth=32\nheight=32\nchannels=3\n\n"
            + _conv(8, 3)  # 0 (reads the image)
            + "[res2net]\nwidth=2\nscale=4\n\n"  # 1 A: removed
            + "[res2net]\nwidth=2\nscale=4\n\n"  # 2 B: kept; conv1 absorbs A's constant
            + _conv(4) + _conv(8, 3) + _shortcut()  # 3-5 C: removed
            + "[maxpool]\nsize=2\nstride=2\n\n"  # 6
            + "[res2net]\nwidth=2\nscale=4\n\n"  # 7 D: removed
            + "[upsample]\nstride=2\n\n"  # 8
            + "[route]\nlayers=-1, 5\n\n"  # 9: A+C (via D) and A+C
            + _conv(8)  # 10
            + "[route]\nlayers=7\ngroups=2\ngroup_id=1\n\n"  # 11: half of A+C+D
            + "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=2\nstride=2\npad=0\n"
              "activation=leaky\n\n"  # 12: 2x2 unpadded
            + "[route]\nlayers=5, 10\n\n[convolutional]\nfilters=8\nsize=1\nstride=4\n"
              "activation=leaky\n\n"  # 13-14: 1x1 with a bias
            + "[route]\nlayers=-1, 12\n\n"  # 15
            + YOLO_HEAD)


def _weak_blocks(model: Darknet, names: tuple[str, ...]) -> Darknet:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            modules[name].weight.zero_()
            modules[name].bias.copy_(torch.linspace(-0.8, 0.6, modules[name].num_features))
    return model


def test_fold_is_exact_where_every_reader_is_1x1_or_unpadded():
    """Gammas zeroed, betas kept: the removed branches add beta (leaky(beta) for the unit)
    through residual adds, maxpool, upsample, routes and a split; folding them into the
    readers makes slim == dense, and without the fold the outputs differ."""
    cfg = parse_cfg_text(FOLD_CFG, "fold.cfg")
    model = _weak_blocks(calibrate(Darknet(cfg), 32, 1).eval(),
                         ("layers.1.bn3", "layers.4.bn", "layers.7.bn3"))
    x = torch.rand(2, 3, 32, 32)
    slim, report = prune_model(model, PruneSettings(0.0, layers=3))
    assert [b.layer for b in report.removed_blocks] == [1, 5, 7]
    assert_same_outputs(raw(slim, x), raw(model, x))
    assert {n.conv for n in report.block_folds} == {
        "layers.2.conv1", "layers.10.conv", "layers.12.conv", "layers.14.conv"}
    assert all(n.exact for n in report.block_folds) and not report.block_unfolded
    unfolded, _ = prune_model(model, PruneSettings(0.0, layers=3, fold=False))
    error = max((u - v).abs().max() for u, v in zip(raw(unfolded, x), raw(model, x),
                                                    strict=True))
    assert error > 1e-2


def test_fold_notes_name_the_padded_readers():
    """Tiny-res2net without its three blocks: block 2's constant reaches the 3x3 stride-2
    conv 3; blocks 4 and 5 reach the 3x3 conv 6 and, through a route, the 1x1 conv1 of the
    triangle at 14. The fold still beats no fold at a realistic input size."""
    model = _weak_blocks(dense(TINY, seed=2), ("layers.2.bn3", "layers.4.bn3", "layers.5.bn3"))
    slim, report = prune_model(model, PruneSettings(0.0, layers=3))
    notes = {n.conv: n.exact for n in report.block_folds}
    assert notes == {"layers.3.conv": False, "layers.6.conv": False, "layers.14.conv1": True}
    x = torch.rand(1, 3, 256, 256)
    reference = raw(model, x)
    unfolded, _ = prune_model(model, PruneSettings(0.0, layers=3, fold=False))

    def error(m):
        return max((u - v).abs().max() for u, v in zip(raw(m, x), reference, strict=True))

    assert error(slim) < 0.5 * error(unfolded)


def test_an_offset_is_not_folded_past_a_nonlinear_add():
    text = ("[net]\nwidth=16\nheight=16\nchannels=3\n\n" + _conv(8, 3)
            + "[res2net]\nwidth=2\nscale=4\n\n" + _conv(8) + _shortcut(-2, "leaky")
            + YOLO_HEAD)
    model = _weak_blocks(calibrate(Darknet(parse_cfg_text(text)), 16).eval(),
                         ("layers.1.bn3",))
    _, report = prune_model(model, PruneSettings(0.0, layers=1))
    assert [n.conv for n in report.block_folds] == ["layers.2.conv"]
    assert [n.where for n in report.block_unfolded] == ["layer 3: an add with activation=leaky"]
