"""``[res2net]`` and ``[triangle]`` lowered to the sections every Darknet reader knows.

The branch is not re-described here: :func:`darknet.blocks.multiscale_branch` runs over
:class:`_SectionOps`, whose values are layer indices of the new cfg and whose operations
emit sections (through ``darknet.edit.rewrite``, which renumbers the rest of the cfg). For a
``[res2net]`` of scale 4 and group width w on a C-channel input that gives::

    conv1  [convolutional] size=1 filters=4w leaky
           [route] layers=conv1 groups=4 group_id=0        G_0
    K_0    [convolutional] size=3 pad=1 filters=w leaky
           [route] layers=conv1 groups=4 group_id=1        G_1
           [shortcut] from=K_0 activation=linear           G_1 + sp_0
    K_1    [convolutional] size=3 pad=1 filters=w leaky
           ... K_2 likewise, then G_3's [route] and
           [route] layers=K_0,K_1,K_2,G_3                  the concat
    conv3  [convolutional] size=1 filters=C linear
           [shortcut] from=<block input> activation=linear the identity residual

A ``[triangle]`` stops after the concat. A scale-1 branch is conv1 then one 3x3 conv (a
one-group split is conv1 itself). Every conv has its BN, so the convs keep the storage order
conv1, K_0 .. K_{s-2}, conv3 and the ``.weights`` payload is the original's, float for float.

``[route] groups`` is AlexeyAB Darknet's (and OpenCV DNN's); pjreddie's Darknet lacks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from common.io import write_together
from darknet.blocks import ACTIVATION, KERNEL, multiscale_branch
from darknet.cfg import Cfg, format_cfg
from darknet.edit import Rewriter, rewrite
from darknet.errors import CfgError
from darknet.model import Darknet
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
from darknet.shapes import INPUT, infer_shapes
from darknet.weights import storage_tensors, write_weights

from .check import OutputCheck, check_images, compare_outputs, float64_copy

# Sections Darknet itself reads: they pass through unchanged.
DARKNET_SECTIONS = frozenset({ConvSection, ShortcutSection, RouteSection, UpsampleSection,
                              MaxpoolSection, YoloSection})


class LoweringError(CfgError):
    """A cfg section that plain Darknet sections cannot express."""


@dataclass(frozen=True)
class _Group:
    """Group ``index`` of a split of layer ``source`` into ``parts``: a [route] not yet emitted
    (the layout interleaves each group's route with the convs that read it)."""

    source: int
    parts: int
    index: int


class _SectionOps:
    """:class:`darknet.blocks.BranchOps` emitting sections; a value is a new layer index."""

    def __init__(self, rw: Rewriter, block: MultiScaleSection, in_channels: int):
        self.rw, self.block, self.in_channels = rw, block, in_channels
        self.width = block.group_width(in_channels)

    def emit(self, section: Section) -> int:
        # Emitted sections carry the block's cfg line, so a miswiring names the block.
        return self.rw.emit(dataclasses.replace(section, line=self.block.line))

    def index(self, value: int | _Group) -> int:
        """The layer holding ``value``, emitting a group's [route] on first use."""
        if not isinstance(value, _Group):
            return value
        if value.parts == 1:
            return value.source
        return self.emit(RouteSection(layers=(value.source,), groups=value.parts,
                                      group_id=value.index, relative=(True,),
                                      given=frozenset({"layers", "groups", "group_id"})))

    def as_last(self, value: int | _Group) -> None:
        """Make ``value`` the last layer, the one a [convolutional] reads."""
        index = self.index(value)
        if index != self.rw.last_index:
            self.emit(RouteSection(layers=(self.ref(index),), relative=(True,)))

    def ref(self, index: int) -> int:
        if index == INPUT:
            raise LoweringError(
                f"[{self.block.kind}] reads the input image directly, which a Darknet [route] "
                "or [shortcut] cannot refer to (its residual or split needs a layer before it)",
                self.rw.cfg.path, self.block.line)
        return index

    def conv_layer(self, filters: int, size: int, activation: str) -> int:
        """A conv with BN reading the last layer (conv1, a K_i or conv3)."""
        return self.emit(ConvSection(
            filters=filters, size=size, stride=1, pad=1, batch_normalize=1,
            activation=activation,
            given=frozenset({"filters", "size", "stride", "pad", "batch_normalize",
                             "activation"})))

    def shortcut(self, source: int) -> int:
        """The last layer plus ``source``, no activation."""
        return self.emit(ShortcutSection(from_=(self.ref(source),), activation="linear",
                                         relative=(True,),
                                         given=frozenset({"from", "activation"})))

    # ------------------------------------------------------------ BranchOps

    def conv1(self, x: int) -> int:
        self.as_last(x)
        return self.conv_layer(self.width * self.block.scale, 1, ACTIVATION)

    def split(self, y: int, parts: int) -> list[_Group]:
        return [_Group(y, parts, i) for i in range(parts)]

    def conv(self, k: int, x: int | _Group) -> int:
        self.as_last(x)
        return self.conv_layer(self.width, KERNEL, ACTIVATION)

    def add(self, a: int | _Group, b: int | _Group) -> int:
        a, b = self.index(a), self.index(b)
        if self.rw.last_index == a:
            a, b = b, a  # exact either way: float addition commutes
        self.as_last(b)
        return self.shortcut(a)

    def concat(self, parts: list[int | _Group]) -> int:
        indices = [self.index(p) for p in parts]
        if len(indices) == 1:
            return indices[0]
        return self.emit(RouteSection(layers=tuple(indices), relative=(True,) * len(indices)))


def _lower_triangle(ops: _SectionOps, x: int) -> int:
    return multiscale_branch(ops, x, ops.block.scale)


def _lower_res2net(ops: _SectionOps, x: int) -> int:
    ops.as_last(multiscale_branch(ops, x, ops.block.scale))
    ops.conv_layer(ops.in_channels, 1, "linear")  # conv3/bn3: linear before the residual
    return ops.shortcut(x)


# One rule per project-only section: (ops, the block's input as a new index) -> its output.
LOWERINGS: dict[type[Section], Callable[[_SectionOps, int], int]] = {
    Res2NetSection: _lower_res2net,
    TriangleSection: _lower_triangle,
}


def needs_lowering(cfg: Cfg) -> bool:
    return any(type(s) not in DARKNET_SECTIONS for s in cfg.layers)


def lower_cfg(cfg: Cfg) -> Cfg:
    """``cfg`` with every project-only section replaced by plain Darknet sections."""
    shapes = infer_shapes(cfg)

    def rule(rw: Rewriter, section: Section) -> None:
        if type(section) in DARKNET_SECTIONS:
            rw.keep(section)
            return
        lowering = LOWERINGS.get(type(section))
        if lowering is None:
            raise LoweringError(f"[{section.kind}] has no plain Darknet form", cfg.path,
                                section.line)
        ops = _SectionOps(rw, section, shapes[section.index].in_channels)
        lowering(ops, rw.new_index(section.index - 1))

    return rewrite(cfg, rule)


def lowered_model(model: Darknet) -> Darknet:
    """``model`` rebuilt on ``lower_cfg(model.cfg)`` with its weights, pair by pair in
    storage order (the lowering keeps that order, so every pair finds its twin)."""
    lowered = Darknet(lower_cfg(model.cfg))
    old, new = list(model.conv_bn_pairs()), list(lowered.conv_bn_pairs())
    if len(old) != len(new):
        raise RuntimeError(f"lowering changed the number of convs: {len(old)} -> {len(new)}")
    with torch.no_grad():
        for (_, conv, bn), (_, twin_conv, twin_bn) in zip(old, new, strict=True):
            for src, dst in zip(storage_tensors(conv, bn), storage_tensors(twin_conv, twin_bn),
                                strict=True):
                if src.shape != dst.shape:
                    raise RuntimeError(f"lowering changed a tensor's shape: {list(src.shape)} "
                                       f"-> {list(dst.shape)}")
                dst.copy_(src)
    lowered.header = model.header
    return lowered.to(next(model.parameters()).device).train(model.training)


def check_lowered(model: Darknet, lowered: Darknet, img_size: int | None = None) -> OutputCheck:
    """Raw head outputs of both on seeded random images, in float64; ExportError on a
    difference above ``shipping.check.TOLERANCE`` of the output scale."""
    images = check_images(model, img_size or model.cfg.net.height).double()

    def logits(m: Darknet):
        with torch.no_grad():
            return torch.cat([r.flatten(1, -2) for r in float64_copy(m)(images, raw=True)], 1)

    return compare_outputs(logits(model).numpy(), logits(lowered).numpy(),
                           "lowered Darknet model")


@dataclass(frozen=True)
class LoweredFiles:
    cfg: Path
    weights: Path
    lowered: bool  # False: the cfg had nothing to lower and was written unchanged
    layers: int  # in the written cfg
    max_abs_diff: float


def _write_pair(model: Darknet, cfg_text: bytes, cfg_path: Path, weights_path: Path) -> None:
    write_together([(weights_path, lambda f: write_weights(model, f)),
                    (cfg_path, lambda f: f.write(cfg_text))])


def write_lowered(model: Darknet, cfg_path: str | Path, weights_path: str | Path,
                  img_size: int | None = None) -> LoweredFiles:
    """``model`` as plain Darknet files, checked before anything is written.

    A cfg without project-only sections is copied byte for byte (when ``model.cfg`` was
    read from a file) and its weights written as they are. The pair is written together
    (``common.io.write_together``, the cfg last): a kill or a full disk midway leaves an
    earlier pair whole, or no cfg, never a cfg beside weights of another model.
    """
    cfg_path, weights_path = Path(cfg_path), Path(weights_path)
    if not needs_lowering(model.cfg):
        source = Path(model.cfg.path)
        text = source.read_bytes() if source.is_file() else format_cfg(model.cfg).encode()
        _write_pair(model, text, cfg_path, weights_path)
        return LoweredFiles(cfg_path, weights_path, False, len(model.cfg.layers), 0.0)
    lowered = lowered_model(model)
    check = check_lowered(model, lowered, img_size)
    _write_pair(lowered, format_cfg(lowered.cfg).encode("utf-8"), cfg_path, weights_path)
    return LoweredFiles(cfg_path, weights_path, True, len(lowered.cfg.layers),
                        check.max_abs_diff)
