"""Fixtures shared by the tests, and the settings every test runs under. Helpers that tests
import live in ``helpers.py`` (a test module never imports ``conftest`` or another test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import ROOT, calibrate_heads

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


@pytest.fixture(scope="session")
def own_labels(tmp_path_factory):
    """A demo model and a small data set whose val labels are that model's own detections:
    the FP32 graph scores near 1, so any box an exported form moves shows as a drop in mAP."""
    from darknet import Darknet
    from detection import detect_image, open_image
    from shipping.backends import TorchBackend
    from yolodata import ensure_demo_dataset, load_spec
    from yolodata.labels import label_path

    root = tmp_path_factory.mktemp("int8")
    data = ensure_demo_dataset(root=root / "data", n_train=16, n_val=6, img_size=64, seed=3)
    with torch.random.fork_rng():  # the conv init draws from the global generator
        torch.manual_seed(1)
        model = calibrate_heads(Darknet(ROOT / "cfgs" / "demo.cfg"), 64, seed=1)
    model.save_weights(root / "demo.weights")
    detector = TorchBackend(model, "eager")
    for path in load_spec(data).val:
        rgb = open_image(path)
        det = detect_image(detector, rgb, 64, 0.3, 0.45)
        scale = torch.tensor([rgb.width, rgb.height] * 2)
        boxes = (det[:, :4].clamp(min=0) / scale).clamp(max=1)
        rows = [f"{int(c)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"
                for (x1, y1, x2, y2), c in zip(boxes.tolist(), det[:, 5].tolist(), strict=True)
                if x2 - x1 > 1e-3 and y2 - y1 > 1e-3]  # boxes left inside the picture
        label_path(path).write_text("\n".join(rows) + "\n")
    return data, root / "demo.weights"
