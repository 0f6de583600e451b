"""BatchNorm folded into its conv: the form every shipped model starts from.

In eval mode a BN is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma +
beta``, so the conv before it can absorb it: weights scaled by ``gamma / sqrt(var + eps)``
per output channel, bias ``(b - mean) * gamma / sqrt(var + eps) + beta``. That removes one
op per conv, which matters at batch 1 on a CPU, where a small network's forward costs about
as much in per-op dispatch as in arithmetic. Every runtime form (``shipping.backends``)
and every exported file (``shipping.formats``) is made from the folded model.

The folded model is for inference only: it has no BNs to train or to write to ``.weights``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from darknet.model import Darknet


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with a bias that computes ``bn(conv(x))`` of eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       conv.padding, conv.dilation, conv.groups, bias=True,
                       padding_mode=conv.padding_mode)
    folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return folded.to(conv.weight.device)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def fold_batchnorm(model: Darknet) -> Darknet:
    """An eval-mode copy of ``model`` with every (conv, BN) pair folded into one conv.

    The BN modules become ``nn.Identity`` (``ConvLayer`` drops its ``bn``), so the forward
    code runs unchanged.
    """
    folded = copy.deepcopy(model).eval()
    names = {id(m): n for n, m in folded.named_modules()}
    pairs = [(names[id(conv)], names[id(bn)], conv, bn)
             for _, conv, bn in folded.conv_bn_pairs() if bn is not None]
    for conv_name, bn_name, conv, bn in pairs:
        _replace(folded, conv_name, fold_conv_bn(conv, bn))
        _replace(folded, bn_name, nn.Identity())
    for layer in folded.layers:
        if isinstance(getattr(layer, "bn", None), nn.Identity):
            layer.bn = None
    return folded
