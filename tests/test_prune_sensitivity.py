"""Blocks chosen by measured effect: a block that adds nothing costs nothing, and
``--block-ranking sensitivity`` removes the least harmful blocks, not the lowest |gamma|."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import ROOT, images, randomize_bn

import charts
from darknet import Darknet
from prune import PruneError, PruneSettings, prune_model
from prune.blocks import find_blocks
from prune.sensitivity import BlockSensitivity, Sensitivity, measure
from yolodata import Batch

TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"  # 3 removable [res2net] blocks, 2 classes


def _batches(n_batches: int = 2, per: int = 4, size: int = 64) -> list[Batch]:
    g = torch.Generator().manual_seed(5)
    out = []
    for k in range(n_batches):
        rows = [[i, i % 2, *(torch.rand(2, generator=g) * 0.5 + 0.25).tolist(),
                 *(torch.rand(2, generator=g) * 0.3 + 0.1).tolist()] for i in range(per)]
        out.append(Batch(images(per, size, seed=10 + k), torch.tensor(rows),
                         tuple(f"img{k}_{i}" for i in range(per)), ((size, size),) * per))
    return out


def _model(empty: str | None = None) -> Darknet:
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the convs' init: the other blocks' sensitivities are not ~0
        model = randomize_bn(Darknet(TINY), seed=1).eval()
    if empty is not None:  # the block adds zero: gamma and beta of its pre-add BN are 0
        bn = dict(model.named_modules())[empty]
        with torch.no_grad():
            bn.weight.zero_()
            bn.bias.zero_()
    return model


@pytest.mark.parametrize("recalibrate", [True, False])
def test_a_block_that_adds_zero_has_sensitivity_zero(recalibrate):
    model = _model(empty="layers.4.bn3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = measure(model, _batches(), recalibrate=recalibrate)
    by_layer = {b.layer: b for b in result.blocks}
    assert sorted(by_layer) == [2, 4, 5]
    assert by_layer[4].sensitivity == pytest.approx(0.0, abs=1e-6 * result.dense_loss)
    assert by_layer[4].gamma == 0.0
    assert all(abs(by_layer[j].sensitivity) > 1e-4 * result.dense_loss for j in (2, 5))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def _hand_made(model: Darknet, sensitivities: dict[int, float]) -> Sensitivity:
    blocks = find_blocks(model.cfg)
    return Sensitivity("loss", 8, True, 1.0, tuple(
        BlockSensitivity(b.layer, b.kind, b.bn, 1.0, 1.0 + sensitivities[b.layer],
                         sensitivities[b.layer]) for b in blocks))


def test_sensitivity_ranking_removes_the_least_harmful_block_not_the_lowest_gamma():
    model = _model()
    gammas = {b.layer: float(dict(model.named_modules())[b.bn].weight.detach().abs().mean())
              for b in find_blocks(model.cfg)}
    least_harmful = max(gammas, key=gammas.get)  # the block gamma ranking removes last
    sens = _hand_made(model, {j: 0.01 if j == least_harmful else 0.5 for j in gammas})

    _, by_gamma = prune_model(model, PruneSettings(layers=1, ratio=0))
    _, measured = prune_model(model, PruneSettings(layers=1, ratio=0,
                                                   block_ranking="sensitivity"),
                              sensitivity=sens)
    assert [b.layer for b in by_gamma.removed_blocks] == [min(gammas, key=gammas.get)]
    assert [b.layer for b in measured.removed_blocks] == [least_harmful]
    assert measured.removed_blocks[0].score == 0.01
    from charts.prune_report import _title

    assert "--layers 1 --block-ranking sensitivity " in _title(measured.as_dict())
    assert "--block-ranking" not in _title(by_gamma.as_dict())


def test_sensitivity_of_another_cfg_is_refused():
    model = _model()
    sens = _hand_made(model, {2: 0.1, 4: 0.2, 5: 0.3})
    other = dataclasses.replace(sens, blocks=sens.blocks[:2])
    with pytest.raises(PruneError, match="measured on another cfg"):
        prune_model(model, PruneSettings(layers=1, ratio=0, block_ranking="sensitivity"),
                    sensitivity=other)


def test_sensitivity_file_round_trips_and_bad_files_get_one_line():
    sens = _hand_made(_model(), {2: 0.1, 4: -0.2, 5: 0.3})
    assert Sensitivity.from_dict(sens.as_dict()) == sens
    with pytest.raises(PruneError, match="x.json: not a sensitivity file"):
        Sensitivity.from_dict({"blocks": []}, "x.json")


def test_sensitivity_chart_lists_the_least_harmful_block_first():
    from charts import sensitivity

    data = _hand_made(_model(), {2: 0.1, 4: -0.2, 5: 0.3}).as_dict()
    data["blocks"][2]["gamma"] = 0.5  # gamma removes layer 5 first
    rows = sensitivity.rows(data)
    assert [r["layer"] for r in rows] == [4, 2, 5]
    assert [r["gamma_rank"] for r in rows] == [3, 2, 1]  # ties: the earlier block
    assert charts.render("sensitivity", data) is not None
    assert np.all(np.diff([r["sensitivity"] for r in rows]) >= 0)


def test_masking_channels_that_are_already_zero_costs_nothing():
    model = _model()
    with torch.no_grad():  # layer 0's two weakest channels add nothing
        model.layers[0].bn.weight[[3, 6]] = 0.0
        model.layers[0].bn.bias[[3, 6]] = 0.0
    result = measure(model, _batches(), ratios=(0.25, 0.5))
    first = {r.ratio: r for r in result.layers if r.layer == 0}
    assert (first[0.25].channels, first[0.25].removed, first[0.5].removed) == (8, 2, 4)
    assert first[0.25].sensitivity == pytest.approx(0.0, abs=1e-6 * result.dense_loss)
    assert abs(first[0.5].sensitivity) > 1e-4 * result.dense_loss
    assert Sensitivity.from_dict(result.as_dict()) == result
    assert charts.render("sensitivity", result.as_dict()) is not None
