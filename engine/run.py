"""One training run as one call: ``run_training(RunSpec(...))``.

``main.py train``, ``sparse`` and ``finetune`` build a ``RunSpec`` from their flags and call
``run_training``; so can any script::

    spec = RunSpec(cfg="cfgs/demo.cfg", data="demo", out_dir=Path("runs/x"),
                   config=TrainConfig(epochs=5), hooks=(SparsityHook(SparsitySchedule(0.01)),))
    result = run_training(spec)
    later = run_training(dataclasses.replace(RunSpec.resume("runs/x"), hooks=...))

``run_training`` joins the ``torchrun`` process group when there is one, picks the device,
reads and checks the cfg, prepares the output folder (``engine.writer.new_run_dir``), seeds,
builds the model (random init with prior detection biases, then ``weights`` if given: whole,
up to a cutoff, or transferred to other heads, ``darknet.transfer``), checks the data,
writes ``model.cfg`` and ``run.json``, and runs ``Trainer.fit``.

Resuming (``RunSpec.resume``) takes the cfg text, data, start weights, command, record and
``TrainConfig`` from the checkpoint. Of the config only ``lr0`` and ``epochs`` may then be
changed (``engine.trainer.RESUMABLE``): ``epochs`` not below the epochs completed, and the LR
schedule continues as ``engine.optim`` describes. Hooks are not in the checkpoint: pass the
same ones (their state is restored by name).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import lock
from common.artefacts import BEST_WEIGHTS, CHECKPOINT, LAST_WEIGHTS
from common.errors import UserError
from darknet import Darknet, parse_cfg_text
from darknet.transfer import StartWeights, load_start_weights
from engine.checkpoint import load_checkpoint, seed_everything
from engine.data import DetectionData, load_data, skipped_summary
from engine.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    loader_workers,
)
from engine.hooks import Hook
from engine.loss import init_detection_biases
from engine.trainer import TrainConfig, Trainer, check_resumable
from engine.writer import holds_run, new_run_dir


@dataclass(frozen=True)
class RunSpec:
    """What to train and where (``cfg`` ... ``record``), and how (``hooks`` ... ``progress``).

    ``cfg`` names the cfg file (read unless ``cfg_text`` is given); ``data`` is a data yaml,
    a Darknet ``.data`` file or ``"demo"``; ``weights`` the Darknet weights to start from
    (None: random init), with ``cutoff`` (load layers 0..cutoff-1; implied by a ``*.conv.N``
    name) or ``transfer`` (load what fits, re-initialise other head convs). ``numbered``:
    when ``out_dir`` is taken, use the first free of ``out_dir2``, ``out_dir3``, ...; else a
    fresh run refuses an ``out_dir`` holding a run.
    ``command`` (the CLI command) and ``record`` (its flags) are stored in the checkpoint so a
    resume can check it continues the same thing. ``checkpoint``: set by ``resume``.
    """

    cfg: str
    data: str
    out_dir: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    weights: str | None = None
    cutoff: int | None = None
    transfer: bool = False
    command: str = "train"
    record: Mapping[str, Any] = field(default_factory=dict)
    cfg_text: str | None = None
    numbered: bool = False
    hooks: tuple[Hook, ...] = ()
    device: str | None = None
    workers: int | None = None
    progress: bool = True
    checkpoint: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        # A script may pass paths as str or Path (``write_pruned``'s files are Paths); the
        # checkpoint and run.json record them as text.
        object.__setattr__(self, "cfg", str(self.cfg))
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.weights is not None:
            object.__setattr__(self, "weights", str(self.weights))
        object.__setattr__(self, "hooks", tuple(self.hooks))

    @classmethod
    def resume(cls, out_dir: str | Path) -> RunSpec:
        """The run in ``out_dir`` as its checkpoint recorded it, ready to continue."""
        out_dir = Path(out_dir)
        if not (out_dir / CHECKPOINT).is_file() and out_dir.is_dir():
            why = ("it holds run files but no checkpoint (deleted?)" if holds_run(out_dir)
                   else "no epoch of that run completed; start it again without --resume")
            raise UserError(f"{out_dir / CHECKPOINT}: no checkpoint to resume from: {why}")
        state = load_checkpoint(out_dir / CHECKPOINT)
        meta = state["meta"]
        return cls(cfg=meta["cfg"], data=meta["data"], out_dir=out_dir,
                   config=TrainConfig.from_dict(state["config"]), weights=meta.get("weights"),
                   command=meta.get("command", "train"), record=meta.get("record", {}),
                   cfg_text=meta["cfg_text"], checkpoint=state)

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None

    @property
    def done(self) -> int:
        """Epochs completed before this start."""
        return self.checkpoint["epoch"] if self.checkpoint else 0


@dataclass(frozen=True)
class RunResult:
    """How a run ended. ``history`` holds every epoch (also those before a resume);
    ``is_main``: this is rank 0 (the one that wrote the files and should report)."""

    out_dir: Path
    history: tuple[dict[str, Any], ...]
    trained: int
    best_epoch: int | None
    best: tuple[float, float] | None  # (mAP@.5:.95, mAP@.5) of best.weights
    seconds: float
    is_main: bool
    skipped: tuple[tuple[str, str], ...]  # (image, reason) of the unreadable images left out

    @property
    def best_weights(self) -> Path:
        """The weights of the epoch with the best mAP@.5:.95 (EMA copy)."""
        return self.out_dir / BEST_WEIGHTS

    @property
    def last_weights(self) -> Path:
        """The weights of the last completed epoch (EMA copy)."""
        return self.out_dir / LAST_WEIGHTS


def run_training(spec: RunSpec) -> RunResult:
    """Train (or continue) the run ``spec`` describes; see the module docstring."""
    if spec.workers is not None and spec.workers < 0:
        raise UserError(f"--workers must be >= 0, got {spec.workers}")
    dist = init_distributed(spec.device)
    workers = loader_workers(dist, spec.workers)
    try:
        return _run(spec, dist, workers)
    finally:
        cleanup_distributed()


def _run(spec: RunSpec, dist: DistInfo, workers: int) -> RunResult:
    if spec.resuming:  # before any long work; Trainer.fit checks again
        check_resumable(TrainConfig.from_dict(spec.checkpoint["config"]), spec.config, spec.done)
    cfg_text = spec.cfg_text if spec.cfg_text is not None else _read_cfg(spec.cfg)
    cfg = parse_cfg_text(cfg_text, spec.cfg)
    cfg.require_heads(f"main.py {spec.command}")
    out = spec.out_dir if spec.resuming else _fresh_out_dir(spec, dist)
    try:
        return _train(spec, dist, workers, cfg, cfg_text, out)
    finally:
        if spec.numbered and not spec.resuming:
            lock.release(out)  # taken by new_run_dir


def _train(spec: RunSpec, dist: DistInfo, workers: int, cfg, cfg_text: str,
           out: Path) -> RunResult:
    seed_everything(spec.config.seed)  # the random init is part of the run
    model = Darknet(cfg)
    loaded = None
    if not spec.resuming:
        init_detection_biases(model, spec.config.img_size)  # what a partial load leaves
        if spec.weights:
            loaded = load_start_weights(model, spec.weights, spec.cutoff, spec.transfer)
    data = _load_data(spec.data, spec.config.img_size, dist, model.num_classes)
    meta = {"cfg": spec.cfg, "cfg_text": cfg_text, "data": spec.data, "weights": spec.weights,
            "command": spec.command, "record": dict(spec.record)}
    trainer = Trainer(model, data, spec.config, out, hooks=spec.hooks, dist=dist,
                      workers=workers, progress=spec.progress, meta=meta)
    if dist.is_main:
        trainer.writer.write_start(model, {
            "meta": {k: v for k, v in meta.items() if k != "cfg_text"},
            "config": spec.config.as_dict(), "processes": dist.world_size,
            "device": str(dist.device)})
        _log_start(trainer, spec, data, loaded)
    start = time.perf_counter()
    history = trainer.fit(spec.checkpoint)
    barrier()
    return RunResult(out, tuple(history), len(history) - spec.done, trainer.best_epoch,
                     trainer.best, time.perf_counter() - start, dist.is_main, data.skipped)


def _fresh_out_dir(spec: RunSpec, dist: DistInfo) -> Path:
    """Rank 0 picks and creates the folder; every process gets its name."""
    out = new_run_dir(Path(spec.out_dir), spec.numbered) if dist.is_main else None
    return broadcast_object(out)


def _read_cfg(path: str) -> str:
    from common.io import read_text

    return read_text(path, "cfg")


def _load_data(source: str, img_size: int, dist: DistInfo, num_classes: int) -> DetectionData:
    """The dataset, checked; rank 0 first so the demo is generated once."""
    from yolodata import load_spec

    spec = None
    if dist.is_main:
        spec = load_spec(source)
    barrier()
    if spec is None:
        spec = load_spec(source)
    return load_data(spec, img_size, num_classes)


def _log_start(trainer: Trainer, spec: RunSpec, data: DetectionData,
               loaded: StartWeights | None) -> None:
    if data.skipped:
        trainer.log(skipped_summary(data.skipped))
    if loaded is not None and loaded.describe():
        trainer.log(loaded.describe())
    config = spec.config
    action = (f"resuming {trainer.out_dir} after epoch {spec.done}" if spec.resuming
              else f"training into {trainer.out_dir}")
    trainer.log(f"{action}: {len(data.train)} train / {len(data.val)} val images, "
                f"{config.epochs} epochs at {config.img_size} px, batch {config.batch_size}, "
                f"{trainer.dist.world_size} process(es) on {trainer.dist.device}")

