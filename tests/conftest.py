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
def demo_data(tmp_path_factory) -> Path:
    """The data yaml of a small demo dataset (8 train / 4 val images at 64 px), generated
    once per session: what a test that trains, evaluates or compares needs."""
    from yolodata import ensure_demo_dataset

    root = tmp_path_factory.mktemp("demo-data") / "demo"
    return ensure_demo_dataset(root=root, n_train=8, n_val=4, img_size=64, seed=2)
