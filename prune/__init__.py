"""Res2Net-aware channel pruning of Darknet detectors (network slimming).

Three separate concerns, one module each:

* which channels are coupled: ``graph`` (the channel graph), ``rules`` (one coupling rule
  per section type), ``analysis`` (coupled classes, readable groups);
* how important they are: ``importance`` (mean |gamma|, optionally per multiply-add),
  ``ranking`` (weighed against multiply-adds or against ``latency``, a per-conv latency
  table that ``op_timing`` measures in onnxruntime), ``select`` (pure keep-plan);
* how to cut: ``slim_cfg`` (the pruned cfg), ``fold`` (removed channels' and blocks'
  constants), ``surgery`` (the slim model).

Layer pruning follows the same split: ``blocks`` finds the removable identity-residual
blocks, scores them (mean |gamma| before the add) and selects; ``block_cut`` cuts them;
``sensitivity`` measures instead what removing each costs. ``recalibrate`` re-estimates the
BatchNorm statistics of a cut model.

``settings`` is what a run is asked to do (``budget``: a GFLOPs, parameter or latency limit
that ``search`` meets by choosing the ratio and the blocks); ``pipeline`` strings the steps
together for the CLI and other commands.

The names below load their module on first use, so that ``prune.settings`` (and the
``--help`` of the commands that read it) imports no torch.
"""

from __future__ import annotations

from common.lazy import lazy_names

_HOME = {
    "ChannelAnalysis": "analysis", "ChannelGroup": "analysis", "analyze": "analysis",
    "PruneError": "errors",
    "PruneReport": "pipeline", "prunable_batchnorm_names": "pipeline",
    "prunable_batchnorms": "pipeline", "prune_model": "pipeline", "write_pruned": "pipeline",
    "PrunedFiles": "pipeline",
    "KeepPlan": "select", "select_channels": "select",
    "Budget": "budget", "BudgetError": "search",
    "MinKeep": "settings", "PruneSettings": "settings", "Ranking": "settings", "Scope": "settings",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME)
