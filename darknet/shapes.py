"""Channel and spatial bookkeeping, computed once per cfg and published as data.

``infer_shapes`` walks the layers with one rule per section type and returns, per layer,
where its inputs come from and what it produces. The model builder, the FLOPs table, the
pruning analyzer and the surgery all read this instead of re-deriving it. It is also where a
cfg whose channels do not add up is rejected, with the cfg line.
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

INPUT = -1  # source index standing for the network input


@dataclass(frozen=True)
class Shape:
    c: int
    h: int
    w: int


@dataclass(frozen=True)
class LayerShape:
    """One layer's wiring and sizes: ``sources`` are absolute layer indices (or ``INPUT``)."""

    index: int
    kind: str
    sources: tuple[int, ...]
    inputs: tuple[Shape, ...]
    out: Shape
    stride: float  # input image height / output height: 32 for a stride-32 YOLO head
    head: bool = False  # a detection head (its output is a model output)

    @property
    def in_channels(self) -> int:
        return self.inputs[0].c


# Sizes far beyond any real detector, checked before a module is allocated, so that a typo
# such as filters=400000000 fails with its cfg line instead of exhausting memory. For scale:
# YOLOv3's largest convolution has 4,718,592 weights and its largest output holds 5.5M values
# per image at 416 px.
MAX_CONV_WEIGHTS = 1 << 28  # weights of one convolution: 1 GiB of float32
MAX_OUTPUT_VALUES = 1 << 30  # one layer's output for one image: 4 GiB of float32


def _bounded(fail, what: str, weights: int = 0, values: int = 0) -> None:
    if weights > MAX_CONV_WEIGHTS:
        raise fail(f"{what} gives {weights:,} weights in one convolution; the limit is "
                   f"{MAX_CONV_WEIGHTS:,} (1 GiB of float32)")
    if values > MAX_OUTPUT_VALUES:
        raise fail(f"{what} gives {values:,} output values per image; the limit is "
                   f"{MAX_OUTPUT_VALUES:,} (4 GiB of float32)")


# A shape rule maps (section, input shapes, error factory) to the output shape.
ShapeRule = Callable[[Section, tuple[Shape, ...], Callable[[str], CfgError]], Shape]


def _conv(s: ConvSection, ins, fail) -> Shape:
    if s.groups != 1:
        raise fail(f"grouped convolution (groups={s.groups}) is not supported")
    if s.filters < 1 or s.size < 1 or s.stride < 1:
        raise fail(f"filters, size and stride must be >= 1, got {s.filters}, {s.size}, {s.stride}")
    x, p = ins[0], s.effective_padding
    _bounded(fail, f"[convolutional] filters={s.filters} size={s.size} on {x.c} channels",
             weights=x.c * s.filters * s.size**2)
    h, w = (x.h + 2 * p - s.size) // s.stride + 1, (x.w + 2 * p - s.size) // s.stride + 1
    if h < 1 or w < 1:
        raise fail(f"input {x.h}x{x.w} is too small for a {s.size}x{s.size}/{s.stride} conv")
    return Shape(s.filters, h, w)


def _shortcut(s: ShortcutSection, ins, fail) -> Shape:
    first = ins[0]
    for src, x in zip(s.from_, ins[1:], strict=True):
        if x.c != first.c:
            raise fail(
                f"channel mismatch at shortcut: layer {s.index - 1} has {first.c} channels, "
                f"layer {src} (from) has {x.c}"
            )
        if (x.h, x.w) != (first.h, first.w):
            raise fail(
                f"size mismatch at shortcut: layer {s.index - 1} is {first.h}x{first.w}, "
                f"layer {src} is {x.h}x{x.w}"
            )
    return first


