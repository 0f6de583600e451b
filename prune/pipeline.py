"""The pruning pipeline for callers without the CLI: analyze, score, select, cut, report.

    slim, report = prune_model(model, PruneSettings(ratio=0.5))   # model: a loaded Darknet
    slim, report = prune_model(model, PruneSettings(layers=3))    # 3 blocks first, then channels
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
from common.io import write_together
from darknet.cfg import Cfg, format_cfg
from darknet.cost import network_cost
from darknet.model import Darknet
from darknet.sections import MultiScaleSection
from darknet.shapes import infer_shapes
from darknet.weights import write_weights

from .analysis import ChannelAnalysis, analyze
from .block_cut import BlockCut, RemovedBlock, prune_blocks
from .errors import PruneError
from .fold import FoldNote, OffsetNote
from .importance import class_scores
from .select import FloorNote, check_plan, select_channels
from .settings import PruneSettings, Scope
from .surgery import cut_model

PRUNED_CFG, PRUNED_WEIGHTS, PRUNE_REPORT = "pruned.cfg", "pruned.weights", "prune_report.json"
PRUNE_CHART = "prune_report.png"


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

    def as_dict(self) -> dict:
        """The report's JSON; ``settings`` as :meth:`PruneSettings.as_dict` gives them."""
        d = {**asdict(self), "settings": self.settings.as_dict()}
        d["threshold"] = self.threshold if self.threshold != float("-inf") else None
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


def prune_model(model: Darknet, settings: PruneSettings,
                img_size: int | None = None) -> tuple[Darknet, PruneReport]:
    """Remove the ``settings.layers`` lowest-scored blocks of ``model`` (``prune.blocks``),
    then the least important ``settings.ratio`` of the prunable coupled channels of the rest.

    Channels are ranked by mean |gamma| per (relative multiply-adds) ** ``flops_exponent``
    (``prune.importance.class_scores``; 0: gamma alone). Returns the slim model (``model`` is
    not modified) and the report, with GFLOPs at ``img_size`` (default: the cfg's [net]
    height). Every module name and layer index in the report is the dense model's; ``kept``
    covers the layers that survive.
    """
    blocks = prune_blocks(model, settings.layers, settings.fold)
    base = blocks.model
    analysis = analyze(base.cfg)
    if settings.ratio or not settings.layers:
        _check_prunable(analysis, settings.scope)
    structure = analysis.structure(settings.scope)
    plan = select_channels(structure, class_scores(analysis, base, settings.flops_exponent),
                           settings)
    check_plan(structure, plan)
    slim, folds = cut_model(base, analysis, plan, settings.fold)

    modules = dict(base.named_modules())
    kept = {layer.name: plan.kept_positions(layer.classes).tolist()
            for layer in structure.layers}
    dense_name = blocks.dense_name
    img_size = img_size or model.cfg.net.height
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
        block_folds=blocks.folds, block_unfolded=blocks.unfolded,
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
