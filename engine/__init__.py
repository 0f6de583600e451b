"""The training engine, and evaluation: one training run as one call (``run_training``),
a model's mAP on a data set (``evaluate``).

    from engine import RunSpec, TrainConfig, evaluate, run_training

The names below load their module on first use (``common.lazy``).
"""

from __future__ import annotations

from common.lazy import lazy_names

_HOME = {
    "RunSpec": "run",
    "RunResult": "run",
    "run_training": "run",
    "TrainConfig": "trainer",
    "Evaluation": "evaluator",
    "Predictor": "evaluator",
    "evaluate": "evaluator",
    "evaluate_batches": "evaluator",
    "load_data": "data",
}

__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_names(__name__, _HOME)
