"""The cost model: analytic parameters and multiply-adds, with thop as the oracle."""

from __future__ import annotations

import re

import pytest
import thop
import torch
from helpers import OFFICIAL_CFGS, PROJECT_CFGS, ROOT, TINY_CFGS, sized

from darknet import Darknet, parse_cfg
from darknet.cost import COST_RULES, network_cost
from darknet.sections import SECTION_TYPES, NetSection
from prune import PruneSettings, prune_model
from prune.importance import randomize_gammas

ALL_CFGS = sorted(set(PROJECT_CFGS + TINY_CFGS + OFFICIAL_CFGS))


def thop_macs(model: Darknet, height: int, width: int) -> float:
    x = torch.zeros(1, model.cfg.net.channels, height, width)
    macs, _ = thop.profile(model.eval(), inputs=(x,), verbose=False)
    return macs


def test_every_section_type_has_a_cost_rule():
    assert set(COST_RULES) == {c for c in SECTION_TYPES.values() if c is not NetSection}


@pytest.mark.parametrize("path", sized(ALL_CFGS))
def test_macs_are_what_thop_counts(path):
    """Square and not; YOLOv3 also at the docs' 416 px."""
    model = Darknet(path)
    sizes = [(64, 64), (64, 96), *([(416, 416)] if path.name == "yolov3.cfg" else [])]
    for height, width in sizes:
        cost, macs = network_cost(model.cfg, height, width), thop_macs(model, height, width)
        assert cost.macs == macs and cost.gflops == 2.0 * macs / 1e9


def test_a_pruned_cfg_costs_what_thop_counts():
    """Odd widths and explicit `width=` in every block, as the pruner writes them."""
    dense = randomize_gammas(Darknet(ROOT / "cfgs" / "demo.cfg"), seed=0).eval()
    slim, report = prune_model(dense, PruneSettings(ratio=0.6, min_keep=1))
    assert all(s.width is not None for s in slim.cfg.layers if s.kind in ("res2net", "triangle"))
    cost = network_cost(slim.cfg, 128, 128)
    assert cost.macs == thop_macs(slim, 128, 128)
    assert report.gflops_after == cost.gflops < report.gflops_before
    assert report.params_after == cost.params == sum(p.numel() for p in slim.parameters())


@pytest.mark.parametrize("path", sized(ALL_CFGS))
def test_each_layer_lists_the_convs_its_module_has(path):
    """Per layer: the cost rule's convs are the module's (conv, bn) pairs, name by name."""
    model = Darknet(path)
    names = {m: n for n, m in model.named_modules()}
    for index, (layer, cost) in enumerate(zip(model.layers, network_cost(model.cfg).layers,
                                              strict=True)):
        rows = [(f"layers.{index}.{c.name}", c.in_channels, c.out_channels, c.kernel,
                 c.batch_norm) for c in cost.convs]
        assert rows == [(names[conv], conv.in_channels, conv.out_channels, conv.kernel_size[0],
                         bn is not None) for conv, bn in layer.conv_bn_pairs()]
        assert cost.params == sum(p.numel() for p in layer.parameters())


def docs_models_table() -> dict[str, list[str]]:
    """The "Models" table of docs/extending.md: cfg path -> [params, GFLOPs @416, GFLOPs @608]
    cells."""
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text[text.index("## Models"):]
    rows = re.findall(r"^\| `(cfgs/[^`]+)` \|[^|]*\|([^|]*)\|([^|]*)\|([^|]*)\|$", section,
                      re.MULTILINE)
    return {cfg: [cell.strip() for cell in cells] for cfg, *cells in rows}


def test_the_docs_models_table_is_what_the_code_counts():
    table = docs_models_table()
    assert set(table) == {f"cfgs/{p.name}" for p in PROJECT_CFGS}
    for path, (params, *gflops) in table.items():
        cfg = parse_cfg(ROOT / path)
        assert params == f"{network_cost(cfg).params:,}", path
        for cell, size in zip(gflops, (416, 608), strict=True):
            if not cell:
                continue
            value, at = re.fullmatch(r"\(?([\d.]+)(?: @(\d+)\))?", cell).groups()
            size = int(at or size)
            decimals = len(value.split(".")[1])
            assert value == f"{network_cost(cfg, size, size).gflops:.{decimals}f}", (path, size)
