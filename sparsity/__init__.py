"""Sparse training (network slimming): an L1 penalty on the prunable BatchNorm gammas,
as a training hook: ``run_training(RunSpec(..., hooks=(SparsityHook(SparsitySchedule(0.01)),)))``.
"""

from __future__ import annotations

from common.lazy import lazy_names

_HOME = {
    "SparsityHook": "hook",
    "SparsitySchedule": "penalty",
    "gamma_stats": "stats",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME)
