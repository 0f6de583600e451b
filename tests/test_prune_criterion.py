"""Ranking by gamma and cost: per-class multiply-adds, and what ``flops_exponent`` cuts first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_CFGS, TWO_SCALES

from darknet import Darknet, parse_cfg_text
from prune import PruneSettings, analyze, prune_model
from prune.importance import PROBE, class_importance, class_macs, class_scores, randomize_gammas
from prune.select import select_channels


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

    kept = {e: prune_model(model, PruneSettings(0.25, min_keep=1, flops_exponent=e))[1].kept
            for e in (0.0, 0.1, 1.0)}
    for by_gamma in (kept[0.0], kept[0.1]):
        assert by_gamma["layers.0.bn"] == list(range(8))
        assert by_gamma["layers.1.bn"] == [4, 5, 6, 7]
    assert kept[1.0]["layers.0.bn"] == [4, 5, 6, 7]
    assert kept[1.0]["layers.1.bn"] == list(range(8))


def conv_output_areas(model: Darknet, size: int) -> dict[str, int]:
    """Each conv's output H * W in a real forward pass, by module name."""
    areas: dict[str, int] = {}
    hooks = [m.register_forward_hook(
        lambda _m, _i, out, name=name: areas.__setitem__(name, out.shape[-2] * out.shape[-1]))
        for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return areas


def module_class_macs(analysis, model: Darknet, size: int) -> np.ndarray:
    """Independent count per class, from the conv modules and a forward pass's output sizes."""
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    areas = conv_output_areas(model, size)
    macs = np.zeros(analysis.num_classes)
    for space in analysis.graph.spaces:
        if space.conv is not None:
            np.add.at(macs, analysis.classes_of_space(space),
                      convs[space.conv].weight[0].numel() * areas[space.conv])
    for reader in analysis.graph.consumers:
        conv = convs[reader.conv]
        np.add.at(macs, analysis.classes_of_tensor(reader.input),
                  conv.out_channels * conv.weight[0, 0].numel() * areas[reader.conv])
    return macs


DEMO = ROOT / "cfgs" / "demo.cfg"


@pytest.mark.parametrize("path", [*TINY_CFGS, DEMO], ids=lambda p: p.name)
def test_class_macs_equal_the_modules_count_class_by_class(path):
    """Each conv's MACs are charged once over its output channels and once over its inputs,
    at the size the forward pass runs it."""
    model = Darknet(path)
    analysis = analyze(model.cfg)
    macs = class_macs(analysis, probe=64)
    assert np.array_equal(macs, module_class_macs(analysis, model, 64))
    assert (macs > 0).all()
    assert np.array_equal(class_macs(analysis), module_class_macs(analysis, model, PROBE))


def test_demo_keep_plan_at_the_cli_defaults_is_the_module_counts_plan():
    """The ranking the CLI runs (random gammas, default settings) keeps what ranking by the
    modules' own counts keeps: the analytic cost model moved no channel."""
    model = randomize_gammas(Darknet(DEMO), seed=0).eval()
    settings = PruneSettings()
    analysis = analyze(model.cfg)
    macs = np.maximum(module_class_macs(analysis, model, PROBE), 1.0)
    scores = class_importance(analysis, model) / (macs / macs.mean()) ** settings.flops_exponent
    assert np.array_equal(scores, class_scores(analysis, model, settings.flops_exponent))
    structure = analysis.structure(settings.scope)
    plan = select_channels(structure, scores, settings)
    expected = {layer.name: plan.kept_positions(layer.classes).tolist()
                for layer in structure.layers}
    _, report = prune_model(model, settings)
    assert report.kept == expected
    assert 0 < report.removed_channels < report.prunable_channels
