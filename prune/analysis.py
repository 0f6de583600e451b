"""Which channels are coupled: the channel graph's adds resolved into classes and groups.

A *class* is a set of channels (global ids of ``prune.graph``) that an element-wise add ties
together: removing one removes all. Every position of every tensor holds exactly one class,
so a keep/remove decision per class fixes every conv's output *and* input channels.

For the example in ``prune.graph`` (stage conv A, res2net block B..F), the classes are
``{A[j], F[j]}`` (16 classes, *residual*), ``{B[4+j], C[j]}``, ``{B[8+j], D[j]}``, ``{B[j]}``,
``{B[12+j]}`` and ``{E[j]}`` (4 classes each). A :class:`ChannelGroup` is the readable form:
runs of classes with the same members, e.g. "16 channels: layer 1 conv [0:16] = layer 2
conv3 [0:16]". A class is *fixed* when a producer has no BN (no gamma to rank; a detector
conv) or a ``[yolo]`` head reads it; ``Scope.INNER`` also fixes every residual class.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from darknet.cfg import Cfg
from darknet.shapes import infer_shapes

from .graph import Add, ChannelGraph, ChannelSpace
from .rules import build_channel_graph
from .select import LayerChannels, SelectionStructure
from .settings import Scope


@dataclass(frozen=True)
class ChannelGroup:
    """``size`` coupled channels: channel ``k`` of the group is channel ``start + k`` of every
    member space. ``fixed`` says why they cannot be removed (None: prunable)."""

    members: tuple[tuple[ChannelSpace, int], ...]  # (space, start)
    size: int
    residual: bool
    fixed: str | None
    readers: tuple[str, ...]  # conv modules that read these channels
    classes: tuple[int, ...]


def _union_find(n: int, graph: ChannelGraph) -> np.ndarray:
    """Class id per channel: the components of "added together", numbered 0.. in order of
    their lowest channel id. Min-label propagation over the add edges with pointer jumping
    (whole arrays at a time; a residual chain is a path as long as its blocks, so a few
    rounds)."""
    pairs = [(graph.tensors[op.inputs[0]], graph.tensors[other]) for op in graph.ops
             if isinstance(op, Add) for other in op.inputs[1:]]
    a = np.concatenate([np.asarray(x, dtype=np.int64) for x, _ in pairs] or [np.zeros(0, int)])
    b = np.concatenate([np.asarray(y, dtype=np.int64) for _, y in pairs] or [np.zeros(0, int)])
    label = np.arange(n, dtype=np.int64)
    while True:
        low = np.minimum(label[a], label[b])
        before = label.copy()
        np.minimum.at(label, a, low)
        np.minimum.at(label, b, low)
        label = label[label]
        if np.array_equal(label, before):
            break
    _, class_of = np.unique(label, return_inverse=True)
    return class_of.astype(np.int64)


@dataclass(frozen=True, eq=False)
class ChannelAnalysis:
    """The coupling classes of one cfg, independent of weights and of the pruning scope."""

    cfg: Cfg
    graph: ChannelGraph
    class_of: np.ndarray  # global channel id -> class id
    fixed: tuple[str | None, ...]  # per class: why it must stay (None: prunable)
    residual: np.ndarray  # per class: on a residual add (shortcut / identity residual)

    @property
    def num_classes(self) -> int:
        return len(self.fixed)

    def classes_of_tensor(self, tensor: int) -> np.ndarray:
        return self.class_of[np.asarray(self.graph.tensors[tensor], dtype=np.int64)]

    def classes_of_space(self, space: ChannelSpace) -> np.ndarray:
        return self.class_of[space.first:space.first + space.size]

    def prunable(self, scope: Scope | str) -> np.ndarray:
        """Per class: may the selection remove it under ``scope``?"""
        ok = np.array([f is None for f in self.fixed], dtype=bool)
        if Scope(scope) is Scope.INNER:
            ok &= ~self.residual
        return ok

    def structure(self, scope: Scope | str) -> SelectionStructure:
        """What the (pure) selection needs: prunable classes, layers, equal-width parts."""
        layers = tuple(
            LayerChannels(s.bn, self.classes_of_space(s))
            for s in self.graph.spaces if s.bn is not None
        )
        same_width = tuple(
            tuple(self.classes_of_tensor(t) for t in c.parts) for c in self.graph.same_width
        )
        return SelectionStructure(self.prunable(scope), layers, same_width)

    @cached_property
    def readers(self) -> list[set[str]]:
        """Per class: the conv modules that read it."""
        readers: list[set[str]] = [set() for _ in range(self.num_classes)]
        for c in self.graph.consumers:
            for k in np.unique(self.classes_of_tensor(c.input)):
                readers[k].add(c.conv)
        return readers

    @cached_property
    def groups(self) -> tuple[ChannelGroup, ...]:
        """Runs of classes with the same member spaces at consecutive channels."""
        members: list[list[tuple[int, int]]] = [[] for _ in range(self.num_classes)]
        for s in self.graph.spaces:
            for local, k in enumerate(self.classes_of_space(s)):
                members[k].append((s.id, local))
        groups: list[ChannelGroup] = []
        run: list[int] = []

        def signature(k: int) -> tuple:
            base = members[k][0][1]
            return (tuple((sid, local - base) for sid, local in members[k]),
                    bool(self.residual[k]), self.fixed[k])

        def flush() -> None:
            if not run:
                return
            first = members[run[0]]
            names = sorted(set().union(*(self.readers[k] for k in run)))
            groups.append(ChannelGroup(
                members=tuple((self.graph.spaces[sid], local) for sid, local in first),
                size=len(run), residual=bool(self.residual[run[0]]), fixed=self.fixed[run[0]],
                readers=tuple(names), classes=tuple(run),
            ))
            run.clear()

        # Classes are numbered by lowest channel id, so a space's runs are consecutive.
        for k in range(self.num_classes):
            if run:
                last = run[-1]
                follows = (members[k][0][0] == members[last][0][0]
                           and members[k][0][1] == members[last][0][1] + 1
                           and signature(k) == signature(last))
                if not follows:
                    flush()
            run.append(k)
        flush()
        return tuple(groups)


def analyze(cfg: Cfg) -> ChannelAnalysis:
    """Build the channel graph of ``cfg`` and resolve it into coupled classes."""
    graph = build_channel_graph(cfg, infer_shapes(cfg))
    class_of = _union_find(graph.num_channels, graph)
    n = int(class_of.max()) + 1
    fixed: list[str | None] = [None] * n
    for s in graph.spaces:
        if s.bn is None:
            why = ("the input image" if s.conv is None
                   else f"produced by {s.label}, a conv without BatchNorm (no gamma)")
            for k in np.unique(class_of[s.first:s.first + s.size]):
                fixed[k] = fixed[k] or why
    for f in graph.fixed:
        for k in np.unique(class_of[np.asarray(graph.tensors[f.input], dtype=np.int64)]):
            fixed[k] = fixed[k] or f.reason
    residual = np.zeros(n, dtype=bool)
    for op in graph.ops:
        if isinstance(op, Add) and op.residual:
            residual[class_of[np.asarray(graph.tensors[op.out], dtype=np.int64)]] = True
    return ChannelAnalysis(cfg, graph, class_of, tuple(fixed), residual)
