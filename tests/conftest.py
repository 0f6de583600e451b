"""Shared test helpers: where the cfgs live, and small model factories."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

# Tiny models run faster on one thread, and a CI machine has only two cores to share;
# the CLI subprocesses the tests start inherit the setting through OMP_NUM_THREADS.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parent.parent
TINY_CFGS = sorted((ROOT / "tests" / "cfgs").glob("*.cfg"))
PROJECT_CFGS = sorted((ROOT / "cfgs").glob("*.cfg"))
OFFICIAL_CFGS = [ROOT / "cfgs" / "yolov3.cfg",
                 *sorted((ROOT / "tests" / "data" / "darknet").glob("*.cfg"))]
# A one-class detector + [yolo] head that hand-written test cfgs end with (3 anchors x 6).
YOLO_HEAD = """[convolutional]
size=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=4,5, 8,10, 12,9
classes=1
num=3
"""
FULL_SIZE = {"yolov3.cfg", "res2net-yolov3.cfg", "res2net-yolov3-triangle.cfg",
             "yolov3-spp.cfg"}


def sized(paths, *more):
    """Parametrize cases for cfg ``paths``, named by file; building a full-size cfg (35-63M
    parameters) is slow, so those cases are marked ``slow``. ``more``: values every case adds."""
    return [pytest.param(p, *more, id=p.name,
                         marks=[pytest.mark.slow] if p.name in FULL_SIZE else [])
            for p in paths]


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random RGB images in 0..1, ``size`` x ``size``."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics so tests see more than the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def kill_when(path, proc, timeout=300):
    """kill -9 ``proc`` as soon as ``path`` exists (it must still be running then)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the process ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def root() -> Path:
    return ROOT


def calibrate(model: torch.nn.Module, size: int = 64, seed: int = 0) -> torch.nn.Module:
    """Set every BN's running statistics to its input's on a batch of random images (in
    forward order), so each normalizes its input to unit variance and a deep random model
    keeps O(1) activations: an absolute tolerance on its logits then means something."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, model.cfg.net.channels, size, size, generator=g)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        model.train()(x)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    return model.train(training)


def calibrate_heads(model, size: int = 64, seed: int = 0):
    """``calibrate`` after random gammas and betas (``randomize_bn``), then every conv
    without BN (the heads) rescaled to unit output variance on random images; eval mode.

    The heads' logits are then O(1), as a trained model's are, so raw logits and decoded
    boxes (whose sizes are exp of a logit) are worth comparing.
    """
    calibrate(randomize_bn(model, seed), size, seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.rand(4, model.cfg.net.channels, size, size, generator=g)
    stds: dict[torch.nn.Conv2d, float] = {}

    def measure(conv, inputs, out) -> None:
        stds[conv] = out.std().item()

    hooks = [conv.register_forward_hook(measure)
             for _, conv, bn in model.conv_bn_pairs() if bn is None]
    with torch.no_grad():
        model(images)
        for conv, std in stds.items():
            conv.weight.div_(std)
            conv.bias.div_(std)
    for hook in hooks:
        hook.remove()
    return model


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The data yaml of a small demo dataset (8 train / 4 val images at 64 px), generated
    once per session: what a test that trains, evaluates or compares needs."""
    from yolodata import ensure_demo_dataset

    root = tmp_path_factory.mktemp("demo-data") / "demo"
    return ensure_demo_dataset(root=root, n_train=8, n_val=4, img_size=64, seed=2)
