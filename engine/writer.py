"""The files of a training run, and the order that makes every interruption recoverable.

``out_dir`` holds, rank 0 writing each file atomically:

* ``model.cfg``, ``run.json`` -- the cfg trained and the run's settings, written once before
  the first epoch (``write_start``);
* ``last.pt`` -- the resumable checkpoint (``engine.checkpoint``);
* ``last.weights`` -- Darknet weights after the epoch (the EMA copy when EMA is on);
* ``best.weights`` -- the epoch with the best mAP@.5:.95 so far (ties: mAP@.5);
* ``results.json`` / ``results.csv`` -- one row per epoch (``RESULT_COLUMNS`` first, then
  whatever hooks add), ``results.png`` those curves (``charts.results``; a drawing failure is
  one warning line), and each hook's own files (``Hook.write``).

**The checkpoint is the commit point.** After every epoch ``write_epoch`` writes ``last.pt``
first and everything else after it, all derived from the state the checkpoint holds. So
whenever a run stops (kill -9 included) the folder is in one of two states: the checkpoint
of epoch N and the other files of epoch N (complete), or the checkpoint of epoch N and some
files still of epoch N-1 (killed while writing them). ``--resume`` starts from the checkpoint
and first writes epoch N's files again (``write_epoch(..., checkpoint=False)``: the same
bytes), which heals the second state. A folder with no ``last.pt`` has completed no epoch:
only ``model.cfg`` and ``run.json`` can be there, and a fresh run may start in it
(``holds_run``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import charts
from common import lock
from common.artefacts import (
    BEST_WEIGHTS,
    CHECKPOINT,
    LAST_WEIGHTS,
    MODEL_CFG,
    RESULTS_CHART,
    RESULTS_CSV,
    RESULTS_JSON,
    RUN_RECORD,
)
from common.errors import UserError
from common.io import atomic_write_text, ensure_writable_dir
from darknet import Darknet, WeightsHeader, write_cfg
from engine.checkpoint import save_checkpoint
from engine.hooks import Hook
from engine.loss import LOSS_NAMES

RESULT_COLUMNS = ("epoch", "loss", *(f"loss_{n}" for n in LOSS_NAMES), "lr", "images_per_s",
                  "map50", "map", "train_s", "eval_s", "best")
# Files only a completed epoch writes: any of them means a run was (or is) here.
EPOCH_FILES = (CHECKPOINT, LAST_WEIGHTS, BEST_WEIGHTS, RESULTS_JSON, RESULTS_CSV)


def holds_run(out_dir: Path) -> bool:
    """True when ``out_dir`` holds files of a completed epoch (a fresh run must not start)."""
    return any((out_dir / name).exists() for name in EPOCH_FILES)


def new_run_dir(path: Path, numbered: bool = False) -> Path:
    """The folder a fresh run writes into, created. ``numbered``: the first of ``path``,
    ``path2``, ``path3``, ... that is missing or empty and whose lock (``common.lock``) this
    process takes, so two runs started together get two folders (the caller releases it);
    else ``path`` itself, refused when it holds a run."""
    if numbered:
        base, n = path, 1
        while (path.exists() and any(path.iterdir())) or not _claim(path):
            n += 1
            path = base.with_name(f"{base.name}{n}")
    elif holds_run(path):
        if not (path / CHECKPOINT).exists():
            raise UserError(f"{path} holds run files but no {CHECKPOINT} (deleted?), so it can "
                            "be neither resumed nor overwritten; choose another --out")
        raise UserError(f"{path} already holds a training run; pass --resume to continue it "
                        "or choose another --out")
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a directory")
    return ensure_writable_dir(path)


def _claim(path: Path) -> bool:
    try:
        lock.acquire(path)
    except lock.FolderBusy:
        return False
    if [p for p in path.iterdir() if p.name != lock.LOCK_NAME]:  # filled before we locked
        lock.release(path)
        return False
    return True


def result_columns(history: Sequence[dict[str, Any]]) -> list[str]:
    """``RESULT_COLUMNS``, then every other key in the order the rows first show it."""
    columns = dict.fromkeys(RESULT_COLUMNS)
    for row in history:
        columns.update(dict.fromkeys(k for k in row if k not in columns))
    return list(columns)


class RunWriter:
    """Writes one run's files into ``out_dir`` (call it on rank 0 only)."""

    def __init__(self, out_dir: str | Path, hooks: Sequence[Hook] = ()):
        self.out_dir = Path(out_dir)
        self.hooks = list(hooks)

    def write_start(self, model: Darknet, record: dict[str, Any]) -> None:
        write_cfg(model.cfg, self.out_dir / MODEL_CFG)
        atomic_write_text(self.out_dir / RUN_RECORD, json.dumps(record, indent=2) + "\n")

    def write_epoch(self, state: dict[str, Any], model: Darknet, checkpoint: bool = True) -> None:
        """Epoch ``state['epoch']``'s files: ``state`` is the checkpoint, ``model`` the network
        to save (the evaluated one); ``checkpoint=False`` rewrites all but the checkpoint."""
        if checkpoint:
            save_checkpoint(self.out_dir / CHECKPOINT, state)
        header = WeightsHeader(seen=state["iteration"] * state["config"]["batch_size"])
        model.save_weights(self.out_dir / LAST_WEIGHTS, header)
        if state["best_epoch"] == state["epoch"]:
            model.save_weights(self.out_dir / BEST_WEIGHTS, header)
        self.write_results(state["history"], state["best"], state["best_epoch"])
        for hook in self.hooks:
            hook.write(self.out_dir)

    def write_results(self, history: Sequence[dict[str, Any]], best: Sequence[float] | None,
                      best_epoch: int | None) -> None:
        summary = {"best_epoch": best_epoch,
                   "best_map": best[0] if best else None,
                   "best_map50": best[1] if best else None,
                   "epochs": list(history)}
        atomic_write_text(self.out_dir / RESULTS_JSON, json.dumps(summary, indent=2) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, result_columns(history), extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        atomic_write_text(self.out_dir / RESULTS_CSV, buf.getvalue())
        charts.write_chart(self.out_dir / RESULTS_CHART, "results", list(history))
