"""The pruning pipeline for callers without the CLI: analyze, score, select, cut, report.

    slim, report = prune_model(model, PruneSettings(ratio=0.5))   # model: a loaded Darknet
    slim, report = prune_model(model, PruneSettings(layers=3))    # 3 blocks first, then channels
    slim, report = prune_model(model, PruneSettings(target_gflops="0.3x", layers="auto"))
    write_pruned(slim, report, "out/")              # pruned.cfg/.weights/_report.json/.png
    bns = prunable_batchnorms(model, "all")         # where sparse training puts L1
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

import charts
from common.artefacts import PRUNE_CHART, PRUNE_REPORT, PRUNED_CFG, PRUNED_WEIGHTS
from common.io import write_together
from darknet.cfg import Cfg, format_cfg
from darknet.cost import network_cost
from darknet.model import Darknet
from darknet.sections import MultiScaleSection
from darknet.shapes import infer_shapes
from darknet.weights import write_weights

from .analysis import ChannelAnalysis, analyze
from .block_cut import BlockCut, RemovedBlock, prune_blocks
from .budget import Budget, Metric
from .errors import PruneError
from .fold import FoldNote, OffsetNote
from .importance import abs_gammas
from .latency import LatencyContext, LatencyPredictor
from .ranking import Ranker
from .recalibrate import Recalibration
from .search import BudgetError, Found, PlanSpace, Step, figure_of, search_budget
from .select import FloorNote, check_plan
from .sensitivity import Sensitivity
from .settings import AUTO, PruneSettings, Ranking, Scope, auto_round_to
from .surgery import cut_model


@dataclass(frozen=True)
class LayerRow:
    index: int
    kind: str
    out_before: int
    out_after: int
    width_before: int | None  # group width of a [res2net]/[triangle] block
    width_after: int | None
    scale: int | None  # its number of groups
    prunable: bool  # the scope lets the pruner remove some of this layer's own BN channels
    chain: int | None  # on a residual chain: the index of the chain's first layer


@dataclass(frozen=True)
class LatencyRound:
    """A latency budget's plan, cut and measured once in onnxruntime."""

    layers: int
    ratio: float
    predicted_ms: float
    measured_ms: float


@dataclass(frozen=True)
class SearchReport:
    """What a budget search did: every plan it tried (``steps``) and what it chose."""

    metric: str
    budget: str  # as given: "0.3x" (of dense) or an absolute figure
    limit: float  # the absolute figure the plan was held to
    dense: float  # the dense model's figure (latency: measured)
    layers: int
    ratio: float
    figure: float  # the chosen plan's (latency: measured; predicted in ``rounds``)
    removed_gamma: float  # |gamma| the cut zeroes: what --layers auto minimises
    steps: tuple[Step, ...]
    rounds: tuple[LatencyRound, ...] = ()  # latency budgets only
    stop: str = "met"  # why a latency budget's search ended ("met", or why it missed)

    @property
    def met(self) -> bool:
        return self.figure <= self.limit

    @classmethod
    def of(cls, budget: Budget, dense: float, found: Found, steps: list[Step],
           rounds: tuple[LatencyRound, ...] = ()) -> SearchReport:
        return cls(str(budget.metric), str(budget), budget.limit(dense), dense, found.layers,
                   found.ratio, found.figure, found.removed_gamma, tuple(steps), rounds)


@dataclass(frozen=True)
class PruneReport:
    settings: PruneSettings
    params_before: int
    params_after: int
    gflops_before: float  # at img_size
    gflops_after: float
    img_size: int  # square input the GFLOPs are counted at
    prunable_channels: int  # coupled channels the scope allows to remove
    removed_channels: int  # coupled channels removed
    bn_channels_before: int
    bn_channels_after: int
    threshold: float  # importance of the last channel the ratio removed
    kept: dict[str, list[int]]  # BN module name -> sorted kept channel indices
    layers: tuple[LayerRow, ...]
    floors: tuple[FloorNote, ...]
    folds: tuple[FoldNote, ...]
    removable_blocks: int  # identity-residual blocks layer pruning may remove
    removed_blocks: tuple[RemovedBlock, ...]  # dense layer indices and BN names
    block_folds: tuple[FoldNote, ...]  # convs that absorbed a removed block's act(beta)
    block_unfolded: tuple[OffsetNote, ...]  # where such a constant could not be folded
    search: SearchReport | None  # how a budget chose ``settings.ratio`` (and ``layers``)
    # The slim model's BN statistics re-estimated after the cut (main.py prune --data)
    recalibration: Recalibration | None = None
    sensitivity: str | None = None  # --block-ranking sensitivity: a file, or "measured"

    def as_dict(self) -> dict:
        """The report's JSON; ``settings`` as :meth:`PruneSettings.as_dict` gives them (with
        a budget: the ratio and blocks the search chose)."""
        d = {**asdict(self), "settings": self.settings.as_dict()}
        d["threshold"] = self.threshold if self.threshold != float("-inf") else None
        if self.search is not None:
            d["search"]["met"] = self.search.met
        return d


