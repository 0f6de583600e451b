"""Rewriting a cfg layer by layer: drop layers, replace one by several, renumber the rest.

Layer pruning removes whole blocks and the Darknet export lowers one ``[res2net]`` into a
dozen plain sections; both move every later layer, so every route and shortcut index after
the change must be renumbered. :func:`rewrite` does that once for both: it walks the old
layers, and for each a *rule* tells a :class:`Rewriter` what to emit::

    def lower(rw: Rewriter, section: Section) -> None:
        if isinstance(section, Res2NetSection):
            first = rw.emit(ConvSection(...))                # reads the previous new layer
            rw.emit(RouteSection(layers=(first,), groups=4, group_id=1, relative=(True,)))
            ...
            rw.emit(ShortcutSection(from_=(rw.new_index(section.index - 1),), ...))
        else:
            rw.keep(section)

    lowered = rewrite(cfg, lower)

Emitted sections name the layers they read by *new* absolute index (``Rewriter.new_index``
maps an old layer to the new layer that now carries its output); ``keep`` maps a section's
own references itself. ``drop`` declares a layer the identity: its output is what the new
network holds just before it (an identity residual block, a Darknet residual unit whose
branch is gone), so later references to it follow to that layer. Writing keeps each
reference in the form it was read (``relative``), so a rewritten cfg reads like the input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .cfg import Cfg
from .errors import CfgError
from .sections import Section
from .shapes import INPUT, infer_shapes


class Rewriter:
    """The new layer list being built, and where each old layer's output now lives."""

    def __init__(self, cfg: Cfg):
        self.cfg = cfg
        self.layers: list[Section] = []
        self._new: dict[int, int] = {}  # old layer index -> new layer index

    @property
    def next_index(self) -> int:
        """The index the next emitted section gets."""
        return len(self.layers)

    @property
    def last_index(self) -> int:
        """The new layer emitted last (``INPUT`` before any)."""
        return len(self.layers) - 1 if self.layers else INPUT

    def new_index(self, old: int) -> int:
        """Where old layer ``old`` (already walked) has its output in the new network."""
        if old == INPUT:
            return INPUT
        if old not in self._new:
            raise ValueError(f"layer {old} has not been rewritten yet")
        return self._new[old]

    def emit(self, section: Section) -> int:
        """Append ``section`` (its references already new indices); returns its new index."""
        index = self.next_index
        relative = section.relative or (False,) * len(section.refs)
        self.layers.append(dataclasses.replace(section.with_refs(section.refs, index),
                                               relative=relative))
        return index

    def keep(self, section: Section) -> int:
        """Emit ``section`` (an old layer) with its references renumbered."""
        refs = tuple(self._follow(section, ref) for ref in section.refs)
        return self.emit(section.with_refs(refs))

    def drop(self, section: Section) -> None:
        """Leave ``section`` out: its output is the new network's last layer's output."""

    def _follow(self, section: Section, ref: int) -> int:
        target = self.new_index(ref)
        if target == INPUT:
            raise CfgError(f"[{section.kind}] reads layer {ref}, which now stands for the input "
                           "image; a cfg cannot refer to the image", self.cfg.path, section.line)
        return target

    def _walked(self, old: int) -> None:
        self._new[old] = self.last_index


Rule = Callable[[Rewriter, Section], None]


def rewrite(cfg: Cfg, rule: Rule) -> Cfg:
    """A new cfg: ``rule(rewriter, section)`` for every old layer, in order (see the module).

    The result is checked by shape inference, so a rule that miswires raises ``CfgError``.
    """
    rw = Rewriter(cfg)
    for section in cfg.layers:
        rule(rw, section)
        rw._walked(section.index)
    if not rw.layers:
        raise CfgError("rewriting left no layers", cfg.path)
    new = dataclasses.replace(cfg, layers=tuple(rw.layers))
    infer_shapes(new)
    return new


def remove_layers(cfg: Cfg, removed: set[int] | frozenset[int]) -> Cfg:
    """``cfg`` without the layers ``removed``, each of which must act as the identity."""

    def rule(rw: Rewriter, section: Section) -> None:
        if section.index in removed:
            rw.drop(section)
        else:
            rw.keep(section)

    return rewrite(cfg, rule)
