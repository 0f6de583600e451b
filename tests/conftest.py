"""Fixtures shared by the tests, and the settings every test runs under. Helpers that tests
import live in ``helpers.py`` (a test module never imports ``conftest`` or another test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import ROOT

# Tiny models run faster on one thread, and a CI machine has only two cores to share;
# the CLI subprocesses the tests start inherit the setting through OMP_NUM_THREADS.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def make_demo_data(tmp_path_factory):
    """``make_demo_data(seed=2, n_train=8, n_val=4)``: the data yaml of a small demo dataset
    at 64 px, generated once per session for each set of arguments."""
    from yolodata import ensure_demo_dataset

    made: dict[tuple[int, int, int], Path] = {}

    def make(seed: int = 2, n_train: int = 8, n_val: int = 4) -> Path:
        key = (seed, n_train, n_val)
        if key not in made:
            root = tmp_path_factory.mktemp(f"demo-data-{seed}") / "demo"
            made[key] = ensure_demo_dataset(root=root, n_train=n_train, n_val=n_val,
                                            img_size=64, seed=seed)
        return made[key]

    return make


@pytest.fixture(scope="session")
def demo_data(make_demo_data) -> Path:
    """The data yaml of the tests' demo dataset (8 train / 4 val images at 64 px): what a
    test that trains, evaluates or compares needs."""
    return make_demo_data()
