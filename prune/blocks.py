"""Which blocks layer pruning may remove, and how important each one is.

Layer pruning removes whole identity-residual blocks: where ``out = x + branch(x)`` with
nothing after the add, a branch that emits zero makes the block the identity, so the block can
go and whatever read it reads ``x`` (docs/pruning.md, "Removing whole blocks"). Two kinds qualify:

* every ``[res2net]`` block: ``bn3(conv3(branch(x))) + x``, linear after the add;
* a Darknet residual unit: a ``[shortcut] from=-3 activation=linear`` whose two preceding
  layers are ``[convolutional]`` layers chained on the shortcut's source (in yolov3 a 1x1
  then a 3x3, the last with BN), where nothing outside the unit reads the unit's convs.

A ``[res2net]`` at layer 0 reads the input image itself and is never removable: a later
reference to it, or to a block chained on it once both go, would have to name the image,
which a cfg cannot (``darknet.edit.rewrite`` refuses). Leaving it out keeps every subset of
the blocks found removable.

**The criterion** (that of the YOLO layer-pruning tools): a block's score is the mean |gamma|
of the BN right before the add (bn3 of a ``[res2net]``, the unit's last conv BN). After
sparse training a low score says the branch adds little to its input; ``prune --layers N``
removes the N lowest (ties: the earlier block first).

Three steps, apart: :func:`find_blocks` reads the cfg only, :func:`block_scores` reads the
gammas, :func:`select_blocks` is a pure function from scores to the blocks that go.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from darknet.cfg import Cfg
from darknet.sections import ConvSection, Res2NetSection, Section, ShortcutSection
from darknet.shapes import INPUT

from .graph import Add, ChannelGraph, Produce
from .rules import build_channel_graph

RES2NET, UNIT = "res2net", "residual unit"


@dataclass(frozen=True)
class Block:
    """One removable block of a cfg."""

    layer: int  # the [res2net], or the unit's [shortcut]
    layers: tuple[int, ...]  # every layer removed with it, ascending
    kind: str  # RES2NET or UNIT
    bn: str  # module name of the BN right before the add
    space: int  # that BN's space in the cfg's channel graph

    @property
    def label(self) -> str:
        return f"layer {self.layer} [{self.kind}] ({self.bn})"


Readers = dict[int, set[int]]  # layer -> the layers that read it
BlockRule = Callable[[Cfg, Section, Readers], tuple[int, ...] | None]


def _res2net(cfg: Cfg, s: Res2NetSection, readers: Readers) -> tuple[int, ...] | None:
    return None if s.sources[0] == INPUT else (s.index,)


def _residual_unit(cfg: Cfg, s: ShortcutSection, readers: Readers) -> tuple[int, ...] | None:
    first, last = s.index - 2, s.index - 1
    if s.activation != "linear" or s.from_ != (s.index - 3,):
        return None
    convs = [cfg.layers[j] for j in (first, last)]
    if not all(isinstance(c, ConvSection) for c in convs):
        return None
    chained = convs[0].sources == s.from_ and convs[1].sources == (first,)
    private = readers[first] == {last} and readers[last] == {s.index}
    return (first, last, s.index) if chained and private else None


# Section type -> (block kind, the layers a block ending at that section spans, or None).
BLOCK_RULES: dict[type[Section], tuple[str, BlockRule]] = {
    Res2NetSection: (RES2NET, _res2net),
    ShortcutSection: (UNIT, _residual_unit),
}


def _readers(cfg: Cfg) -> Readers:
    readers: Readers = defaultdict(set)
    for s in cfg.layers:
        for j in s.sources:
            readers[j].add(s.index)
    return readers


def _branches(graph: ChannelGraph) -> dict[int, int]:
    """Layer -> the space whose output its residual add adds to the block input."""
    made = {op.out: op.space for op in graph.ops if isinstance(op, Produce)}
    return {op.layer_index: made[op.inputs[0]] for op in graph.ops
            if isinstance(op, Add) and op.residual and op.inputs[0] in made}


def find_blocks(cfg: Cfg, graph: ChannelGraph | None = None) -> tuple[Block, ...]:
    """The removable blocks of ``cfg``, in layer order (see the module docstring)."""
    graph = graph if graph is not None else build_channel_graph(cfg)
    readers, branches = _readers(cfg), _branches(graph)
    blocks = []
    for s in cfg.layers:
        kind, rule = BLOCK_RULES.get(type(s), (None, None))
        layers = rule(cfg, s, readers) if rule else None
        space = branches.get(s.index)
        if layers is None or space is None or graph.spaces[space].bn is None:
            continue
        blocks.append(Block(s.index, layers, kind, graph.spaces[space].bn, space))
    return tuple(blocks)


def block_scores(model: nn.Module, blocks: tuple[Block, ...]) -> np.ndarray:
    """Per block: the mean |gamma| of its pre-add BN in ``model`` (float64)."""
    modules = dict(model.named_modules())
    return block_gammas({b.bn: modules[b.bn].weight.detach().abs().double().cpu().numpy()
                         for b in blocks}, blocks)


def block_gammas(gammas: Mapping[str, np.ndarray], blocks: Sequence[Block]) -> np.ndarray:
    """:func:`block_scores` from |gamma| by BN name."""
    return np.array([float(np.mean(gammas[b.bn])) for b in blocks], dtype=np.float64)


def removal_order(scores: np.ndarray) -> np.ndarray:
    """Block indices, the first to remove first: lowest score, ties the earlier block."""
    return np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")


def select_blocks(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices (ascending) of the ``n`` blocks :func:`removal_order` removes first."""
    if not 0 <= n <= len(scores):
        raise ValueError(f"cannot select {n} of {len(scores)} blocks")
    return np.sort(removal_order(scores)[:n])