def _layer_roles(analysis: ChannelAnalysis,
                 scope: Scope) -> tuple[dict[int, bool], dict[int, int]]:
    """Per layer index: has it prunable BN channels; the chain its residual channels are on.

    A chain is named by its first layer: the lowest layer index among the spaces that share
    a residual class (for a Res2Net stage, the stage conv before its blocks).
    """
    ok = analysis.prunable(scope)
    first = np.full(analysis.num_classes, np.iinfo(np.int64).max)
    spaces = [s for s in analysis.graph.spaces if s.bn is not None]
    for s in spaces:
        np.minimum.at(first, analysis.classes_of_space(s), s.layer_index)
    prunable: dict[int, bool] = {}
    chain: dict[int, int] = {}
    for s in spaces:
        classes = analysis.classes_of_space(s)
        prunable[s.layer_index] = prunable.get(s.layer_index, False) or bool(ok[classes].any())
        residual = classes[analysis.residual[classes]]
        if residual.size:
            chain[s.layer_index] = int(first[residual].min())
    return prunable, chain


def _layer_rows(analysis: ChannelAnalysis, scope: Scope, slim: Cfg,
                blocks: BlockCut) -> tuple[LayerRow, ...]:
    """Per layer of ``analysis.cfg`` (the layer-pruned cfg): channels before and after
    ``slim``, by dense layer index."""
    before = analysis.cfg
    prunable, chain = _layer_roles(analysis, scope)
    rows = []
    for s, a, b, t in zip(before.layers, infer_shapes(before), infer_shapes(slim), slim.layers,
                          strict=True):
        multiscale = isinstance(s, MultiScaleSection)
        rows.append(LayerRow(
            blocks.dense_index(s.index), s.kind, a.out.c, b.out.c,
            s.group_width(a.in_channels) if multiscale else None,
            t.group_width(b.in_channels) if multiscale else None,
            s.scale if multiscale else None,
            prunable.get(s.index, False),
            blocks.dense_index(chain[s.index]) if s.index in chain else None,
        ))
    return tuple(rows)


def _check_prunable(analysis: ChannelAnalysis, scope: Scope) -> None:
    if not analysis.prunable(scope).any():
        raise PruneError(f"nothing to prune in {analysis.cfg.path} with --scope {scope}: every "
                         "channel is fixed (no BatchNorm, read by [yolo], or on a residual "
                         "chain)")


def prune_model(model: Darknet, settings: PruneSettings, img_size: int | None = None,
                latency: LatencyContext | None = None,
                sensitivity: Sensitivity | None = None) -> tuple[Darknet, PruneReport]:
    """Remove the ``settings.layers`` lowest-scored blocks of ``model`` (``prune.blocks``),
    then the least important ``settings.ratio`` of the prunable coupled channels of the rest;
    with a budget (``settings.budget``), the ratio and, for ``layers="auto"``, the blocks
    that meet it (``prune.search``).

    Channels and blocks are ranked as ``settings.ranking`` says (``prune.ranking``: mean
    |gamma| per multiply-adds ** ``flops_exponent``, or per latency saved). Returns the slim
    model (``model`` is not modified) and the report, with GFLOPs at ``img_size`` (default:
    the cfg's [net] height). Every module name and layer index in the report is the dense
    model's; ``kept`` covers the layers that survive.

    ``latency`` (the table, and whole-model timing) serves ``--ranking latency`` and latency
    budgets; default: onnxruntime on this machine (``prune.op_timing.ort_context``).
    ``sensitivity`` (``prune.sensitivity``, measured on ``model``) serves
    ``block_ranking="sensitivity"``.
    """
    img_size = img_size or model.cfg.net.height
    settings = with_round_to(settings, model.cfg)
    if latency is None and needs_latency(settings):
        from .op_timing import ort_context

        latency = ort_context(img_size)
    ranker = Ranker(settings, img_size, latency.table if latency else None, sensitivity)
    space = PlanSpace(model.cfg, abs_gammas(model), ranker)
    budget = settings.budget
    if budget is None:
        return _cut(model, settings, space, img_size)
    if budget.metric is Metric.LATENCY:
        return _prune_to_latency(model, settings, space, img_size, latency)
    figure = figure_of(budget.metric, img_size)
    dense = figure(model.cfg)
    found, steps = search_budget(space, budget, figure, dense, settings.layers)
    slim, report = _cut(model, _chosen(settings, found), space, img_size)
    return slim, replace(report, search=SearchReport.of(budget, dense, found, steps))


