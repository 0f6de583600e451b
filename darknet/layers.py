"""One PyTorch module per section type, and the registry that builds them.

Every module knows its ``sources`` (absolute indices of the layers it reads, attached once by
the builder) and its ``(conv, bn)`` pairs in Darknet storage order, so the model's forward,
the weights code, the sparsity penalty and the pruner never branch on section types.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.boxes import YoloDecode

from .blocks import Bottle2neck, Triangle
from .sections import (
    ConvSection,
    MaxpoolSection,
    Res2NetSection,
    RouteSection,
    Section,
    ShortcutSection,
    TriangleSection,
    UpsampleSection,
    YoloSection,
)
from .shapes import LayerShape

ConvBN = tuple[nn.Conv2d, nn.BatchNorm2d | None]


def make_activation(name: str) -> nn.Module:
    factories: dict[str, Callable[[], nn.Module]] = {
        "linear": nn.Identity,
        "leaky": lambda: nn.LeakyReLU(0.1, inplace=True),
        "relu": lambda: nn.ReLU(inplace=True),
        "logistic": nn.Sigmoid,
        "mish": nn.Mish,
        "swish": nn.SiLU,
    }
    return factories[name]()


class NoWeights:
    """Mixin for layers that store nothing in a ``.weights`` file."""

    def conv_bn_pairs(self) -> list[ConvBN]:
        return []


class ConvLayer(nn.Module):
    def __init__(self, s: ConvSection, shape: LayerShape):
        super().__init__()
        bn = bool(s.batch_normalize)
        self.conv = nn.Conv2d(shape.in_channels, s.filters, s.size, s.stride,
                              s.effective_padding, bias=not bn)
        self.bn = nn.BatchNorm2d(s.filters) if bn else None
        self.act = make_activation(s.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def conv_bn_pairs(self) -> list[ConvBN]:
        return [(self.conv, self.bn)]


class ShortcutLayer(NoWeights, nn.Module):
    def __init__(self, s: ShortcutSection, shape: LayerShape):
        super().__init__()
        self.act = make_activation(s.activation)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return self.act(out)


class RouteLayer(NoWeights, nn.Module):
    def __init__(self, s: RouteSection, shape: LayerShape):
        super().__init__()
        self.groups, self.group_id = s.groups, s.group_id

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.groups > 1:
            xs = tuple(x.chunk(self.groups, dim=1)[self.group_id] for x in xs)
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)


class UpsampleLayer(NoWeights, nn.Module):
    def __init__(self, s: UpsampleSection, shape: LayerShape):
        super().__init__()
        self.stride = s.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=self.stride, mode="nearest")


class MaxpoolLayer(NoWeights, nn.Module):
    """Darknet pads ``padding // 2`` before and the rest after, with -inf (ignored cells)."""

    def __init__(self, s: MaxpoolSection, shape: LayerShape):
        super().__init__()
        self.size, self.stride = s.effective_size, s.stride
        pad = s.effective_padding
        self.pads = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = nn.functional.pad(x, self.pads, value=float("-inf"))
        return nn.functional.max_pool2d(x, self.size, self.stride)


class YoloLayer(NoWeights, nn.Module):
    """Reshapes a head's conv output; decodes boxes in eval mode (``common.boxes.YoloDecode``).

    Training: ``[B, A, H, W, 5 + C]`` raw head inputs (tx, ty, tw, th, objectness, classes).
    Eval: ``[B, A*H*W, 5 + C]`` with cx, cy, w, h in input pixels and probabilities.
    """

    def __init__(self, s: YoloSection, shape: LayerShape):
        super().__init__()
        self.num_classes = s.classes
        self.ignore_thresh = s.ignore_thresh
        self.stride = shape.stride
        self.layer_index = s.index
        self.coder = YoloDecode(scale_x_y=s.scale_x_y, new_coords=bool(s.new_coords))
        self.register_buffer("anchors", torch.tensor(s.masked_anchors), persistent=False)

    @property
    def num_anchors(self) -> int:
        return self.anchors.shape[0]

    def forward(self, x: torch.Tensor, raw: bool | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        p = x.view(b, self.num_anchors, self.num_classes + 5, h, w).permute(0, 1, 3, 4, 2)
        if self.training if raw is None else raw:
            return p.contiguous()
        return self.decode(p)

    def decode(self, p: torch.Tensor) -> torch.Tensor:
        anchors = self.anchors.view(1, self.num_anchors, 1, 1, 2).to(p.dtype)
        return self.coder.detections(p, anchors, self.stride)


class Res2NetLayer(Bottle2neck):
    def __init__(self, s: Res2NetSection, shape: LayerShape):
        super().__init__(shape.in_channels, s.group_width(shape.in_channels), s.scale)


class TriangleLayer(Triangle):
    def __init__(self, s: TriangleSection, shape: LayerShape):
        super().__init__(shape.in_channels, s.group_width(shape.in_channels), s.scale)


BUILDERS: dict[type[Section], Callable[..., nn.Module]] = {
    ConvSection: ConvLayer,
    ShortcutSection: ShortcutLayer,
    RouteSection: RouteLayer,
    UpsampleSection: UpsampleLayer,
    MaxpoolSection: MaxpoolLayer,
    YoloSection: YoloLayer,
    Res2NetSection: Res2NetLayer,
    TriangleSection: TriangleLayer,
}
