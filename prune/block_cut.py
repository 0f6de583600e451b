"""How to cut blocks: the cfg without them, every kept layer's tensors copied, offsets folded.

The slim cfg is ``darknet.edit.remove_layers`` of the dense one (every route and shortcut
renumbered; a reference to a removed block now names the block's input). Layers keep their
channel counts, so the slim model is filled layer by layer from the dense one. What each
removed branch still added, ``act(beta)`` of its pre-add BN, is folded into the convs that
read it downstream (``prune.fold.offset_shifts``): exact for 1x1 and unpadded readers, a
border effect for padded kxk ones (``FoldNote.exact``). The input model is never modified.

:class:`BlockCut` also maps the slim model's layers and module names back to the dense
model's, so a report about the layer-pruned model can speak of the dense one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from darknet.cfg import Cfg
from darknet.edit import remove_layers
from darknet.model import Darknet

from .blocks import Block, block_scores, find_blocks, select_blocks
from .errors import PruneError
from .fold import FoldNote, OffsetNote, absorb, offset_shifts
from .graph import ChannelGraph, moved_module
from .rules import build_channel_graph
from .surgery import fill_tensors


@dataclass(frozen=True)
class RemovedBlock:
    """One removed block, as the report lists it (dense layer indices and module names)."""

    layer: int  # the [res2net], or the unit's [shortcut]
    layers: tuple[int, ...]  # every layer removed
    kind: str
    bn: str  # the pre-add BN whose mean |gamma| is the score
    score: float


@dataclass(frozen=True, eq=False)
class BlockCut:
    """The layer-pruned model and how its layers map back to the dense model's."""

    model: Darknet
    removable: int  # blocks the dense cfg has that may be removed
    removed: tuple[RemovedBlock, ...]
    folds: tuple[FoldNote, ...]  # dense conv names
    unfolded: tuple[OffsetNote, ...]
    dense_layers: tuple[int, ...]  # per layer of ``model``: its index in the dense cfg

    def dense_index(self, index: int) -> int:
        return self.dense_layers[index]

    def dense_name(self, module: str) -> str:
        """The dense model's name of module ``module`` of ``model``."""
        return moved_module(module, self.dense_index)


def without_blocks(cfg: Cfg, blocks: Sequence[Block]) -> tuple[Cfg, tuple[int, ...]]:
    """``cfg`` without ``blocks`` (renumbered), and the dense index of each layer left."""
    removed = frozenset(j for b in blocks for j in b.layers)
    kept = tuple(j for j in range(len(cfg.layers)) if j not in removed)
    return (remove_layers(cfg, removed) if removed else cfg), kept


def cut_blocks(model: Darknet, blocks: Sequence[Block], fold: bool = True,
               graph: ChannelGraph | None = None
               ) -> tuple[Darknet, tuple[int, ...], list[FoldNote], list[OffsetNote]]:
    """``model`` without ``blocks`` (found on ``graph``, the channel graph of its cfg).

    Returns the slim model, the dense index of each of its layers, and the fold notes.
    """
    graph = graph if graph is not None else build_channel_graph(model.cfg)
    slim_cfg, kept = without_blocks(model.cfg, blocks)
    removed = frozenset(j for b in blocks for j in b.layers)
    with torch.device("meta"):  # structure only; every tensor is filled below
        slim = Darknet(slim_cfg)
    for new, old in enumerate(kept):
        fill_tensors(slim.layers[new], model.layers[old])

    shifts, notes, lost = ({}, [], [])
    if fold:
        shifts, notes, lost = offset_shifts(graph, model, {b.space for b in blocks}, removed)
    new_index = {old: new for new, old in enumerate(kept)}.__getitem__
    modules = dict(slim.named_modules())
    for conv, shift in shifts.items():
        bn = graph.space_of_conv(conv).bn
        absorb(modules[moved_module(conv, new_index)],
               modules[moved_module(bn, new_index)] if bn else None, shift)
    slim.header = model.header
    slim.train(model.training)
    return slim, kept, notes, lost


def check_block_count(n: int, blocks: Sequence[Block], cfg: Cfg) -> None:
    if n > len(blocks):
        raise PruneError(f"--layers {n} is more than the {len(blocks)} removable blocks of "
                         f"{cfg.path} (identity-residual [res2net] blocks and Darknet "
                         "residual units; main.py analyze lists them)")


def prune_blocks(model: Darknet, n: int, fold: bool = True,
                 scores: np.ndarray | None = None) -> BlockCut:
    """Remove the ``n >= 0`` lowest-scored removable blocks of ``model`` (``prune.blocks``;
    ``scores`` per block of ``find_blocks``, default: the mean |gamma| criterion).

    ``n = 0`` gives ``model`` itself back, uncopied.
    """
    graph = build_channel_graph(model.cfg)
    blocks = find_blocks(model.cfg, graph)
    check_block_count(n, blocks, model.cfg)
    if n == 0:
        return BlockCut(model, len(blocks), (), (), (), tuple(range(len(model.cfg.layers))))
    scores = block_scores(model, blocks) if scores is None else scores
    chosen = select_blocks(scores, n)
    gone = [blocks[i] for i in chosen]
    slim, kept, notes, lost = cut_blocks(model, gone, fold, graph)
    removed = tuple(RemovedBlock(b.layer, b.layers, b.kind, b.bn, float(scores[i]))
                    for i, b in zip(chosen, gone, strict=True))
    return BlockCut(slim, len(blocks), removed, tuple(notes), tuple(lost), kept)
