"""What a network costs, from its cfg and the published shapes: parameters and multiply-adds.

One cost rule per section type lists the layer's convolutions (with the output size each runs
at); everything else follows from those. Multiply-adds are counted as thop counts them, so
the GFLOPs this project has always printed stay the same:

* a convolution: ``C_out * H_out * W_out * C_in * k * k`` (a bias adds nothing; grouped
  convolutions are refused by ``darknet.shapes``);
* a BatchNorm: 4 per element (normalize, then the affine scale and shift, 2 each in thop);
* activations, upsampling (nearest), pooling, adds, concats, routes and the ``[yolo]`` decode:
  nothing.

GFLOPs are ``2 * multiply-adds / 1e9``. The ranking in ``prune.importance`` charges each
coupled channel its convs' share, from the same :class:`ConvCost` rows. The sizes come from
``darknet.shapes``, never from a forward pass (tests check that thop agrees, exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import blocks
from .cfg import Cfg
from .errors import CfgError
from .sections import (
    ConvSection,
    MaxpoolSection,
    MultiScaleSection,
    Res2NetSection,
    RouteSection,
    Section,
    ShortcutSection,
    TriangleSection,
    UpsampleSection,
    YoloSection,
)
from .shapes import LayerShape, infer_shapes

BN_MACS_PER_ELEMENT = 4


@dataclass(frozen=True)
class ConvCost:
    """One convolution (and its BN): ``name`` is its module path inside the layer."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    batch_norm: bool  # False: the conv has a bias instead
    h: int  # output size
    w: int
    stride: int = 1
    padding: int = 0
    activation: str = "linear"  # after the BN (or bias); what a latency measurement fuses

    @property
    def input_size(self) -> tuple[int, int]:
        """The input's H, W (``darknet.shapes`` only makes sizes this formula inverts)."""
        return ((self.h - 1) * self.stride + self.kernel - 2 * self.padding,
                (self.w - 1) * self.stride + self.kernel - 2 * self.padding)

    @property
    def macs_per_output_channel(self) -> int:
        return self.in_channels * self.kernel * self.kernel * self.h * self.w

    @property
    def macs_per_input_channel(self) -> int:
        return self.out_channels * self.kernel * self.kernel * self.h * self.w

    @property
    def macs(self) -> int:
        bn = BN_MACS_PER_ELEMENT * self.out_channels * self.h * self.w if self.batch_norm else 0
        return self.out_channels * self.macs_per_output_channel + bn

    @property
    def params(self) -> int:
        weight = self.out_channels * self.in_channels * self.kernel * self.kernel
        return weight + self.out_channels * (2 if self.batch_norm else 1)


@dataclass(frozen=True)
class LayerCost:
    index: int
    kind: str
    convs: tuple[ConvCost, ...]

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.convs)

    @property
    def params(self) -> int:
        return sum(c.params for c in self.convs)


@dataclass(frozen=True)
class NetworkCost:
    img_size: tuple[int, int]  # H, W of the input
    layers: tuple[LayerCost, ...]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def gflops(self) -> float:
        return 2.0 * float(self.macs) / 1e9


# A cost rule maps (section, its published shape) to the layer's convs in storage order.
CostRule = Callable[[Section, LayerShape], tuple[ConvCost, ...]]


def _conv(s: ConvSection, shape: LayerShape) -> tuple[ConvCost, ...]:
    out = shape.out
    return (ConvCost("conv", shape.in_channels, out.c, s.size, bool(s.batch_normalize),
                     out.h, out.w, s.stride, s.effective_padding, s.activation),)


def _nothing(s: Section, shape: LayerShape) -> tuple[ConvCost, ...]:
    return ()


class _CostOps:
    """The multi-scale branch (``darknet.blocks.multiscale_branch``) on channel counts: it
    lists each conv it meets, all at the block's resolution."""

    def __init__(self, s: MultiScaleSection, shape: LayerShape):
        self.width, self.scale = s.group_width(shape.in_channels), s.scale
        self.h, self.w = shape.out.h, shape.out.w
        self.convs: list[ConvCost] = []

    def record(self, name: str, c_in: int, c_out: int, kernel: int,
               activation: str = blocks.ACTIVATION) -> int:
        self.convs.append(ConvCost(name, c_in, c_out, kernel, True, self.h, self.w, 1,
                                   kernel // 2, activation))
        return c_out

    def conv1(self, x: int) -> int:
        return self.record("conv1", x, self.width * self.scale, 1)

    def split(self, y: int, parts: int) -> list[int]:
        return [y // parts] * parts

    def conv(self, k: int, x: int) -> int:
        return self.record(f"convs.{k}", x, self.width, blocks.KERNEL)

    def add(self, a: int, b: int) -> int:
        return a

    def concat(self, parts: list[int]) -> int:
        return sum(parts)


def _triangle(s: TriangleSection, shape: LayerShape) -> tuple[ConvCost, ...]:
    ops = _CostOps(s, shape)
    blocks.multiscale_branch(ops, shape.in_channels, s.scale)
    return tuple(ops.convs)


def _res2net(s: Res2NetSection, shape: LayerShape) -> tuple[ConvCost, ...]:
    ops = _CostOps(s, shape)
    ops.record("conv3", blocks.multiscale_branch(ops, shape.in_channels, s.scale), shape.out.c, 1,
               "linear")
    return tuple(ops.convs)


COST_RULES: dict[type[Section], CostRule] = {
    ConvSection: _conv,
    ShortcutSection: _nothing,
    RouteSection: _nothing,
    UpsampleSection: _nothing,
    MaxpoolSection: _nothing,
    YoloSection: _nothing,
    Res2NetSection: _res2net,
    TriangleSection: _triangle,
}


def network_cost(cfg: Cfg, height: int | None = None, width: int | None = None) -> NetworkCost:
    """Per-layer convs, parameters and multiply-adds for an input of ``height x width``
    (default: the cfg's [net] size)."""
    shapes = infer_shapes(cfg, height, width)
    layers = []
    for section, shape in zip(cfg.layers, shapes, strict=True):
        rule = COST_RULES.get(type(section))
        if rule is None:
            raise CfgError(f"section [{section.kind}] has no cost rule", cfg.path, section.line)
        layers.append(LayerCost(shape.index, shape.kind, rule(section, shape)))
    image = (height or cfg.net.height, width or cfg.net.width)
    return NetworkCost(image, tuple(layers))
