"""What the ratio removes first: importance weighed against a cost, for channels and blocks.

Blocks' importance is their mean |gamma| by default; with ``--block-ranking sensitivity`` it is
the measured loss increase of removing each (``prune.sensitivity``), weighed the same way.

Both rankings start from the same importance: a coupled class's mean |gamma|
(``prune.importance``), a block's mean |gamma| of the BN before its add (``prune.blocks``).
They differ in the cost (:func:`prune.importance.weighed`: score = importance / (cost / mean
cost) ** E, the lowest removed first):

* ``gamma`` (the default): a class's multiply-adds, E = ``--flops-exponent``; blocks by their
  importance alone (layer pruning's criterion).
* ``latency``: the latency removing it saves, from the measured table at the report's input
  size (``prune.latency``): a class's secant cost over the convs that produce and read it, a
  block's conv time; E = ``--latency-exponent`` for both (1: importance per millisecond, the
  greedy solution of the knapsack "keep the most importance within a latency budget", as in
  HALP). Classes are costed at the widths of the cfg they rank (the dense one, less any removed
  blocks): the plan's own widths would change with every ratio the search tries, and the
  table would be asked for new shapes at each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from darknet.cfg import Cfg

from .analysis import ChannelAnalysis
from .blocks import Block, block_gammas
from .importance import Gammas, importance_of, macs_scores, weighed
from .latency import LatencyTable, block_latency, class_latency
from .sensitivity import Sensitivity
from .settings import BlockRanking, PruneSettings, Ranking


@dataclass(frozen=True, eq=False)
class Ranker:
    """Scores classes and blocks as ``settings.ranking`` says (``table``: for ``latency``;
    ``sensitivity``: for ``settings.block_ranking`` sensitivity)."""

    settings: PruneSettings
    img_size: int
    table: LatencyTable | None = None
    sensitivity: Sensitivity | None = None

    def __post_init__(self):
        if self.settings.ranking is Ranking.LATENCY and self.table is None:
            raise ValueError("--ranking latency needs a latency table")
        if self.by_sensitivity and self.sensitivity is None:
            raise ValueError("--block-ranking sensitivity needs the blocks' sensitivity")

    @property
    def by_sensitivity(self) -> bool:
        return self.settings.block_ranking is BlockRanking.SENSITIVITY

    @property
    def by_latency(self) -> bool:
        return self.settings.ranking is Ranking.LATENCY

    def class_scores(self, analysis: ChannelAnalysis, gammas: Gammas) -> np.ndarray:
        if not self.by_latency:
            return macs_scores(analysis, gammas, self.settings.flops_exponent)
        cost = class_latency(analysis, self.table, self.img_size)
        return weighed(importance_of(analysis, gammas), cost, self.settings.latency_exponent)

    def block_scores(self, cfg: Cfg, blocks: Sequence[Block], gammas: Gammas) -> np.ndarray:
        if self.by_sensitivity:
            importance = self.sensitivity.scores(blocks)
        else:
            importance = block_gammas(gammas, blocks)
        if not self.by_latency or not len(blocks):
            return importance
        cost = block_latency(cfg, blocks, self.table, self.img_size)
        # A block whose removal lowers the loss is as harmless as a free one: divided by its
        # cost, a negative sensitivity would rank the costlier block later.
        return weighed(np.maximum(importance, 0.0), cost, self.settings.latency_exponent)
