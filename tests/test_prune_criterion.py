"""Ranking criteria: per-class multiply-adds, and what ``gamma-per-flop`` cuts first."""

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


def test_gamma_per_flop_cuts_the_expensive_layer_first():
    """Layer 0 (16x16, read by a 3x3 conv) costs twice what layer 1 (8x8, read by a 1x1)
    costs per channel; its gammas are only ~10% higher, so per flop it is the weaker one."""
    model = Darknet(parse_cfg_text(TWO_SCALES))
    with torch.no_grad():
        model.layers[0].bn.weight.copy_(1.0 + 0.01 * torch.arange(8))
        model.layers[1].bn.weight.copy_(0.9 + 0.001 * torch.arange(8))
    analysis = analyze(model.cfg)
    per_flop = class_scores(analysis, model, "gamma-per-flop")
    assert per_flop.shape == (analysis.num_classes,)

    _, by_gamma = prune_model(model, 0.25, min_keep=1)
    _, by_flop = prune_model(model, 0.25, min_keep=1, criterion="gamma-per-flop")
    assert by_gamma.kept["layers.0.bn"] == list(range(8))
    assert by_gamma.kept["layers.1.bn"] == [4, 5, 6, 7]
    assert by_flop.kept["layers.0.bn"] == [4, 5, 6, 7]
    assert by_flop.kept["layers.1.bn"] == list(range(8))
    assert (by_gamma.criterion, by_flop.criterion) == ("gamma", "gamma-per-flop")


def test_unknown_criterion_is_refused():
    model = Darknet(parse_cfg_text(TWO_SCALES))
    with pytest.raises(ValueError, match="criterion must be one of gamma, gamma-per-flop"):
        class_scores(analyze(model.cfg), model, "taylor")