def with_round_to(settings: PruneSettings, cfg: Cfg) -> PruneSettings:
    """``settings`` with ``round_to="auto"`` settled for ``cfg`` (``settings.auto_round_to``
    of its BN layers' widths); the report records the value used."""
    if settings.round_to != AUTO:
        return settings
    widths = [c.out_channels for layer in network_cost(cfg).layers for c in layer.convs
              if c.batch_norm]
    return replace(settings, round_to=auto_round_to(widths))


def needs_latency(settings: PruneSettings) -> bool:
    """Does ``settings`` rank or budget by latency (and so need a latency table)?"""
    return settings.ranking is Ranking.LATENCY or settings.target_latency is not None


def _chosen(settings: PruneSettings, found: Found) -> PruneSettings:
    return replace(settings, ratio=found.ratio, layers=found.layers)


MAX_LATENCY_ROUNDS = 3  # measured plans of a latency budget (the first, then corrections)


def _prune_to_latency(model: Darknet, settings: PruneSettings, space: PlanSpace,
                      img_size: int, latency: LatencyContext) -> tuple[Darknet, PruneReport]:
    """Search on the table's prediction (its offset calibrated on the measured dense model),
    cut, measure. A measurement over the limit refits the prediction to every model measured
    so far (``LatencyPredictor.fitted``: the dense one and each plan) and searches again, at
    most ``MAX_LATENCY_ROUNDS`` measured plans in all; the last one is returned,
    ``search.met`` saying whether it is within the limit."""
    budget = settings.budget
    dense = latency.measure(model)
    measured_models = [(model.cfg, dense)]
    predictor = LatencyPredictor(latency.table, img_size).fitted(measured_models)
    limit = budget.limit(dense)
    steps: list[Step] = []
    rounds: list[LatencyRound] = []
    stop = f"{MAX_LATENCY_ROUNDS} measured plans"
    for _ in range(MAX_LATENCY_ROUNDS):
        try:
            found, tried = search_budget(space, budget, predictor.predict, dense,
                                         settings.layers)
        except BudgetError as e:
            if not rounds:
                raise
            stop = (f"refitted to the measurements, the prediction puts the budget out of "
                    f"reach (the least it reaches: {e.nearest:.4g} ms)")
            break  # keep the last cut
        steps += tried
        slim, report = _cut(model, _chosen(settings, found), space, img_size)
        measured = latency.measure(slim)
        rounds.append(LatencyRound(found.layers, found.ratio, found.figure, measured))
        if measured <= limit:
            stop = "met"
            break
        measured_models.append((found.cfg, measured))
        predictor = predictor.fitted(measured_models)
    search = SearchReport.of(budget, dense, found, steps, tuple(rounds))
    return slim, replace(report, search=replace(search, figure=rounds[-1].measured_ms,
                                                stop=stop))