def _route(s: RouteSection, ins, fail) -> Shape:
    if s.groups < 1 or not 0 <= s.group_id < s.groups:
        raise fail(f"group_id={s.group_id} must be in 0..groups-1 (groups={s.groups})")
    for src, x in zip(s.layers, ins, strict=True):
        if x.c % s.groups:
            raise fail(f"layer {src} has {x.c} channels, not divisible by groups={s.groups}")
        if (x.h, x.w) != (ins[0].h, ins[0].w):
            raise fail(
                f"route inputs differ in size: layer {s.layers[0]} is {ins[0].h}x{ins[0].w}, "
                f"layer {src} is {x.h}x{x.w}"
            )
    return Shape(sum(x.c // s.groups for x in ins), ins[0].h, ins[0].w)


def _upsample(s: UpsampleSection, ins, fail) -> Shape:
    if s.stride < 1:
        raise fail(f"upsample stride must be >= 1, got {s.stride}")
    x = ins[0]
    return Shape(x.c, x.h * s.stride, x.w * s.stride)


def _maxpool(s: MaxpoolSection, ins, fail) -> Shape:
    size, pad, x = s.effective_size, s.effective_padding, ins[0]
    if size < 1 or s.stride < 1 or pad < 0:
        raise fail(f"bad maxpool size={size} stride={s.stride} padding={pad}")
    return Shape(x.c, (x.h + pad - size) // s.stride + 1, (x.w + pad - size) // s.stride + 1)


def _yolo(s: YoloSection, ins, fail) -> Shape:
    if len(s.anchors) != 2 * s.num:
        raise fail(f"[yolo] num={s.num} needs {2 * s.num} anchor values, got {len(s.anchors)}")
    bad = [m for m in s.anchor_ids if not 0 <= m < s.num]
    if bad:
        raise fail(f"[yolo] mask index {bad[0]} is outside 0..num-1 (num={s.num})")
    if s.classes < 1:
        raise fail(f"[yolo] classes must be >= 1, got {s.classes}")
    if s.scale_x_y <= 0:
        raise fail(f"[yolo] scale_x_y must be > 0, got {s.scale_x_y}")
    need = len(s.anchor_ids) * (s.classes + 5)
    if ins[0].c != need:
        raise fail(
            f"[yolo] expects {len(s.anchor_ids)} anchors x ({s.classes} classes + 5) = {need} "
            f"channels from layer {s.index - 1}, which has {ins[0].c}"
        )
    return ins[0]


def _multiscale_width(s: MultiScaleSection, x: Shape, fail) -> int:
    if s.inplanes is not None and s.inplanes != x.c:
        raise fail(f"[{s.kind}] inplanes={s.inplanes} but its input has {x.c} channels")
    if s.scale < 1:
        raise fail(f"[{s.kind}] scale must be >= 1, got {s.scale}")
    width = s.group_width(x.c)
    if width < 1:
        raise fail(f"[{s.kind}] group width is {width}; set width= explicitly (>= 1)")
    _bounded(fail, f"[{s.kind}] group width {width} x scale {s.scale} on {x.c} channels",
             weights=max(x.c * width * s.scale, 9 * width**2),
             values=width * s.scale * x.h * x.w)
    return width


def _res2net(s: Res2NetSection, ins, fail) -> Shape:
    x = ins[0]
    _multiscale_width(s, x, fail)
    if s.planes is not None and 2 * s.planes != x.c:
        raise fail(
            f"[res2net] planes={s.planes} gives {2 * s.planes} output channels, but the identity "
            f"residual needs planes*2 == input channels ({x.c})"
        )
    return x


def _triangle(s: TriangleSection, ins, fail) -> Shape:
    x = ins[0]
    return Shape(_multiscale_width(s, x, fail) * s.scale, x.h, x.w)


SHAPE_RULES: dict[type[Section], ShapeRule] = {
    ConvSection: _conv,
    ShortcutSection: _shortcut,
    RouteSection: _route,
    UpsampleSection: _upsample,
    MaxpoolSection: _maxpool,
    YoloSection: _yolo,
    Res2NetSection: _res2net,
    TriangleSection: _triangle,
}


def infer_shapes(cfg: Cfg, height: int | None = None, width: int | None = None) -> list[LayerShape]:
    """Per-layer wiring and output shapes for an input of ``height x width`` (default: [net])."""
    net = cfg.net
    image = Shape(net.channels, height or net.height, width or net.width)
    _bounded(lambda msg: CfgError(msg, cfg.path, net.line),
             f"[net] input {image.c}x{image.h}x{image.w}", values=image.c * image.h * image.w)
    outs: list[Shape] = []
    shapes = []
    for s in cfg.layers:
        rule = SHAPE_RULES.get(type(s))
        if rule is None:
            raise CfgError(f"section [{s.kind}] has no shape rule", cfg.path, s.line)
        srcs = s.sources
        ins = tuple(image if j == INPUT else outs[j] for j in srcs)

        def fail(msg: str, _s=s) -> CfgError:
            return CfgError(msg, cfg.path, _s.line)

        out = rule(s, ins, fail)
        _bounded(fail, f"[{s.kind}] output {out.c}x{out.h}x{out.w}", values=out.c * out.h * out.w)
        outs.append(out)
        shapes.append(LayerShape(s.index, s.kind, srcs, ins, out, image.h / out.h, s.HEAD))
    return shapes
