"""Channel selection as a pure function: hand-made structures, known answers."""

from __future__ import annotations

import numpy as np
import pytest

from prune import PruneError, PruneSettings, select_channels
from prune.select import FloorNote, LayerChannels, SelectionStructure, check_plan


def structure(layers: dict[str, list[int]], n: int, fixed=(), same_width=()):
    prunable = np.ones(n, dtype=bool)
    prunable[list(fixed)] = False
    return SelectionStructure(
        prunable,
        tuple(LayerChannels(name, np.array(c)) for name, c in layers.items()),
        tuple(tuple(np.array(p) for p in parts) for parts in same_width),
    )


def kept(plan) -> list[int]:
    return np.flatnonzero(plan.keep).tolist()


def test_ratio_removes_the_least_important_fraction():
    s = structure({"a": list(range(10))}, 10)
    importance = np.array([5, 1, 9, 3, 7, 0, 8, 2, 6, 4], dtype=float)
    plan = select_channels(s, importance, PruneSettings(0.3, min_keep=1))
    assert kept(plan) == [0, 2, 3, 4, 6, 8, 9]  # 0, 1, 2 (classes 5, 1, 7) are gone
    assert plan.removed_by_ratio == 3 and plan.threshold == 2.0


def test_ratio_counts_prunable_classes_only_and_never_removes_fixed_ones():
    s = structure({"a": list(range(6))}, 6, fixed=[0, 1])
    plan = select_channels(s, np.zeros(6), PruneSettings(0.5, min_keep=1))
    assert plan.removed_by_ratio == 2 and kept(plan) == [0, 1, 4, 5]
    check_plan(s, plan)


def test_floor_lifts_an_emptied_layer_with_its_best_channels():
    s = structure({"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]}, 8)
    importance = np.array([0.01, 0.04, 0.03, 0.02, 1, 1, 1, 1])
    plan = select_channels(s, importance, PruneSettings(0.5, min_keep=2))
    assert kept(plan) == [1, 2, 4, 5, 6, 7]
    assert plan.floors == (FloorNote("a", 4, 0, 2),)


def test_one_width_per_split_from_the_mean_kept_count():
    """Parts keep 3, 1, 0 after the ratio: mean 4/3 rounds to w' = 1, so each part keeps
    its single best class; the ratio's choice inside a part is overruled."""
    parts = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    s = structure({"conv1": list(range(9))}, 9, same_width=[parts])
    importance = np.array([0.9, 0.8, 0.7, 0.015, 0.6, 0.04, 0.01, 0.03, 0.02])
    plan = select_channels(s, importance, PruneSettings(0.6, min_keep=1))
    assert kept(plan) == [0, 4, 7]
    check_plan(s, plan)


def test_split_layer_floor_is_shared_by_its_parts():
    """A block's conv1 (2 groups of 4) with floor 4 keeps 2 per group, not 4 in one."""
    parts = [[0, 1, 2, 3], [4, 5, 6, 7]]
    s = structure({"conv1": list(range(8)), "other": [8, 9, 10, 11]}, 12, same_width=[parts])
    importance = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.09, 0.08, 0.07, 9, 9, 9, 9])
    plan = select_channels(s, importance, PruneSettings(0.6, min_keep=4))
    assert kept(plan) == [0, 1, 4, 5, 8, 9, 10, 11]


def test_round_to_rounds_each_layer_up():
    s = structure({"a": list(range(10)), "b": list(range(10, 16))}, 16)
    importance = np.arange(16, dtype=float)
    plan = select_channels(s, importance, PruneSettings(0.5, min_keep=1, round_to=4))
    counts = [int(plan.keep[:10].sum()), int(plan.keep[10:].sum())]
    assert counts == [4, 6]  # a: 2 -> 4; b keeps all 6 (its size is not a multiple of 4)


def test_coupled_class_counts_in_every_layer_it_spans():
    """Class 0 sits in both layers (a residual chain): keeping it for one keeps it for both."""
    s = structure({"a": [0, 1], "b": [0, 2]}, 3)
    plan = select_channels(s, np.array([0.1, 0.0, 1.0]), PruneSettings(0.67, min_keep=1))
    assert kept(plan) == [0, 2]  # the floor of "a" brought class 0 back, in "b" too
    assert plan.floors == (FloorNote("a", 2, 0, 1),)


def test_check_plan_rejects_unequal_splits_and_empty_layers():
    parts = [[0, 1], [2, 3]]
    s = structure({"l": [0, 1, 2, 3]}, 4, same_width=[parts])
    plan = select_channels(s, np.ones(4), PruneSettings(0.0))
    plan.keep[:] = [True, True, True, False]
    with pytest.raises(PruneError, match="unequal parts"):
        check_plan(s, plan)
    plan.keep[:] = False
    with pytest.raises(PruneError, match="empties l"):
        check_plan(s, plan)