def _cut(model: Darknet, settings: PruneSettings, space: PlanSpace,
         img_size: int) -> tuple[Darknet, PruneReport]:
    """The slim model of ``settings.layers`` blocks then ``settings.ratio``, and its report."""
    blocks = prune_blocks(model, settings.layers, settings.fold, space.block_scores)
    base = blocks.model
    candidate = space.candidate(settings.layers)
    analysis, structure = candidate.analysis, candidate.structure
    if settings.ratio or not settings.layers:
        _check_prunable(analysis, settings.scope)
    plan = candidate.plan(settings.ratio, space.ranker)
    check_plan(structure, plan)
    slim, folds = cut_model(base, analysis, plan, settings.fold)

    modules = dict(base.named_modules())
    kept = {layer.name: plan.kept_positions(layer.classes).tolist()
            for layer in structure.layers}
    dense_name = blocks.dense_name
    before, after = (network_cost(m.cfg, img_size, img_size) for m in (model, slim))
    report = PruneReport(
        settings=settings, params_before=before.params, params_after=after.params,
        gflops_before=before.gflops, gflops_after=after.gflops, img_size=img_size,
        prunable_channels=int(structure.prunable.sum()),
        removed_channels=int((~plan.keep).sum()),
        bn_channels_before=sum(modules[n].num_features for n in kept),
        bn_channels_after=sum(len(v) for v in kept.values()),
        threshold=plan.threshold, kept={dense_name(n): v for n, v in kept.items()},
        layers=_layer_rows(analysis, settings.scope, slim.cfg, blocks),
        floors=tuple(replace(f, layer=dense_name(f.layer)) for f in plan.floors),
        folds=tuple(replace(f, conv=dense_name(f.conv)) for f in folds),
        removable_blocks=blocks.removable, removed_blocks=blocks.removed,
        block_folds=blocks.folds, block_unfolded=blocks.unfolded, search=None,
    )
    return slim, report


def prunable_batchnorm_names(cfg: Cfg, scope: Scope | str = Scope.ALL) -> list[str]:
    """BN module names with at least one channel ``scope`` lets the pruner remove."""
    analysis = analyze(cfg)
    ok = analysis.prunable(scope)
    return [s.bn for s in analysis.graph.spaces
            if s.bn is not None and ok[analysis.classes_of_space(s)].any()]


def prunable_batchnorms(model: Darknet, scope: Scope | str = Scope.ALL) -> list[nn.BatchNorm2d]:
    """The BNs whose gammas take sparse training's L1 penalty (in ``conv_bn_pairs`` order)."""
    modules = dict(model.named_modules())
    return [modules[name] for name in prunable_batchnorm_names(model.cfg, scope)]


@dataclass(frozen=True)
class PrunedFiles:
    cfg: Path
    weights: Path
    report: Path
    chart: Path  # absent when it could not be drawn (a warning on the ``charts`` logger)


def pruned_files(out_dir: str | Path, inputs: tuple[str | Path, ...] = ()) -> PrunedFiles:
    """Where :func:`write_pruned` writes; raises if that would overwrite one of ``inputs``."""
    out_dir = Path(out_dir)
    files = PrunedFiles(out_dir / PRUNED_CFG, out_dir / PRUNED_WEIGHTS, out_dir / PRUNE_REPORT,
                        out_dir / PRUNE_CHART)
    sources = {Path(p).resolve() for p in inputs}
    for target in (files.cfg, files.weights, files.report, files.chart):
        if target.resolve() in sources:
            raise PruneError(f"--out {out_dir} would overwrite the input {target}; "
                             "choose another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise PruneError(f"--out {out_dir} exists and is not a folder")
    return files


def write_pruned(slim: Darknet, report: PruneReport, out_dir: str | Path,
                 inputs: tuple[str | Path, ...] = ()) -> PrunedFiles:
    """Write ``pruned.cfg``, ``pruned.weights``, ``prune_report.json`` and
    ``prune_report.png``, all or nothing.

    They belong together (the weights fit this cfg only), so they are written with
    ``common.io.write_together``: each into a temporary file first, and only when all are
    complete renamed into place, ``pruned.cfg`` removed first and renamed last. The chart
    (``charts.prune_report``) is drawn before anything is written; if it cannot be drawn
    (one warning line) the set is written without it and an older chart is removed. Hence:

    * a failed write (full disk, read-only folder) changes nothing: an earlier prune's files
      stay as they were, and still load together;
    * a kill during the renames (a few microseconds) leaves no ``pruned.cfg``, never a new
      cfg beside old weights: where ``pruned.cfg`` exists, its weights and report are the
      ones written with it. Without it, run prune again.

    Refuses (before writing anything) when a target is one of ``inputs``.
    """
    files = pruned_files(out_dir, inputs)
    data = report.as_dict()
    png = charts.render("prune_report", data)  # drawn first: a failure is one warning line
    if png is None:
        files.chart.unlink(missing_ok=True)  # never an old picture beside a new report
    report_text = json.dumps(data, indent=1) + "\n"
    write_together([
        (files.report, lambda f: f.write(report_text.encode())),
        *([(files.chart, lambda f: f.write(png))] if png is not None else []),
        (files.weights, lambda f: write_weights(slim, f)),
        (files.cfg, lambda f: f.write(format_cfg(slim.cfg).encode())),
    ])
    return files
