"""Res2Net-aware channel pruning of Darknet detectors (network slimming).

Three separate concerns, one module each:

* which channels are coupled: ``graph`` (the channel graph), ``rules`` (one coupling rule
  per section type), ``analysis`` (coupled classes, readable groups);
* how important they are: ``importance`` (mean |gamma|, optionally per multiply-add),
  ``select`` (pure keep-plan);
* how to cut: ``slim_cfg`` (the pruned cfg), ``fold`` (removed channels' and blocks'
  constants), ``surgery`` (the slim model).

Layer pruning follows the same split: ``blocks`` finds the removable identity-residual
blocks, scores them (mean |gamma| before the add) and selects; ``block_cut`` cuts them.

``pipeline`` strings them together for the CLI and other commands.
"""

from .analysis import ChannelAnalysis, ChannelGroup, Scope, analyze
from .errors import PruneError
from .pipeline import (
    PruneReport,
    prunable_batchnorm_names,
    prunable_batchnorms,
    prune_model,
    write_pruned,
)
from .select import KeepPlan, MinKeep, select_channels

__all__ = [
    "ChannelAnalysis", "ChannelGroup", "KeepPlan", "MinKeep", "PruneError", "PruneReport",
    "Scope", "analyze", "prunable_batchnorm_names", "prunable_batchnorms", "prune_model",
    "select_channels", "write_pruned",
]
