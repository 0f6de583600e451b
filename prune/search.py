"""Pruning to a budget: the ratio (and number of blocks) whose keep plan meets it, no training.

The figure of a plan is read off its slim cfg without building a model: GFLOPs and parameters
from ``darknet.cost``, latency from the table's prediction (``prune.latency``). Selection is
pure (``prune.select``), so trying a plan costs milliseconds.

**A search step** is one step of the ratio grid ``0, 0.01, ..., 0.99`` (:data:`STEP`). For a
given number of blocks ``n`` (removed first, in ranking order), the search bisects the grid
for a ratio ``r`` whose plan meets the limit while ``r - STEP`` (one step less pruning) does
not; ``r = 0`` when nothing needs cutting. The figure need not fall strictly with the ratio
(floors and rounding add channels back), so bisection keeps the invariant "the low end misses,
the high end meets" rather than assuming it; that is what :func:`find_ratio` guarantees.
About seven plans per ``n``.

**--layers auto** tries ``n = 0, 1, 2, ...`` and keeps the ``n`` whose plan removes the least
importance, measured as the *removed |gamma|*: the L1 norm of the gammas the masked model of
the pruning contract zeroes, i.e. every removed channel's |gamma| at every BN it spans, plus
each removed block's pre-add BN |gamma| (the block's inner channels go with it, unweighed: its
output is what that BN scales). Two exact cut-offs end the scan early: once the first ``n``
blocks' own |gamma| reaches the best plan's removed |gamma| (every later ``n`` includes
them), and once blocks alone meet the limit (ratio 0: a further block only adds its own).

**Unreachable**: when even ratio 0.99 (the per-layer floors still kept) misses the limit at
every ``n`` tried, :class:`BudgetError` names the smallest figure the search reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from darknet.cfg import Cfg
from darknet.cost import network_cost

from .analysis import ChannelAnalysis, analyze
from .block_cut import check_block_count, without_blocks
from .blocks import Block, find_blocks, removal_order
from .budget import Budget, Metric
from .errors import PruneError
from .graph import moved_module
from .importance import Gammas, gamma_sums
from .ranking import Ranker
from .select import KeepPlan, SelectionStructure, select_channels
from .settings import AUTO
from .slim_cfg import plan_cfg

STEP = 0.01
GRID = tuple(round(i * STEP, 2) for i in range(round(1 / STEP)))  # 0 .. 0.99


class BudgetError(PruneError):
    """The budget cannot be met; the message names the nearest figure that can (``nearest``)."""

    def __init__(self, message: str, nearest: float):
        super().__init__(message)
        self.nearest = nearest


@dataclass(frozen=True, eq=False)
class Candidate:
    """The cfg with the first ``layers`` blocks (in removal order) gone, ready to select on."""

    layers: int
    analysis: ChannelAnalysis
    structure: SelectionStructure
    scores: np.ndarray  # per class: what the ratio ranks by
    gamma_sum: np.ndarray  # per class: its |gamma| summed over the BNs it spans
    blocks_gamma: float  # the removed blocks' pre-add BN |gamma|, summed

    def plan(self, ratio: float, ranker: Ranker) -> KeepPlan:
        return select_channels(self.structure, self.scores, replace(ranker.settings, ratio=ratio))

    def removed_gamma(self, plan: KeepPlan) -> float:
        return self.blocks_gamma + float(self.gamma_sum[~plan.keep].sum())


class PlanSpace:
    """Every plan a settings value can reach on one dense cfg: blocks, then channels."""

    def __init__(self, cfg: Cfg, gammas: Gammas, ranker: Ranker):
        self.cfg, self.gammas, self.ranker = cfg, gammas, ranker
        self.blocks: tuple[Block, ...] = find_blocks(cfg)
        self._candidates: dict[int, Candidate] = {}

    @cached_property
    def block_scores(self) -> np.ndarray:
        return self.ranker.block_scores(self.cfg, self.blocks, self.gammas)

    @cached_property
    def block_order(self) -> np.ndarray:
        return removal_order(self.block_scores)

    def blocks_gamma(self, layers: int) -> float:
        """The |gamma| of the pre-add BNs of the first ``layers`` blocks: what removing them
        zeroes (a lower bound on any plan with them)."""
        return float(sum(self.gammas[self.blocks[i].bn].sum()
                         for i in self.block_order[:layers]))

    def candidate(self, layers: int) -> Candidate:
        check_block_count(layers, self.blocks, self.cfg)
        if layers not in self._candidates:
            self._candidates[layers] = self._build(layers)
        return self._candidates[layers]

    def _build(self, layers: int) -> Candidate:
        gone = [self.blocks[i] for i in self.block_order[:layers]]
        cfg, kept = without_blocks(self.cfg, gone)
        analysis = analyze(cfg)
        dense = kept.__getitem__
        gammas = {s.bn: self.gammas[moved_module(s.bn, dense)]
                  for s in analysis.graph.spaces if s.bn is not None}
        scope = self.ranker.settings.scope
        return Candidate(layers, analysis, analysis.structure(scope),
                         self.ranker.class_scores(analysis, gammas),
                         gamma_sums(analysis, gammas)[0], self.blocks_gamma(layers))


Figure = Callable[[Cfg], float]


def figure_of(metric: Metric, img_size: int,
              latency: Callable[[Cfg], float] | None = None) -> Figure:
    """How a slim cfg is held to a budget of ``metric`` (latency: ``latency``'s prediction)."""
    if metric is Metric.GFLOPS:
        return lambda cfg: network_cost(cfg, img_size, img_size).gflops
    if metric is Metric.PARAMS:
        return lambda cfg: float(network_cost(cfg, img_size, img_size).params)
    if latency is None:
        raise ValueError("a latency budget needs a latency prediction")
    return latency


def find_ratio(figure: Callable[[float], float], limit: float,
               grid: Sequence[float] = GRID, hint: int | None = None) -> int | None:
    """The grid index ``i`` with ``figure(grid[i]) <= limit`` and, for ``i > 0``,
    ``figure(grid[i - 1]) > limit``; None when ``figure(grid[-1]) > limit``. Bisection: about
    log2(len(grid)) + 2 calls; from a ``hint`` (where the answer probably is: the previous
    block count's) it first brackets outwards in doubling steps, a few calls when it is close.
    """
    lo, hi = _bracket(figure, limit, len(grid) - 1, grid, hint)
    if hi is None or lo is None:
        return hi
    while hi - lo > 1:  # lo misses, hi meets
        mid = (lo + hi) // 2
        if figure(grid[mid]) <= limit:
            hi = mid
        else:
            lo = mid
    return hi


def _bracket(figure: Callable[[float], float], limit: float, last: int,
             grid: Sequence[float], hint: int | None) -> tuple[int | None, int | None]:
    """``(lo, hi)`` with ``lo`` missing and ``hi`` meeting the limit; ``(None, 0)`` when the
    first grid point meets it, ``(None, None)`` when the last one misses."""
    def meets(i: int) -> bool:
        return figure(grid[i]) <= limit

    if hint is None or not 0 < hint < last:
        if meets(0):
            return None, 0
        return (0, last) if meets(last) else (None, None)
    step, edge = 1, hint
    if meets(hint):  # walk down to a miss
        while True:
            lower = max(edge - step, 0)
            if not meets(lower):
                return lower, edge
            if lower == 0:
                return None, 0
            edge, step = lower, 2 * step
    while True:  # walk up to a hit
        upper = min(edge + step, last)
        if meets(upper):
            return edge, upper
        if upper == last:
            return None, None
        edge, step = upper, 2 * step


@dataclass(frozen=True)
class Step:
    """One plan the search tried: ``layers`` blocks, then ``ratio``; its ``figure``."""

    layers: int
    ratio: float
    figure: float
    meets: bool


@dataclass(frozen=True)
class Found:
    """The plan a search chose (its figure, and the removed |gamma| that chose ``layers``)."""

    layers: int
    ratio: float
    figure: float
    removed_gamma: float
    plan: KeepPlan = field(repr=False, compare=False)
    cfg: Cfg = field(repr=False, compare=False)


@dataclass
class Search:
    """One search over ``space`` against ``limit``; ``steps`` grows as plans are tried."""

    space: PlanSpace
    figure: Figure
    limit: float
    steps: list[Step] = field(default_factory=list)

    def at(self, layers: int, ratio: float) -> tuple[float, KeepPlan, Cfg]:
        candidate = self.space.candidate(layers)
        plan = candidate.plan(ratio, self.space.ranker)
        cfg = plan_cfg(candidate.analysis, plan)
        value = self.figure(cfg)
        self.steps.append(Step(layers, ratio, value, value <= self.limit))
        return value, plan, cfg

    def best_at(self, layers: int, hint: float | None = None) -> Found | None:
        """The plan of ``layers`` blocks one search step inside the limit, or None (``hint``:
        a ratio the answer is probably near)."""
        memo: dict[float, tuple[float, KeepPlan, Cfg]] = {}

        def value(ratio: float) -> float:
            if ratio not in memo:
                memo[ratio] = self.at(layers, ratio)
            return memo[ratio][0]

        i = find_ratio(value, self.limit, hint=None if hint is None else GRID.index(hint))
        if i is None:
            return None
        figure, plan, cfg = memo[GRID[i]]
        removed = self.space.candidate(layers).removed_gamma(plan)
        return Found(layers, GRID[i], figure, removed, plan, cfg)

    def run(self, layers: int | str) -> Found | None:
        counts = range(len(self.space.blocks) + 1) if layers == AUTO else (layers,)
        best: Found | None = None
        hint: float | None = None
        for n in counts:
            if best is not None and self.space.blocks_gamma(n) >= best.removed_gamma:
                break  # these blocks alone zero more |gamma| than the best plan: so do all after
            found = self.best_at(n, hint)
            hint = found.ratio if found is not None else hint
            if found is not None and (best is None or found.removed_gamma < best.removed_gamma):
                best = found
            if found is not None and found.ratio == 0:
                break  # the blocks alone meet the limit: one more only adds its |gamma|
        return best


def nearest(steps: Sequence[Step]) -> Step:
    """The step with the smallest figure (the closest a search came to an unmet limit)."""
    return min(steps, key=lambda s: (s.figure, s.layers, s.ratio))


def unreachable(budget: Budget, limit: float, dense: float, steps: Sequence[Step],
                settings_text: str) -> BudgetError:
    best = nearest(steps)
    metric = budget.metric
    return BudgetError(
        f"{metric.flag} {budget} ({metric.format(limit)}) is out of reach: the least this cut "
        f"reaches is {metric.format(best.figure)} ({best.figure / dense:.3g}x of dense), at "
        f"--layers {best.layers} --ratio {best.ratio:.2f} ({settings_text}); ask for at least "
        f"that, or remove more blocks (--layers) or lower --min-keep", best.figure)


def search_budget(space: PlanSpace, budget: Budget, figure: Figure, dense: float,
                  layers: int | str) -> tuple[Found, list[Step]]:
    """The plan :class:`Search` finds for ``budget`` (``dense``: the dense model's figure),
    and every step it tried; :class:`BudgetError` when none meets it."""
    limit = budget.limit(dense)
    search = Search(space, figure, limit)
    found = search.run(layers)
    if found is None:
        settings = space.ranker.settings
        raise unreachable(budget, limit, dense, search.steps,
                          f"--min-keep {settings.min_keep}, --round-to {settings.round_to}")
    return found, search.steps
