"""The sparse-training hook: L1 on prunable gammas, and a per-epoch look at their spread."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from torch import nn

import charts
from common.artefacts import GAMMA_CHART, GAMMA_STATS
from common.errors import UserError
from common.io import atomic_write_text
from engine.hooks import Hook

from .penalty import SparsitySchedule, add_l1_subgradient
from .stats import EDGES, gamma_stats


class SparsityHook(Hook):
    """Adds ``s * sign(gamma)`` to the gradient of exactly the BNs pruning can remove.

    Which BNs those are comes from the pruning analyzer for the chosen ``scope``. After each
    epoch the |gamma| distribution of the evaluated model (the EMA copy when EMA is on, which is
    what gets saved and later pruned) is added to the metrics (``gamma_below``: fraction under
    ``threshold``) and drawn to ``gamma_hist.png`` (``charts.gamma_hist``), with the |gamma|
    a cut at ``prune_ratio`` would start from. ``prune_ratio`` only draws that line: it is
    not part of the training state.
    """

    name = "sparsity"

    def __init__(self, schedule: SparsitySchedule, scope: str = "all", threshold: float = 0.01,
                 prune_ratio: float = 0.5):
        if not 0 <= prune_ratio < 1:
            raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
        self.schedule, self.scope, self.threshold = schedule, scope, threshold
        self.prune_ratio = prune_ratio
        self.names: list[str] = []
        self.bns: list[nn.Module] = []
        self.history: list[dict[str, Any]] = []

    def on_train_start(self, trainer) -> None:
        from prune import prunable_batchnorm_names

        self.names = prunable_batchnorm_names(trainer.model.cfg, self.scope)
        if not self.names:
            raise UserError(f"{trainer.model.cfg.path}: no prunable BatchNorm for scope "
                            f"'{self.scope}'; sparse training would change nothing")
        self.bns = [trainer.model.get_submodule(n) for n in self.names]
        self.describe(trainer)

    def describe(self, trainer) -> None:
        trainer.log(f"sparsity: L1 on {len(self.bns)} prunable BatchNorms "
                    f"({sum(bn.num_features for bn in self.bns)} channels), scope {self.scope}")

    def current_s(self, trainer) -> float:
        return self.schedule.at(trainer.epoch, trainer.config.epochs)

    def after_backward(self, trainer) -> None:
        add_l1_subgradient(self.bns, self.current_s(trainer))

    def on_epoch_end(self, trainer, metrics: dict[str, Any]) -> None:
        evaluated = trainer.eval_model
        stats = gamma_stats([evaluated.get_submodule(n) for n in self.names], self.threshold,
                            self.prune_ratio)
        metrics.update(sparsity_s=self.current_s(trainer), gamma_l1=stats.l1,
                       gamma_below=stats.below)
        self.history.append({"epoch": trainer.epoch + 1, **stats.as_dict(),
                             "histogram": list(stats.histogram)})

    def write(self, out_dir) -> None:
        if not self.history:
            return
        stats = {"edges": list(EDGES), "epochs": self.history, **self.extra_stats()}
        atomic_write_text(out_dir / GAMMA_STATS, json.dumps(stats, indent=1))
        charts.write_chart(out_dir / GAMMA_CHART, "gamma_hist", stats)

    def extra_stats(self) -> dict[str, Any]:
        """What gamma_stats.json holds besides the per-epoch statistics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        # The settings travel with the checkpoint: --resume continues the same schedule.
        return {"history": self.history, "schedule": dataclasses.asdict(self.schedule),
                "scope": self.scope, "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        if "schedule" in state:
            self.schedule = SparsitySchedule(**state["schedule"])
            self.scope, self.threshold = state["scope"], state["threshold"]
