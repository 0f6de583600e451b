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
coupled channel its convs' share, from the same :class:`ConvCost` rows. Torch-free: the sizes
come from ``darknet.shapes``, never from a forward pass (tests check thop agrees, exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
                     out.h, out.w),)


def _nothing(s: Section, shape: LayerShape) -> tuple[ConvCost, ...]:
    return ()


def _multiscale_branch(s: MultiScaleSection, shape: LayerShape) -> tuple[ConvCost, ...]:
    """conv1 (1x1), then the 3x3 K_i, all at the block's resolution (darknet.blocks)."""
    width, h, w = s.group_width(shape.in_channels), shape.out.h, shape.out.w
    conv1 = ConvCost("conv1", shape.in_channels, width * s.scale, 1, True, h, w)
    return (conv1, *(ConvCost(f"convs.{k}", width, width, 3, True, h, w)
                     for k in range(max(s.scale - 1, 1))))


def _res2net(s: Res2NetSection, shape: LayerShape) -> tuple[ConvCost, ...]:
    branch = _multiscale_branch(s, shape)
    conv3 = ConvCost("conv3", branch[0].out_channels, shape.out.c, 1, True, shape.out.h,
                     shape.out.w)
    return (*branch, conv3)


COST_RULES: dict[type[Section], CostRule] = {
    ConvSection: _conv,
    ShortcutSection: _nothing,
    RouteSection: _nothing,
    UpsampleSection: _nothing,
    MaxpoolSection: _nothing,
    YoloSection: _nothing,
    Res2NetSection: _res2net,
    TriangleSection: _multiscale_branch,
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
