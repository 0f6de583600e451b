"""Res2Net building blocks (Gao et al., "Res2Net", 2019) as used in Res2Net-YOLOv3.

Both blocks share one multi-scale branch::

    x --conv1/bn1/leaky--> split into `scale` groups G_0 .. G_{s-1} of `width` channels
    sp_0 = K_0(G_0);  sp_i = K_i(sp_{i-1} + G_i)  for i = 1 .. s-2      (K_i: 3x3 conv/bn/leaky)
    branch(x) = cat(sp_0, .., sp_{s-2}, G_{s-1})                          (width * scale channels)

``Bottle2neck`` adds conv3/bn3 and the identity residual (linear after the add);
``Triangle`` returns the branch itself. Parameter names follow the reference implementation
so its state dict loads unchanged.

The topology is written once, in :func:`multiscale_branch`, over a small set of operations
(:class:`BranchOps`). The torch forward interprets it on tensors; the pruner's coupling rule
(``prune.rules``) interprets it on channel-graph tensors, and the Darknet lowering on cfg
sections. A change to the branch is therefore a change in one place.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import torch
from torch import nn

T = TypeVar("T")

# The fixed parts of both blocks, for every interpreter of the topology.
ACTIVATION = "leaky"  # after bn1 and every K_i's BN; bn3 is linear before the residual add
KERNEL = 3  # the K_i convs: 3x3, stride 1, padding 1 ("same")


class BranchOps(Protocol[T]):
    """What :func:`multiscale_branch` needs: five operations on some kind of value ``T``."""

    def conv1(self, x: T) -> T:
        """conv1/bn1/leaky: 1x1 to ``width * scale`` channels."""

    def split(self, y: T, parts: int) -> list[T]:
        """``parts`` equal channel groups G_0 .. G_{parts-1}."""

    def conv(self, k: int, x: T) -> T:
        """K_k: 3x3 conv/bn/leaky, ``width`` to ``width`` channels."""

    def add(self, a: T, b: T) -> T:
        """Element-wise sum (the cumulative add ``sp_{k-1} + G_k``), no activation."""

    def concat(self, parts: list[T]) -> T:
        """Channel concatenation."""


def num_inner_convs(scale: int) -> int:
    """How many K_i a branch of ``scale`` groups has (scale 1: one conv on the only group)."""
    return max(scale - 1, 1)


def multiscale_branch(ops: BranchOps[T], x: T, scale: int) -> T:
    """The multi-scale branch of the module docstring, in terms of ``ops``."""
    groups = ops.split(ops.conv1(x), scale)
    outs: list[T] = []
    sp = None
    for k in range(num_inner_convs(scale)):
        sp = ops.conv(k, groups[0] if k == 0 else ops.add(sp, groups[k]))
        outs.append(sp)
    if scale > 1:
        outs.append(groups[-1])  # G_{s-1} passes straight to the concat
    return ops.concat(outs)


ACTIVATION = "leaky"  # after bn1 and every K_i's BN (not after bn3: the add is linear)


def leaky(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.leaky_relu(x, 0.1, inplace=True)


class _TensorOps:
    """:class:`BranchOps` on tensors, with a block's own convs and BNs."""

    def __init__(self, block: MultiScaleBranch):
        self.block = block

    def conv1(self, x: torch.Tensor) -> torch.Tensor:
        return leaky(self.block.bn1(self.block.conv1(x)))

    def split(self, y: torch.Tensor, parts: int) -> list[torch.Tensor]:
        return list(torch.split(y, self.block.width, dim=1))

    def conv(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return leaky(self.block.bns[k](self.block.convs[k](x)))

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def concat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, dim=1)


class MultiScaleBranch(nn.Module):
    """conv1 -> split -> cumulative 3x3 convs -> concat (see module docstring)."""

    def __init__(self, in_channels: int, width: int, scale: int):
        super().__init__()
        self.width, self.scale = width, scale
        n_convs = num_inner_convs(scale)
        self.conv1 = nn.Conv2d(in_channels, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, KERNEL, 1, KERNEL // 2, bias=False)
                                   for _ in range(n_convs))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(n_convs))

    @property
    def out_channels(self) -> int:
        return self.width * self.scale

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return multiscale_branch(_TensorOps(self), x, self.scale)

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
