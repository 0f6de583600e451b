"""Pruning to a budget: the budget value, the ratio bisection, where a budget prune lands,
--layers auto, and an unreachable budget."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import ROOT

from darknet import Darknet
from darknet.cost import network_cost
from prune import PruneError, PruneSettings, prune_model
from prune.budget import Budget, Metric
from prune.importance import randomize_gammas
from prune.search import GRID, STEP, BudgetError, find_ratio

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
FULL = ROOT / "cfgs" / "res2net-yolov3.cfg"


# ---------------------------------------------------------------- the budget value

def test_a_budget_is_absolute_or_a_fraction_of_dense():
    relative, absolute = Budget.parse("gflops", "0.3x"), Budget.parse("params", "2.5e5")
    assert relative.relative and relative.limit(10.0) == pytest.approx(3.0)
    assert str(relative) == "0.3x"
    assert not absolute.relative and absolute.limit(1e9) == 2.5e5 and str(absolute) == "250000"
    assert Budget.parse("latency", " 0.12X ").limit(40.0) == pytest.approx(4.8)
    with pytest.raises(PruneError, match=r"--target-latency must be a positive number .* "
                                         r"got 'x'"):
        Budget.parse("latency", "x")
    assert Metric.PARAMS.format(1234567) == "1,234,567 params"


# ---------------------------------------------------------------- the bisection (pure)

def test_find_ratio_lands_one_step_inside_the_limit():
    calls = []

    def figure(r):
        calls.append(r)
        return 100 * (1 - r)

    i = find_ratio(figure, 30.5)
    assert figure(GRID[i]) <= 30.5 < figure(GRID[i - 1])
    assert GRID[i] == pytest.approx(0.7)
    assert len(calls) <= 12  # bisection, not a scan of 100 ratios


def test_find_ratio_keeps_its_invariant_where_the_figure_is_not_monotone():
    """Floors and rounding can make a plan costlier at a higher ratio; whatever index comes
    back, it meets the limit and one step less pruning does not."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = np.sort(rng.random(len(GRID)))[::-1] + rng.normal(0, 0.05, len(GRID))
        values[0], values[-1] = 2.0, -1.0
        limit = float(rng.uniform(0, 1))
        i = find_ratio(lambda r, v=values: v[GRID.index(r)], limit)
        assert values[i] <= limit < values[i - 1]


def test_find_ratio_ends():
    assert find_ratio(lambda r: 1.0, 2.0) == 0  # dense already within: no cut
    assert find_ratio(lambda r: 5.0 - r, 2.0) is None  # not even ratio 0.99 meets it


# ---------------------------------------------------------------- landing, on real cfgs

def gflops(report) -> float:
    return report.gflops_after


def params(report) -> float:
    return report.params_after


@pytest.mark.parametrize("path,size,metric,target", [
    (DEMO, 128, "gflops", "0.3x"), (DEMO, 128, "params", "0.25x"),
    (TINY, 64, "gflops", "0.5x"), (TINY, 64, "params", "30000"),
], ids=lambda v: str(getattr(v, "name", v)))
def test_a_budget_prune_lands_within_one_search_step(path, size, metric, target):
    model = randomize_gammas(Darknet(path), seed=1).eval()
    settings = PruneSettings(**{f"target_{metric}": target})
    slim, report = prune_model(model, settings, img_size=size)
    achieved = {"gflops": gflops, "params": params}[metric](report)
    dense = report.gflops_before if metric == "gflops" else report.params_before
    limit = settings.budget.limit(dense)
    assert achieved <= limit
    assert report.search.figure == pytest.approx(achieved)  # the cfg's figure is the model's
    assert report.settings.ratio > 0 and report.settings.ratio == report.search.ratio
    # one search step less pruning misses the budget
    _, less = prune_model(model, replace(settings, target_gflops=None, target_params=None,
                                         ratio=round(report.settings.ratio - STEP, 2)), size)
    assert {"gflops": gflops, "params": params}[metric](less) > limit
    assert all(s.meets == (s.figure <= limit) for s in report.search.steps)
    assert network_cost(slim.cfg, size, size).gflops == pytest.approx(report.gflops_after)


