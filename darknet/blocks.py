"""Res2Net building blocks (Gao et al., "Res2Net", 2019) as used in Res2Net-YOLOv3.

Both blocks share one multi-scale branch::

    x --conv1/bn1/leaky--> split into `scale` groups G_0 .. G_{s-1} of `width` channels
    sp_0 = K_0(G_0);  sp_i = K_i(sp_{i-1} + G_i)  for i = 1 .. s-2      (K_i: 3x3 conv/bn/leaky)
    branch(x) = cat(sp_0, .., sp_{s-2}, G_{s-1})                          (width * scale channels)

``Bottle2neck`` adds conv3/bn3 and the identity residual (linear after the add);
``Triangle`` returns the branch itself. Parameter names follow the reference implementation
so its state dict loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def leaky(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.leaky_relu(x, 0.1, inplace=True)


class MultiScaleBranch(nn.Module):
    """conv1 -> split -> cumulative 3x3 convs -> concat (see module docstring)."""

    def __init__(self, in_channels: int, width: int, scale: int):
        super().__init__()
        self.width, self.scale = width, scale
        # scale == 1 degenerates to one 3x3 conv on the whole (single) group.
        n_convs = max(scale - 1, 1)
        self.conv1 = nn.Conv2d(in_channels, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, 1, 1, bias=False)
                                   for _ in range(n_convs))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(n_convs))

    @property
    def out_channels(self) -> int:
        return self.width * self.scale

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(leaky(self.bn1(self.conv1(x))), self.width, dim=1)
        outs = []
        sp = None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            sp = groups[i] if i == 0 else sp + groups[i]
            sp = leaky(bn(conv(sp)))
            outs.append(sp)
        if self.scale > 1:
            outs.append(groups[-1])
        return torch.cat(outs, dim=1)

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """(conv, bn) pairs in Darknet storage order: conv1, then every K_i."""
        return [(self.conv1, self.bn1), *zip(self.convs, self.bns, strict=True)]


class Bottle2neck(MultiScaleBranch):
    """Res2Net bottleneck with identity residual: ``conv3(branch(x)) + x``, no activation."""

    def __init__(self, in_channels: int, width: int, scale: int):
        super().__init__(in_channels, width, scale)
        self.conv3 = nn.Conv2d(width * scale, in_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn3(self.conv3(self.branch(x))) + x

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [*super().conv_bn_pairs(), (self.conv3, self.bn3)]


class Triangle(MultiScaleBranch):
    """Res2-Triangle head block: the multi-scale branch alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)
