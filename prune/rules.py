"""Coupling rules: one function per section type that adds the layer to the channel graph.

A rule gets the section, its published :class:`~darknet.shapes.LayerShape`, the graph tensors
of its inputs (in ``LayerShape.sources`` order) and the :class:`~prune.graph.GraphBuilder`,
and returns the tensor the layer outputs. Module names passed to the builder are those the
layer module in ``darknet.layers`` registers, in its ``conv_bn_pairs()`` order (a test checks
both against the built model, so a rule cannot drift from its module).
"""

from __future__ import annotations

from collections.abc import Callable

from darknet import blocks
from darknet.cfg import Cfg
from darknet.errors import CfgError
from darknet.sections import (
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
from darknet.shapes import INPUT, LayerShape, infer_shapes

from .graph import ChannelGraph, GraphBuilder

CouplingRule = Callable[[Section, LayerShape, list[int], GraphBuilder], int]

def _conv(s: ConvSection, shape: LayerShape, ins: list[int], b: GraphBuilder) -> int:
    return b.conv(ins[0], role="conv", conv="conv", bn="bn" if s.batch_normalize else None,
                  out_channels=s.filters, activation=s.activation, size=s.size,
                  padding=s.effective_padding)


def _shortcut(s: ShortcutSection, shape: LayerShape, ins: list[int], b: GraphBuilder) -> int:
    return b.add(ins, s.activation, residual=True)


def _route(s: RouteSection, shape: LayerShape, ins: list[int], b: GraphBuilder) -> int:
    if s.groups == 1:
        return b.concat(ins)
    # Each input is chunked into `groups` equal parts; pruning keeps the chunks equally wide
    # (not necessarily the same indices), so chunk(group_id) still selects the same channels.
    picked = []
    for t in ins:
        chunks = b.split(t, s.groups)
        b.same_width(chunks, f"[route] groups={s.groups} reads chunk {s.group_id} of "
                             f"{s.groups} equal chunks")
        picked.append(chunks[s.group_id])
    return b.concat(picked)


def _pass_through(s: Section, shape: LayerShape, ins: list[int], b: GraphBuilder) -> int:
    return b.same(ins[0])


def _yolo(s: YoloSection, shape: LayerShape, ins: list[int], b: GraphBuilder) -> int:
    b.fix(ins[0], f"read by [yolo] layer {s.index}")
    return ins[0]


class _CouplingOps:
    """The multi-scale branch (``darknet.blocks.multiscale_branch``) on graph tensors.

    It records the split's groups and the K_i outputs: they must all keep one width.
    """

    def __init__(self, b: GraphBuilder, width: int, scale: int):
        self.b, self.width, self.scale = b, width, scale
        self.parts: list[int] = []

    def conv1(self, x: int) -> int:
        return self.b.conv(x, role="conv1", conv="conv1", bn="bn1",
                           out_channels=self.width * self.scale, activation=blocks.ACTIVATION,
                           size=1, padding=0)

    def split(self, y: int, parts: int) -> list[int]:
        groups = self.b.split(y, parts)
        self.parts += groups
        return groups

    def conv(self, k: int, x: int) -> int:
        out = self.b.conv(x, role=f"K_{k}", conv=f"convs.{k}", bn=f"bns.{k}",
                          out_channels=self.width, activation=blocks.ACTIVATION,
                          size=blocks.KERNEL, padding=blocks.KERNEL // 2)
        self.parts.append(out)
        return out

    def add(self, a: int, b: int) -> int:
        return self.b.add([a, b], "linear", residual=False)

    def concat(self, parts: list[int]) -> int:
        return self.b.concat(parts)


def _multiscale_branch(s: MultiScaleSection, shape: LayerShape, x: int, b: GraphBuilder) -> int:
    ops = _CouplingOps(b, s.group_width(shape.in_channels), s.scale)
    out = blocks.multiscale_branch(ops, x, s.scale)
    b.same_width(ops.parts, f"[{s.kind}] one width for groups G_0..G_{s.scale - 1} and "
                            f"every K_i (scale={s.scale})")
    return out


def _res2net(s: Res2NetSection, shape: LayerShape, ins: list[int], b: GraphBuilder) -> int:
    x = ins[0]
    branch = _multiscale_branch(s, shape, x, b)
    f = b.conv(branch, role="conv3", conv="conv3", bn="bn3", out_channels=shape.out.c,
               activation="linear", size=1, padding=0)
    # Identity residual: the block's output channel space *is* its input channel space.
    return b.add([f, x], "linear", residual=True)


def _triangle(s: TriangleSection, shape: LayerShape, ins: list[int], b: GraphBuilder) -> int:
    return _multiscale_branch(s, shape, ins[0], b)


COUPLING_RULES: dict[type[Section], CouplingRule] = {
    ConvSection: _conv,
    ShortcutSection: _shortcut,
    RouteSection: _route,
    UpsampleSection: _pass_through,
    MaxpoolSection: _pass_through,
    YoloSection: _yolo,
    Res2NetSection: _res2net,
    TriangleSection: _triangle,
}


def build_channel_graph(cfg: Cfg, shapes: list[LayerShape] | None = None) -> ChannelGraph:
    """The channel graph of ``cfg``, one coupling rule per layer, in forward order."""
    shapes = shapes if shapes is not None else infer_shapes(cfg)
    b = GraphBuilder(cfg.net.channels)
    outputs: list[int] = []
    for section, shape in zip(cfg.layers, shapes, strict=True):
        rule = COUPLING_RULES.get(type(section))
        if rule is None:
            raise CfgError(f"section [{section.kind}] has no coupling rule", cfg.path,
                           section.line)
        b.enter_layer(shape.index, section.kind)
        ins = [b.graph.image if j == INPUT else outputs[j] for j in shape.sources]
        out = rule(section, shape, ins, b)
        if b.width(out) != shape.out.c:
            raise AssertionError(f"coupling rule for [{section.kind}] gives {b.width(out)} "
                                 f"channels at layer {shape.index}, shapes say {shape.out.c}")
        outputs.append(out)
    b.graph.layer_outputs = outputs
    return b.graph