def test_a_budget_the_dense_model_meets_is_refused():
    """1.5x is a typo for 0.15x far more often than a wish for an unpruned copy."""
    model = randomize_gammas(Darknet(TINY), seed=0).eval()
    dense = network_cost(model.cfg, 64, 64).params
    with pytest.raises(PruneError, match=r"--target-params 1.5x is not below .* \(1x\)"):
        prune_model(model, PruneSettings(target_params="1.5x"))
    with pytest.raises(PruneError, match=rf"is not below the dense model's {dense:,} params"):
        prune_model(model, PruneSettings(target_params=str(dense)))


def test_layers_auto_keeps_the_blocks_that_cost_least_gamma():
    """Blocks whose pre-add gammas are ~0 (as after sparse training) are cheaper to remove
    than channels: auto removes some, and zeroes less |gamma| than channels alone would."""
    model = randomize_gammas(Darknet(DEMO), seed=2).eval()
    modules = dict(model.named_modules())
    for name in ("layers.4.bn3", "layers.7.bn3", "layers.9.bn3"):
        modules[name].weight.data.mul_(1e-3)
    auto = PruneSettings(target_gflops="0.4x", layers="auto")
    _, report = prune_model(model, auto)
    _, channels_only = prune_model(model, replace(auto, layers=0))
    assert report.settings.layers > 0
    assert {b.bn for b in report.removed_blocks} <= {"layers.4.bn3", "layers.7.bn3",
                                                     "layers.9.bn3"}
    assert report.search.removed_gamma < channels_only.search.removed_gamma
    assert report.gflops_after <= 0.4 * report.gflops_before
    assert {s.layers for s in report.search.steps} >= {0, report.settings.layers}


def test_layers_auto_on_random_gammas_stops_when_blocks_stop_paying():
    model = randomize_gammas(Darknet(DEMO), seed=0).eval()
    _, report = prune_model(model, PruneSettings(target_gflops="0.3x", layers="auto"))
    tried = sorted({s.layers for s in report.search.steps})
    assert tried == list(range(len(tried)))  # 0, 1, 2, ... in order
    assert report.settings.layers <= tried[-1]
    assert report.gflops_after <= 0.3 * report.gflops_before


def test_an_unreachable_budget_names_the_nearest_figure():
    model = randomize_gammas(Darknet(TINY), seed=0).eval()
    with pytest.raises(BudgetError) as e:
        prune_model(model, PruneSettings(target_params="0.001x"))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--target-params 0.001x (")
    _, floor = prune_model(model, PruneSettings(ratio=0.99))
    assert f"the least this cut reaches is {floor.params_after:,} params" in message
    assert "--layers 0 --ratio 0.99" in message


@pytest.mark.slow
def test_a_budget_prune_of_a_full_size_cfg_lands():
    model = randomize_gammas(Darknet(FULL), seed=0).eval()
    settings = PruneSettings(target_gflops="0.3x", round_to=8)
    _, report = prune_model(model, settings, img_size=416)
    assert report.gflops_after <= 0.3 * report.gflops_before
    _, less = prune_model(model, PruneSettings(ratio=round(report.settings.ratio - STEP, 2),
                                               round_to=8), img_size=416)
    assert less.gflops_after > 0.3 * report.gflops_before


@pytest.mark.parametrize("hint", [None, 1, 5, 50, 69, 70, 71, 98])
def test_find_ratio_from_a_hint_gives_the_same_kind_of_answer(hint):
    """Bracketing outwards from a hint keeps the contract; near the answer it is cheaper."""
    calls = []

    def figure(r):
        calls.append(r)
        return 100 * (1 - r)

    i = find_ratio(figure, 30.5, hint=hint)
    assert GRID[i] == pytest.approx(0.7)
    if hint in (69, 70, 71):
        assert len(calls) <= 4
    assert find_ratio(lambda r: 1.0, 2.0, hint=hint) == 0
    assert find_ratio(lambda r: 5.0 - r, 2.0, hint=hint) is None
