"""The dependency analyzer: registries, rule/module agreement, hand-checked couplings."""

from __future__ import annotations

import pytest
import torch
from helpers import PROJECT_CFGS, ROOT, TINY_CFGS, YOLO_HEAD, sized

from darknet import Darknet, parse_cfg, parse_cfg_text
from darknet.sections import SECTION_TYPES, NetSection
from prune import Scope, analyze, prunable_batchnorm_names, prunable_batchnorms
from prune.rules import COUPLING_RULES
from prune.slim_cfg import SLIM_RULES

ALL_CFGS = TINY_CFGS + PROJECT_CFGS + [ROOT / "tests" / "data" / "darknet" / "yolov3-spp.cfg",
                                       ROOT / "tests" / "data" / "darknet" / "yolov3-tiny.cfg"]


def test_every_section_type_has_a_coupling_rule_and_a_slim_rule():
    types = {cls for cls in SECTION_TYPES.values() if cls is not NetSection}
    assert set(COUPLING_RULES) == types
    assert set(SLIM_RULES) == types


@pytest.mark.parametrize("path", sized(ALL_CFGS))
def test_rules_name_the_modules_the_builder_makes_in_storage_order(path):
    """Each layer's producers in the graph are its (conv, bn) pairs, in Darknet order."""
    model = Darknet(path)
    names = {m: n for n, m in model.named_modules()}
    a = analyze(model.cfg)
    for index, layer in enumerate(model.layers):
        spaces = [s for s in a.graph.spaces if s.layer_index == index]
        pairs = layer.conv_bn_pairs()
        assert [s.conv for s in spaces] == [names[c] for c, _ in pairs]
        assert [s.bn for s in spaces] == [names[b] if b is not None else None for _, b in pairs]
        assert [s.size for s in spaces] == [c.out_channels for c, _ in pairs]
    consumers = {c.conv: c for c in a.graph.consumers}
    for _, conv, _ in model.conv_bn_pairs():
        c = consumers[names[conv]]
        assert len(a.graph.tensors[c.input]) == conv.in_channels
        assert (c.size, c.padding) == (conv.kernel_size[0], conv.padding[0])


def _groups(path):
    return [(g.size, tuple((s.bn or s.conv, start) for s, start in g.members), g.residual,
             g.fixed is None) for g in analyze(parse_cfg(path)).groups]


def test_tiny_res2net_groups_by_hand():
    groups = _groups(ROOT / "tests" / "cfgs" / "tiny-res2net.cfg")
    # The stage conv and both blocks after it are one residual group.
    assert (32, (("layers.3.bn", 0), ("layers.4.bn3", 0), ("layers.5.bn3", 0)), True,
            True) in groups
    # Inside layer 2 (width 4, scale 4): G_1 ~ K_0 and G_2 ~ K_1; G_0, G_3 and K_2 alone.
    assert (4, (("layers.2.bn1", 4), ("layers.2.bns.0", 0)), False, True) in groups
    assert (4, (("layers.2.bn1", 8), ("layers.2.bns.1", 0)), False, True) in groups
    for alone in [(("layers.2.bn1", 0),), (("layers.2.bn1", 12),), (("layers.2.bns.2", 0),)]:
        assert (4, alone, False, True) in groups
    # Detector convs have no gamma.
    assert (21, (("layers.8.conv", 0),), False, False) in groups


def test_scale_one_block_keeps_group_and_conv_equally_wide():
    cfg = parse_cfg_text("""
[net]
width=16
height=16
channels=3
[convolutional]
batch_normalize=1
filters=6
size=1
activation=leaky
[res2net]
width=5
scale=1
""" + YOLO_HEAD)
    a = analyze(cfg)
    groups = [(g.size, tuple((s.bn, start) for s, start in g.members)) for g in a.groups]
    assert (5, (("layers.1.bn1", 0),)) in groups and (5, (("layers.1.bns.0", 0),)) in groups
    (constraint,) = a.graph.same_width
    assert [len(a.graph.tensors[t]) for t in constraint.parts] == [5, 5]


def test_route_groups_keep_chunks_equally_wide():
    a = analyze(parse_cfg(ROOT / "tests" / "cfgs" / "tiny-darknet.cfg"))
    (constraint,) = a.graph.same_width
    assert "[route] groups=2" in constraint.reason
    assert [len(a.graph.tensors[t]) for t in constraint.parts] == [8, 8]


def test_yolo_pins_a_bn_conv_it_reads():
    cfg = parse_cfg_text("""
[net]
width=16
height=16
channels=3
[convolutional]
batch_normalize=1
filters=18
size=1
activation=linear
[yolo]
mask=0,1,2
anchors=4,5, 8,10, 12,9
classes=1
num=3
""")
    a = analyze(cfg)
    (group,) = [g for g in a.groups if g.members[0][0].bn == "layers.0.bn"]
    assert group.fixed == "read by [yolo] layer 1"
    assert a.prunable("all").sum() == 0


def test_prunable_batchnorms_per_scope():
    model = Darknet(ROOT / "tests" / "cfgs" / "tiny-res2net.cfg")
    everything = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert set(prunable_batchnorm_names(model.cfg, Scope.ALL)) == everything
    chain = {"layers.1.bn", "layers.2.bn3", "layers.3.bn", "layers.4.bn3", "layers.5.bn3"}
    assert set(prunable_batchnorm_names(model.cfg, "inner")) == everything - chain
    bns = prunable_batchnorms(model, "inner")
    assert all(isinstance(b, torch.nn.BatchNorm2d) for b in bns)
    assert len(bns) == len(everything - chain)


def test_the_full_cfg_has_more_to_prune_with_scope_all():
    """(Its speed is bench/bench_prune.py's business: "goal analyze < 2 s".)"""
    a = analyze(parse_cfg(ROOT / "cfgs" / "res2net-yolov3.cfg"))
    assert a.prunable("all").sum() > a.prunable("inner").sum() > 0
