"""A Torch-Pruning-friendly copy of a Darknet model: the test oracle for the coupling rules.

It re-implements the multi-scale branch on purpose (independently of
``darknet.blocks.multiscale_branch``), so that the couplings Torch-Pruning finds in it check
ours; ``bench/bench_prune.py`` uses it too.

Torch-Pruning traces autograd and cannot follow a Res2Net block's ``torch.split`` (it crashes or
couples the wrong channels). The split-free copy computes the same function without it: each
block's conv1/bn1 is cut into ``scale`` 1x1 convs + BNs with the same weights, route
``groups`` become explicit channel slices, and the forward returns what enters each [yolo]
(the head's reshape is not a channel op). ``unsplit_name`` maps its module channels back.
"""

from __future__ import annotations

import torch
from torch import nn

from darknet.blocks import Bottle2neck, MultiScaleBranch, leaky
from darknet.layers import RouteLayer, YoloLayer
from darknet.model import Darknet
from darknet.shapes import INPUT


class SplitFreeBlock(nn.Module):
    """A Res2Net/Triangle block with conv1 cut into ``scale`` convs: no torch.split."""

    def __init__(self, block: MultiScaleBranch):
        super().__init__()
        w, s = block.width, block.scale
        self.width, self.scale = w, s
        self.conv1_parts = nn.ModuleList()
        self.bn1_parts = nn.ModuleList()
        for k in range(s):
            part = slice(k * w, (k + 1) * w)
            conv = nn.Conv2d(block.conv1.in_channels, w, 1, bias=False)
            conv.weight.data = block.conv1.weight.data[part].clone()
            bn = nn.BatchNorm2d(w)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).data = getattr(block.bn1, name).data[part].clone()
            self.conv1_parts.append(conv)
            self.bn1_parts.append(bn)
        self.convs, self.bns = block.convs, block.bns
        self.residual = isinstance(block, Bottle2neck)
        if self.residual:
            self.conv3, self.bn3 = block.conv3, block.bn3

    def forward(self, x):
        groups = [leaky(bn(conv(x))) for conv, bn in zip(self.conv1_parts, self.bn1_parts,
                                                         strict=True)]
        outs, sp = [], None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            sp = groups[i] if i == 0 else sp + groups[i]
            sp = leaky(bn(conv(sp)))
            outs.append(sp)
        if self.scale > 1:
            outs.append(groups[-1])
        out = torch.cat(outs, dim=1)
        return self.bn3(self.conv3(out)) + x if self.residual else out


class SplitFreeRoute(nn.Module):
    """A route with ``groups`` as an explicit channel slice."""

    def __init__(self, route: RouteLayer):
        super().__init__()
        self.groups, self.group_id = route.groups, route.group_id

    def forward(self, *xs):
        parts = []
        for x in xs:
            n = x.shape[1] // self.groups
            parts.append(x[:, self.group_id * n:(self.group_id + 1) * n])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class SplitFreeDarknet(nn.Module):
    """The Darknet forward over split-free layers, returning what enters each [yolo].

    Shares every module except the blocks' conv1/bn1 with ``model``.
    """

    def __init__(self, model: Darknet):
        super().__init__()
        self.layers = nn.ModuleList()
        self.sources = [layer.sources for layer in model.layers]
        for layer in model.layers:
            if isinstance(layer, MultiScaleBranch):
                layer = SplitFreeBlock(layer)
            elif isinstance(layer, RouteLayer) and layer.groups > 1:
                layer = SplitFreeRoute(layer)
            self.layers.append(layer)

    def forward(self, x):
        outs, heads = [], []
        for layer, sources in zip(self.layers, self.sources, strict=True):
            ins = [x if j == INPUT else outs[j] for j in sources]
            if isinstance(layer, YoloLayer):
                heads.append(ins[0])
                outs.append(ins[0])
            else:
                outs.append(layer(*ins))
        return heads

    def block_widths(self) -> dict[str, int]:
        return {n: m.width for n, m in self.named_modules() if isinstance(m, SplitFreeBlock)}


def unsplit_name(side: str, name: str, idx: int, widths: dict[str, int]) -> tuple[str, int]:
    """Split-free (module, channel) back to the Darknet model's: output j of
    ``layers.2.conv1_parts.3`` (or ``bn1_parts.3``) is output ``3 * width + j`` of conv1
    (bn1); input j of it (``side="in"``) is input j of conv1."""
    for part, whole in (("bn1_parts", "bn1"), ("conv1_parts", "conv1")):
        marker = f".{part}."
        if marker in name:
            prefix, k = name.split(marker)
            offset = int(k) * widths[prefix] if side == "out" else 0
            return f"{prefix}.{whole}", offset + idx
    return name, idx
