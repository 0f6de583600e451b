"""Shared test helpers: where the cfgs live, small model factories, and the pruning
contract's checks. Tests import them from here (``from helpers import ...``): pytest loads
``conftest.py`` itself and a test module must not import it, nor another test module."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from darknet import Darknet

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


_PR_CAPBSET_DROP = 24  # prctl(2)
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2  # capability(7)


def respect_file_modes() -> None:
    """A ``preexec_fn`` that makes the child process honour file modes even as root.

    Root writes into a folder of mode 0500 through CAP_DAC_OVERRIDE, so a test of the
    read-only path would pass vacuously there (CI runs as root). Dropped from the bounding
    set before ``exec``, the capability is gone from the new program: it stays uid 0 (and can
    still read the interpreter under /root) but meets the folder's mode like any user.
    Does nothing for a non-root user, who honours the modes already.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


# ------------------------------------------------------------------ the pruning contract

FULL_RES2NET = [ROOT / "cfgs" / "res2net-yolov3.cfg",
                ROOT / "cfgs" / "res2net-yolov3-triangle.cfg"]


def removed_masks(model: torch.nn.Module, kept: dict[str, list[int]]):
    modules = dict(model.named_modules())
    for name, idx in kept.items():
        bn = modules[name]
        mask = torch.ones(bn.num_features, dtype=torch.bool)
        mask[idx] = False
        yield bn, mask


def spread_gammas(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Gammas like after sparse training: many near zero, the rest O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                small = torch.rand(n, generator=g) < 0.5
                m.weight.copy_(torch.where(small, torch.rand(n, generator=g) * 1e-2,
                                           torch.rand(n, generator=g) + 0.2))
    return model


def raw(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.eval()(x, raw=True)


def assert_outputs_close(a, b, atol=1e-5, rtol=1e-5):
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, atol=atol, rtol=rtol)


def set_gammas(model, gammas: dict[str, list[float]]):
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, values in gammas.items():
            modules[name].weight.copy_(torch.tensor(values))
    return model


def zero_blocks(model: Darknet, report, beta: bool = True) -> None:
    """Zero the pre-add BN gamma (and beta) of every block the report removed."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for b in report.removed_blocks:
            modules[b.bn].weight.zero_()
            if beta:
                modules[b.bn].bias.zero_()


def zero_channels(model: Darknet, kept: dict[str, list[int]], which: str) -> None:
    with torch.no_grad():
        for bn, mask in removed_masks(model, kept):
            getattr(bn, which)[mask] = 0


def assert_same_outputs(a: list[torch.Tensor], b: list[torch.Tensor], **tol) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, **(tol or dict(atol=1e-5, rtol=1e-5)))


TWO_SCALES = """
[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

""" + YOLO_HEAD
