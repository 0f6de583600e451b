"""The pruning contract: the slim model computes what the masked dense model computes.

*Masked* means: the dense model with every removed channel's gamma set to zero at every
producer, the removed channels read from ``prune_report.json``'s ``kept`` map alone. Where
those channels' betas are zero as well, they emit exactly zero and the slim model must match
to float tolerance. Where betas are not zero, the slim model folds ``act(beta)`` into the
readers: exact for 1x1 / unpadded readers, close elsewhere.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import (
    FULL_RES2NET,
    TINY_CFGS,
    YOLO_HEAD,
    assert_outputs_close,
    randomize_bn,
    raw,
    removed_masks,
    set_gammas,
    spread_gammas,
)

from common.artefacts import PRUNED_CFG, PRUNED_WEIGHTS
from darknet import Darknet, parse_cfg_text
from prune import MinKeep, PruneSettings, analyze, prune_model, write_pruned
from prune.select import FloorNote

# ---------------------------------------------------------------- helpers (oracle side)


def masked(model: torch.nn.Module, kept: dict[str, list[int]]) -> torch.nn.Module:
    """The dense model with every removed channel's gamma zeroed (betas untouched)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for bn, mask in removed_masks(model, kept):
            bn.weight[mask] = 0
    return model


def dense(path, seed=0) -> Darknet:
    torch.manual_seed(seed)
    return spread_gammas(randomize_bn(Darknet(path), seed), seed).eval()


def by_gamma(ratio: float, **settings) -> PruneSettings:
    """Network slimming's plain ranking: the hand-made cases below reason in gammas alone."""
    return PruneSettings(ratio, flops_exponent=0.0, **settings)


def check_contract(model: Darknet, x: torch.Tensor, **prune_args):
    """Prune, zero the removed betas, prune again (same plan): slim == masked.

    Takes ``model`` over: it is converted to float64 (``x`` too, so what is compared is the
    cut, not float32 rounding), and its removed channels' betas, then gammas, are zeroed in
    place.
    """
    model.double()
    x = x.double()
    settings = PruneSettings(**prune_args)
    _, first = prune_model(model, settings)
    with torch.no_grad():
        for bn, mask in removed_masks(model, first.kept):
            bn.bias[mask] = 0
    slim, report = prune_model(model, settings)
    assert report.kept == first.kept  # betas do not enter the selection
    slim_out = raw(slim, x)
    with torch.no_grad():
        for bn, mask in removed_masks(model, report.kept):
            bn.weight[mask] = 0
    assert_outputs_close(slim_out, raw(model, x))
    return slim, report


# ---------------------------------------------------------------- slim == masked

@pytest.mark.parametrize("path", TINY_CFGS, ids=lambda p: p.name)
@pytest.mark.parametrize("ratio,scope", [(0.3, "all"), (0.5, "all"), (0.8, "all"),
                                         (0.6, "inner")])
def test_slim_equals_masked_tiny(path, ratio, scope):
    model = dense(path, seed=int(ratio * 10))
    slim, report = check_contract(model, torch.randn(2, 3, 64, 64), ratio=ratio, scope=scope)
    assert report.removed_channels > 0
    assert report.params_after < report.params_before


@pytest.mark.slow
@pytest.mark.parametrize("path", FULL_RES2NET, ids=lambda p: p.name)
def test_slim_equals_masked_full_res2net(path):
    model = dense(path)
    slim, report = check_contract(model, torch.randn(1, 3, 64, 64), ratio=0.5)
    # Residual chains and blocks really were cut.
    assert report.removed_channels >= 0.45 * report.prunable_channels
    widths = [(r.width_before, r.width_after) for r in report.layers if r.width_before]
    assert any(after < before for before, after in widths)
    chains = [r for r in report.layers if r.kind == "res2net"]
    assert any(r.out_after < r.out_before for r in chains)


def test_masking_is_what_makes_them_equal():
    """Non-vacuous: the slim model is far from the *unmasked* dense model."""
    model = dense(TINY_CFGS[1]).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    before = raw(model, x)
    slim, report = check_contract(model, x, ratio=0.5)
    diff = max((u - v).abs().max().item() for u, v in zip(raw(slim, x), before, strict=True))
    assert diff > 1e-2


