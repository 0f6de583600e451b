"""CPU latency: how every form of every model in this project is timed.

``measure_latency`` times whole models: the median of repeated batch-1 forward passes after
warm-up, the models timed in turns within one run (so background load hits them alike); NMS
is timed apart on each model's own outputs, because its cost depends on how many boxes
survive the score threshold, not on the network. ``median_ms`` times one call on its own,
for as many runs as fit a small time budget: the single-conv graphs of ``prune.op_timing``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from evaluation import postprocess


@dataclass(frozen=True)
class Timing:
    runs: int = 30
    warmup: int = 5
    nms_conf: float = 0.25  # deployment-style threshold for the NMS timing


@torch.inference_mode()
def measure_latency(backends: Sequence[Callable[[torch.Tensor], torch.Tensor]],
                    image: torch.Tensor, timing: Timing = Timing(),
                    nms: bool = True) -> list[tuple[float, float]]:
    """Median (forward ms, NMS ms) per backend, timed in turns on the same ``image [1,3,S,S]``.

    ``backends`` map images to eval-mode detections (``shipping.backends``).
    ``nms=False`` times the forward alone (NMS ms 0): what pruning changes.
    """
    for backend in backends:
        for _ in range(timing.warmup):
            backend(image)
    forward: list[list[float]] = [[] for _ in backends]
    after: list[list[float]] = [[] for _ in backends]
    for _ in range(timing.runs):
        for k, backend in enumerate(backends):
            t0 = time.perf_counter()
            out = backend(image)
            t1 = time.perf_counter()
            if nms:
                postprocess(out, conf_thresh=timing.nms_conf)
            t2 = time.perf_counter()
            forward[k].append((t1 - t0) * 1e3)
            after[k].append((t2 - t1) * 1e3)
    return [(statistics.median(f), statistics.median(n)) for f, n in zip(forward, after,
                                                                         strict=True)]


def median_ms(call: Callable[[], object], min_runs: int = 5, max_runs: int = 50,
              budget_s: float = 0.05) -> float:
    """Median ms of ``call()`` after one warm-up call: at least ``min_runs`` runs, more for
    fast calls (up to ``max_runs``, about ``budget_s`` in all)."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    runs = max(min_runs, min(max_runs, int(budget_s / max(first, 1e-6))))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)
