"""Fine-tuning the slim model, optionally distilling the dense one: a training hook,
``run_training(RunSpec(..., hooks=(DistillationHook(teacher),)))``.
"""

from __future__ import annotations

from common.lazy import lazy_names

_HOME = {
    "DistillationHook": "hook",
    "distillation_loss": "distill",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME)
