"""Independent oracle: our coupling classes equal what Torch-Pruning's DependencyGraph finds.

Torch-Pruning cannot follow a Res2Net block's ``torch.split`` (that is why this project has an
analyzer), so it gets a *split-free copy* (``prune.split_free``): each block's conv1/bn1 cut
into ``scale`` separate 1x1 convs + BNs with the same weights, whose outputs the forward uses
directly; route ``groups`` as slices. Everything else runs the Darknet layers themselves, and
the copy is checked to compute the same function. For every conv, the
group Torch-Pruning builds for each output channel must be exactly our class of that channel:
the same (BN, channel) / (BN-less conv, channel) producers and the same (conv, input channel)
readers.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
import torch_pruning as tp
from helpers import ROOT, randomize_bn, sized
from split_free import SplitFreeDarknet, unsplit_name
from torch import nn

from darknet import Darknet
from prune import analyze

CFGS = [ROOT / "tests" / "cfgs" / "tiny-res2net.cfg", ROOT / "tests" / "cfgs" / "tiny-darknet.cfg",
        ROOT / "cfgs" / "res2net-yolov3.cfg", ROOT / "cfgs" / "res2net-yolov3-triangle.cfg"]


def torch_pruning_classes(model: Darknet, img: int) -> dict[tuple[str, int], frozenset]:
    """Per producer channel: Torch-Pruning's group as {("out"/"in", module, channel)}."""
    free = SplitFreeDarknet(model).eval()
    dg = tp.DependencyGraph().build_dependency(free, torch.randn(1, 3, img, img), verbose=False)
    names = {m: n for n, m in free.named_modules()}
    widths = free.block_widths()
    out: dict[tuple[str, int], frozenset] = {}
    for conv in [m for m in free.modules() if isinstance(m, nn.Conv2d)]:
        group = dg.get_pruning_group(conv, tp.prune_conv_out_channels,
                                     list(range(conv.out_channels)))
        members = defaultdict(set)
        for item in group.items:
            module, handler = item.dep.target.module, item.dep.handler
            if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                continue
            if isinstance(module, nn.Conv2d) and dg.is_in_channel_pruning_fn(handler):
                side = "in"
            elif isinstance(module, nn.BatchNorm2d) or module.bias is not None:
                side = "out"  # a producer's gamma, or a BN-less conv's bias
            else:
                continue  # a conv with BN: its BN stands for its outputs
            for idx, root in zip(item.idxs, item.root_idxs, strict=True):
                members[root].add((side, *unsplit_name(side, names[module], idx, widths)))
        root_name = names[conv]
        for root, group_set in members.items():
            out[unsplit_name("out", root_name, root, widths)] = frozenset(group_set)
    return out


def our_classes(model: Darknet) -> dict[tuple[str, int], frozenset]:
    a = analyze(model.cfg)
    members = defaultdict(set)
    for s in a.graph.spaces:
        if s.conv is None:
            continue
        for local, k in enumerate(a.classes_of_space(s)):
            members[k].add(("out", s.bn or s.conv, local))
    for c in a.graph.consumers:
        for pos, k in enumerate(a.classes_of_tensor(c.input)):
            members[k].add(("in", c.conv, pos))
    out = {}
    for s in a.graph.spaces:
        if s.conv is None:
            continue
        for local, k in enumerate(a.classes_of_space(s)):
            out[(s.conv, local)] = frozenset(members[k])
    return out


@pytest.mark.parametrize("path", CFGS[:2], ids=lambda p: p.name)
def test_split_free_copy_computes_the_same(path):
    model = randomize_bn(Darknet(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        heads = [o.flatten(1) for o in SplitFreeDarknet(model).eval()(x)]
        raw = [o.permute(0, 1, 4, 2, 3).flatten(1) for o in model(x, raw=True)]
    for a, b in zip(heads, raw, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("path", sized(CFGS))
def test_coupling_classes_match_torch_pruning(path):
    model = Darknet(path)
    ours = our_classes(model)
    theirs = torch_pruning_classes(model, 64)
    assert set(ours) == set(theirs)
    wrong = [key for key in ours if ours[key] != theirs[key]]
    assert not wrong, (f"{len(wrong)} channels differ, e.g. {wrong[0]}: ours "
                       f"{sorted(ours[wrong[0]])[:8]} vs torch-pruning "
                       f"{sorted(theirs[wrong[0]])[:8]}")


def test_oracle_catches_a_wrong_rule(monkeypatch):
    """Not vacuous: a [res2net] rule that forgets the identity residual is caught."""
    from darknet.sections import Res2NetSection
    from prune import rules

    def forgetful(s, shape, ins, b):
        branch = rules._multiscale_branch(s, shape, ins[0], b)
        return b.conv(branch, role="conv3", conv="conv3", bn="bn3", out_channels=shape.out.c,
                      activation="linear", size=1, padding=0)

    model = Darknet(CFGS[0])
    theirs = torch_pruning_classes(model, 64)
    monkeypatch.setitem(rules.COUPLING_RULES, Res2NetSection, forgetful)
    ours = our_classes(model)
    assert ours[("layers.2.conv3", 0)] != theirs[("layers.2.conv3", 0)]