# ---------------------------------------------------------------- folding act(beta)

FOLD_CFG = """
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=12
size=1
stride=2
activation=leaky

[convolutional]
batch_normalize=1
filters=12
size=1
activation=logistic

[shortcut]
from=-2
activation=leaky

[res2net]
width=3
scale=4

[route]
layers=-1
groups=2
group_id=0

[maxpool]
size=2
stride=2

[triangle]
width=4
scale=3

[upsample]
stride=2

[route]
layers=-1,-6

[convolutional]
batch_normalize=1
filters=10
size=1
activation=leaky

""" + YOLO_HEAD


def betas_zero_where_read_by_padded_kxk(model: Darknet) -> Darknet:
    """Zero the betas of every class a padded kxk conv reads; keep all other betas."""
    a = analyze(model.cfg)
    padded = {int(k) for c in a.graph.consumers if c.size > 1 and c.padding > 0
              for k in a.classes_of_tensor(c.input)}
    modules = dict(model.named_modules())
    with torch.no_grad():
        for s in a.graph.spaces:
            if s.bn is None:
                continue
            mask = torch.tensor([int(k) in padded for k in a.classes_of_space(s)])
            modules[s.bn].bias[mask] = 0
    return model


def test_fold_is_exact_for_1x1_readers(tmp_path):
    """Non-zero betas through shortcut(leaky), residual, split, route groups, maxpool,
    upsample, concat and a logistic activation: folding makes slim == masked."""
    cfg = parse_cfg_text(FOLD_CFG, "fold.cfg")
    weak = [1.0, 1e-3] * 6  # the residual chain's odd channels go
    model = set_gammas(randomize_bn(spread_gammas(Darknet(cfg), 3), 3),
                       {"layers.0.bn": weak, "layers.1.bn": weak, "layers.3.bn3": weak})
    model = betas_zero_where_read_by_padded_kxk(model)
    model.double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    slim, report = prune_model(model, by_gamma(0.5, min_keep=1))
    assert report.kept["layers.3.bn3"] == list(range(0, 12, 2))
    reference = raw(masked(model, report.kept), x)
    assert_outputs_close(raw(slim, x), reference)
    shifted = {n.conv for n in report.folds if n.max_shift > 1e-3}
    assert {"layers.3.conv1", "layers.3.conv3", "layers.6.conv1", "layers.9.conv"} <= shifted
    unfolded, _ = prune_model(model, by_gamma(0.5, min_keep=1, fold=False))
    error = max((u - v).abs().max().item() for u, v in zip(raw(unfolded, x), reference,
                                                           strict=True))
    assert error > 1e-3  # folding is what closes the gap


@pytest.mark.parametrize("path", TINY_CFGS, ids=lambda p: p.name)
def test_fold_reduces_the_error_with_3x3_readers(path):
    """All betas non-zero: 3x3 readers see the constant only inside the image, so the fold is
    approximate; it must still beat not folding, at a realistic input size."""
    model = dense(path, seed=5)
    x = torch.randn(1, 3, 256, 256)
    slim, report = prune_model(model, PruneSettings(0.5))
    unfolded, _ = prune_model(model, PruneSettings(0.5, fold=False))
    reference = raw(masked(model, report.kept), x)

    def error(m):
        return max((u - v).abs().max().item() for u, v in zip(raw(m, x), reference,
                                                              strict=True))

    assert error(slim) < 0.5 * error(unfolded)
    assert any(not n.exact for n in report.folds)


# ---------------------------------------------------------------- exact channel counts

BLOCK_CFG = """
[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=8
size=1
activation=leaky

[res2net]
width=4
scale=4

""" + YOLO_HEAD


