"""Ranking by gamma and cost: per-class multiply-adds, and what ``flops_exponent`` cuts first."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, TINY_CFGS, YOLO_HEAD

from darknet import Darknet, parse_cfg_text
from prune import analyze, prune_model
from prune.importance import class_macs, class_scores


def conv_macs(model: Darknet, size: int) -> int:
    """Independent count: every conv's weight size times its output area."""
    total = 0

    def hook(module, _inputs, out):
        nonlocal total
        total += module.weight.numel() * out.shape[-2] * out.shape[-1]

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("path", [*TINY_CFGS, ROOT / "cfgs" / "demo.cfg"], ids=lambda p: p.name)
def test_class_macs_charge_every_conv_once_per_side(path):
    """Each conv's MACs are charged once over its output channels and once over its inputs."""
    model = Darknet(path)
    macs = class_macs(analyze(model.cfg), model, probe=64)
    assert macs.sum() == 2 * conv_macs(model, 64)
    assert (macs > 0).all()


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


def test_flops_exponent_cuts_the_expensive_layer_first():
    """Layer 0 (16x16, read by a 3x3 conv) costs twice what layer 1 (8x8, read by a 1x1)
    costs per channel; its gammas are ~10% higher, so per flop it is the weaker one. A small
    exponent (2 ** 0.1 = 1.07 < 1.1) still ranks by gamma."""
    model = Darknet(parse_cfg_text(TWO_SCALES))
    with torch.no_grad():
        model.layers[0].bn.weight.copy_(1.0 + 0.01 * torch.arange(8))
        model.layers[1].bn.weight.copy_(0.9 + 0.001 * torch.arange(8))
    analysis = analyze(model.cfg)
    assert class_scores(analysis, model, 1.0).shape == (analysis.num_classes,)

    kept = {e: prune_model(model, 0.25, min_keep=1, flops_exponent=e)[1].kept
            for e in (0.0, 0.1, 1.0)}
    for by_gamma in (kept[0.0], kept[0.1]):
        assert by_gamma["layers.0.bn"] == list(range(8))
        assert by_gamma["layers.1.bn"] == [4, 5, 6, 7]
    assert kept[1.0]["layers.0.bn"] == [4, 5, 6, 7]
    assert kept[1.0]["layers.1.bn"] == list(range(8))


@pytest.mark.parametrize("exponent", [-0.1, 1.5])
def test_exponent_outside_0_1_is_refused(exponent):
    model = Darknet(parse_cfg_text(TWO_SCALES))
    with pytest.raises(ValueError, match="flops_exponent must be in"):
        class_scores(analyze(model.cfg), model, exponent)
