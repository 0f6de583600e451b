"""The seed design note's Bottle2neck and Triangle forward, restated as a numeric oracle.

Kept deliberately literal (per-group loop, concat as it goes, ``LeakyReLU(1.0)`` after the
residual add, ``stype='normal'``, no downsample) so that our shared multi-scale branch can be
checked against it with the same weights. Parameter names match, so state dicts transfer.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SeedBottle2neck(nn.Module):
    expansion = 2

    def __init__(self, inplanes, planes, base_width=26, scale=4, width=None, residual=True):
        super().__init__()
        width = width or int(math.floor(planes * (base_width / 64.0)))
        self.conv1 = nn.Conv2d(inplanes, width * scale, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = 1 if scale == 1 else scale - 1
        self.convs = nn.ModuleList(
            [nn.Conv2d(width, width, 3, 1, 1, bias=False) for _ in range(self.nums)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(self.nums)])
        self.residual = residual
        if residual:
            self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.leaky = nn.LeakyReLU(0.1)
        self.linear = nn.LeakyReLU(1.0)
        self.scale, self.width = scale, width

    def forward(self, x):
        out = self.leaky(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        for i in range(self.nums):
            sp = spx[i] if i == 0 else sp + spx[i]  # noqa: F821 - defined at i == 0
            sp = self.leaky(self.bns[i](self.convs[i](sp)))
            out = sp if i == 0 else torch.cat((out, sp), 1)
        if self.scale != 1:
            out = torch.cat((out, spx[self.nums]), 1)
        if not self.residual:  # Triangle: the concat is the output
            return out
        return self.linear(self.bn3(self.conv3(out)) + x)


def seed_triangle(inplanes, planes, base_width=16, scale=4, width=None) -> SeedBottle2neck:
    return SeedBottle2neck(inplanes, planes, base_width, scale, width, residual=False)