def test_block_width_from_group_importances():
    """Coupled importances (mean of G_i and K_{i-1}) chosen so the ratio keeps [4, 2, 2, 1, 1]
    of the parts G_0, G_1~K_0, G_2~K_1, G_3, K_2: w' = 2 and each part keeps its top two."""
    model = set_gammas(Darknet(parse_cfg_text(BLOCK_CFG)), {
        "layers.1.bn1": [0.90, 0.80, 0.70, 0.60,  # G_0
                         0.50, 0.011, 0.40, 0.012,  # G_1 (+ K_0 below: .55 .012 .45 .014)
                         0.013, 0.30, 0.28, 0.016,  # G_2 (+ K_1: .014 .35 .282 .019)
                         0.021, 0.20, 0.022, 0.023],  # G_3
        "layers.1.bns.0": [0.05, 0.001, 0.05, 0.002],
        "layers.1.bns.1": [0.001, 0.05, 0.002, 0.003],
        "layers.1.bns.2": [0.024, 0.025, 0.25, 0.026],  # K_2
    })
    slim, report = prune_model(model, by_gamma(0.5, scope="inner", min_keep=1))
    assert report.kept["layers.1.bn1"] == [0, 1, 4, 6, 9, 10, 13, 15]
    assert report.kept["layers.1.bns.0"] == [0, 2]
    assert report.kept["layers.1.bns.1"] == [1, 2]
    assert report.kept["layers.1.bns.2"] == [2, 3]
    assert report.kept["layers.0.bn"] == list(range(8))  # inner: the chain stays
    assert report.kept["layers.1.bn3"] == list(range(8))
    assert slim.cfg.layers[1].width == 2
    assert report.removed_channels == 10


def test_residual_chain_pruned_as_one_group():
    """Scope all: the stage conv and the block's conv3 lose the same channels."""
    model = set_gammas(Darknet(parse_cfg_text(BLOCK_CFG)), {
        "layers.0.bn": [1.0, 1e-3, 1.0, 1e-3, 1.0, 1e-3, 1.0, 1e-3],
        "layers.1.bn3": [1.0, 1e-3, 1.0, 1e-3, 1.0, 1e-3, 1.0, 1e-3],
        "layers.1.bn1": [1.0] * 16, "layers.1.bns.0": [1.0] * 4,
        "layers.1.bns.1": [1.0] * 4, "layers.1.bns.2": [1.0] * 4,
    })
    # 28 prunable coupled channels; 0.15 removes 4: the chain's four weak ones.
    slim, report = prune_model(model, by_gamma(0.15, min_keep=1))
    assert report.kept["layers.0.bn"] == report.kept["layers.1.bn3"] == [0, 2, 4, 6]
    assert slim.cfg.layers[0].filters == 4
    assert slim.layers[1].conv1.in_channels == 4 and slim.layers[1].conv3.out_channels == 4


def test_chain_channels_ranked_by_mean_gamma():
    """A residual-chain channel spans two BNs here; at gammas of about .3 against the block's
    .5 it is the weaker channel and goes first (a sum, .6+, would have kept the chain whole)."""
    chain = [0.30 + 0.01 * i for i in range(8)]
    model = set_gammas(Darknet(parse_cfg_text(BLOCK_CFG)), {
        "layers.0.bn": chain, "layers.1.bn3": chain,
        "layers.1.bn1": [0.5] * 16, "layers.1.bns.0": [0.5] * 4,
        "layers.1.bns.1": [0.5] * 4, "layers.1.bns.2": [0.5] * 4,
    })
    # 28 prunable coupled channels; 0.25 removes 7: the chain's seven weakest.
    slim, report = prune_model(model, by_gamma(0.25, min_keep=1))
    assert report.kept["layers.0.bn"] == report.kept["layers.1.bn3"] == [7]
    assert report.kept["layers.1.bn1"] == list(range(16))
    assert slim.cfg.layers[0].filters == 1


def test_floor_keeps_a_layer_alive_and_says_so():
    """The ratio keeps G_2's top two and G_3 (6 of 20), so w' = round(6 / 5) = 1; the floor
    of 2 channels per K_i layer lifts every group to 2."""
    model = set_gammas(Darknet(parse_cfg_text(BLOCK_CFG)), {
        "layers.1.bn1": [1e-4 * (i + 1) for i in range(16)],
        "layers.1.bns.0": [1e-5] * 4, "layers.1.bns.1": [1e-5] * 4, "layers.1.bns.2": [1e-5] * 4,
    })
    slim, report = prune_model(model, by_gamma(0.7, scope="inner", min_keep="2"))
    assert slim.cfg.layers[1].width == 2
    assert report.kept["layers.1.bn1"] == [2, 3, 6, 7, 10, 11, 14, 15]  # top 2 per group
    notes = {f.layer: f for f in report.floors}
    assert notes["layers.1.bns.2"] == FloorNote("layers.1.bns.2", 4, 1, 2)
    assert "layers.1.bn1" not in notes


@pytest.mark.parametrize("path", TINY_CFGS, ids=lambda p: p.name)
def test_round_to_gives_multiples(path):
    model = dense(path, seed=2)
    slim, report = prune_model(model, PruneSettings(0.6, round_to=4, min_keep=1))
    modules = dict(model.named_modules())
    for name, idx in report.kept.items():
        n = modules[name].num_features
        assert len(idx) % 4 == 0 or len(idx) == n, (name, len(idx), n)
    check_contract(model, torch.randn(1, 3, 64, 64), ratio=0.6, round_to=4, min_keep=1)


def test_min_keep_fraction_floor_on_every_layer():
    model = dense(TINY_CFGS[1], seed=4)
    slim, report = prune_model(model, PruneSettings(0.95, min_keep=MinKeep(0.25)))
    modules = dict(model.named_modules())
    for name, idx in report.kept.items():
        assert len(idx) >= -(-modules[name].num_features // 4), name


# ---------------------------------------------------------------- files, reload, again

def test_written_files_reload_and_prune_again(tmp_path):
    model = dense(TINY_CFGS[1], seed=6)
    x = torch.randn(1, 3, 64, 64)
    slim, report = prune_model(model, PruneSettings(0.4))
    files = write_pruned(slim, report, tmp_path / "p1")
    reloaded = Darknet(files.cfg)
    reloaded.load_weights(files.weights)
    assert_outputs_close(raw(reloaded, x), raw(slim, x), atol=1e-6, rtol=1e-6)
    data = json.loads(files.report.read_text())
    for key in ("params_before", "params_after", "gflops_before", "gflops_after", "settings",
                "kept"):
        assert key in data
    assert set(data["kept"]) == {n for n, m in model.named_modules()
                                 if isinstance(m, torch.nn.BatchNorm2d)}
    assert all(v == sorted(v) for v in data["kept"].values())
    # Again, from the reloaded slim model: the contract holds on the second cut too.
    again, report2 = check_contract(reloaded, x, ratio=0.4)
    assert report2.params_after < report.params_after
    write_pruned(again, report2, tmp_path / "p2")
    assert (tmp_path / "p2" / PRUNED_CFG).exists() and (tmp_path / "p2" / PRUNED_WEIGHTS).exists()


def test_ratio_zero_keeps_everything():
    model = dense(TINY_CFGS[0])
    slim, report = prune_model(model, PruneSettings(0.0))
    assert report.params_after == report.params_before and report.removed_channels == 0
    x = torch.randn(1, 3, 64, 64)
    assert_outputs_close(raw(slim, x), raw(model, x), atol=1e-6, rtol=1e-6)


def test_input_model_is_not_modified():
    model = dense(TINY_CFGS[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune_model(model, PruneSettings(0.5))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


def test_float64_model_gives_float64_slim_model_and_tight_equality():
    model = dense(TINY_CFGS[0], seed=7).double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    _, first = prune_model(model, PruneSettings(0.5))
    with torch.no_grad():
        for bn, mask in removed_masks(model, first.kept):
            bn.bias[mask] = 0
    slim, report = prune_model(model, PruneSettings(0.5))
    assert all(p.dtype == torch.float64 for p in slim.parameters())
    assert_outputs_close(raw(slim, x), raw(masked(model, report.kept), x), atol=1e-12,
                         rtol=1e-12)
