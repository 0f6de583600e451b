"""`main.py train`: train a detector from a cfg on a YOLO-format dataset (or the demo)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common.io import ensure_writable_dir

HELP = "train a detector (default: the demo cfg on the built-in demo dataset)"
DESCRIPTION = """Train a Darknet-cfg detector with the project's one training engine: AdamW or
SGD with warm-up and cosine decay, EMA of the weights, AMP on CUDA, an mAP evaluation on the
val split after every epoch (--eval-interval).

With no arguments it trains cfgs/demo.cfg on the built-in demo dataset (generated on first
use, cached in ~/.cache/res2net-yolo or $RES2NET_YOLO_CACHE) with defaults chosen on it: on 2
CPU cores it took 10.6 minutes to reach mAP@.5 0.97 (AdamW, lr 0.006, batch 8, 12 epochs).

Files in --out, rewritten atomically after every epoch:
  last.weights, best.weights  Darknet weights (EMA copy); best = highest mAP@.5:.95
  last.pt                     resumable checkpoint (optimizer, schedule, EMA, RNG, ...)
  results.json, results.csv   per-epoch loss components, lr, images/s, mAP@.5, mAP@.5:.95
  model.cfg, run.json         the cfg trained and the settings used

Output directory: without --out, runs/train, or runs/train2, runs/train3, ... when it is
taken. An explicit --out that already holds a run is refused unless --resume is given.
--resume continues the run in --out (default: the newest runs/train*) from its last
completed epoch with every setting from its checkpoint; only --device and --workers may
change.

Several processes: torchrun --nproc_per_node=N main.py train ... runs DistributedDataParallel
(NCCL on GPUs with SyncBatchNorm, gloo on CPU); --batch-size is the total over processes.

examples:
  python main.py train
  python main.py train --cfg cfgs/res2net-yolov3.cfg --data coco.yaml --img-size 416 \\
      --batch-size 64 --epochs 100 --device cuda --out runs/coco
  python main.py train --resume --out runs/coco"""

DEFAULT_CFG = "cfgs/demo.cfg"  # relative to the project, not to the working directory
PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = "runs/train"
# Values chosen on the demo (see the README's training section); None = the engine default.
DEFAULTS = dict(epochs=12, img_size=128, batch_size=8, optimizer="adamw", lr=0.006)
RUN_FILES = ("last.pt", "last.weights", "best.weights", "results.json")


def add_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None,
                  default_out: str = DEFAULT_OUT) -> None:
    """The training flags; ``sparse`` and ``finetune`` reuse them with their own defaults."""
    d = {**DEFAULTS, **(defaults or {})}
    p.add_argument("--cfg", default=None, help=f"Darknet .cfg (default: {DEFAULT_CFG})")
    p.add_argument("--data", default="demo",
                   help="data .yaml (path/train/val/names), Darknet .data file, or 'demo' "
                        "(default: demo)")
    p.add_argument("--weights", default=None,
                   help="Darknet .weights to start from (default: random init)")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help=f"number of epochs (default: {d['epochs']})")
    p.add_argument("--img-size", type=int, default=d["img_size"],
                   help=f"square input size, a multiple of 32 (default: {d['img_size']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"images per step, total over processes (default: {d['batch_size']})")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=d["optimizer"],
                   help="sgd (momentum 0.937, Nesterov) or adamw (beta1 0.937); adamw gets "
                        "there in far fewer steps on short runs (default: "
                        f"{d['optimizer']})")
    p.add_argument("--lr", type=float, default=d["lr"],
                   help=f"peak learning rate after warm-up (default: {d['lr']}; "
                        "sgd wants ~0.01, adamw ~0.001-0.003)")
    p.add_argument("--eval-interval", type=int, default=1,
                   help="evaluate mAP every N epochs; the last epoch always (default: 1)")
    p.add_argument("--no-ema", action="store_true",
                   help="evaluate and save the raw weights instead of their moving average")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", default=None,
                   help=f"output directory (default: {default_out}, or {default_out}2, ... "
                        "when taken)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader processes per training process (default: 0 on CPU, "
                        "where the cores do better computing; up to 8 with CUDA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    return train(args)


def train(args: argparse.Namespace, hooks=(), default_out: str = DEFAULT_OUT,
          prepare=None) -> int:
    """Build model, data and trainer from ``args`` and fit.

    ``hooks`` join the training loop (engine.hooks); ``prepare(model, args)`` runs on a fresh
    (not resumed) model before training, e.g. to check it is sparse-trainable.
    """
    from common.errors import UserError
    from common.io import atomic_write_text
    from darknet import Darknet, parse_cfg_text, write_cfg
    from engine.checkpoint import load_checkpoint, seed_everything
    from engine.data import skipped_summary
    from engine.distributed import barrier, cleanup_distributed, init_distributed, loader_workers
    from engine.loss import init_detection_biases
    from engine.trainer import TrainConfig, Trainer

    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    dist = init_distributed(args.device)
    args.workers = loader_workers(dist, args.workers)
    try:
        checkpoint = None
        if args.resume:
            out = _resume_dir(args.out, default_out)
            checkpoint = load_checkpoint(out / "last.pt")
            meta = checkpoint["meta"]
            config = TrainConfig.from_dict(checkpoint["config"])
            cfg = parse_cfg_text(meta["cfg_text"], meta["cfg"])
            data_source = meta["data"]
        else:
            config = _config(args)
            if args.cfg is None:
                args.cfg = str(PROJECT / DEFAULT_CFG)
            cfg_text = _read_text(args.cfg)
            cfg = parse_cfg_text(cfg_text, args.cfg)
            out = _new_run_dir(args.out, default_out) if dist.is_main else None
            if dist.enabled:
                from engine.distributed import broadcast_object
                out = broadcast_object(out)
            data_source = args.data
            meta = {"cfg": args.cfg, "cfg_text": cfg_text, "data": args.data,
                    "weights": args.weights, "command": getattr(args, "command", "train")}

        cfg.require_heads(f"main.py {meta['command']}")
        seed_everything(config.seed)  # the random init is part of the run
        model = Darknet(cfg)
        if checkpoint is None:
            if args.weights:
                model.load_weights(args.weights)
            else:
                init_detection_biases(model, config.img_size)
            if prepare is not None:
                prepare(model, args)
        data = _load_data(data_source, config.img_size, dist, model.num_classes)
        trainer = Trainer(model, data, config, out, hooks=hooks, dist=dist,
                          workers=args.workers, progress=not args.no_progress, meta=meta)
        if dist.is_main:
            if checkpoint is None:
                write_cfg(model.cfg, out / "model.cfg")
                atomic_write_text(out / "run.json", json.dumps(
                    {"meta": {k: v for k, v in meta.items() if k != "cfg_text"},
                     "config": config.as_dict(), "processes": dist.world_size,
                     "device": str(dist.device)}, indent=2) + "\n")
            if data.skipped:
                trainer.log(skipped_summary(data.skipped))
            action = f"resuming {out} after epoch {checkpoint['epoch']}" if checkpoint \
                else f"training into {out}"
            trainer.log(f"{action}: {len(data.train)} train / {len(data.val)} val images, "
                        f"{config.epochs} epochs at {config.img_size} px, batch "
                        f"{config.batch_size}, {dist.world_size} process(es) on {dist.device}")
        start = time.perf_counter()
        done_before = checkpoint["epoch"] if checkpoint else 0
        history = trainer.fit(checkpoint)
        barrier()
        if dist.is_main:
            _report(trainer, history[done_before:], time.perf_counter() - start, out)
        return 0
    finally:
        cleanup_distributed()


def _config(args: argparse.Namespace):
    from engine.trainer import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, img_size=args.img_size,
                       optimizer=args.optimizer, lr0=args.lr, ema=not args.no_ema,
                       eval_interval=args.eval_interval, seed=args.seed)


def _read_text(path: str) -> str:
    from common.io import read_text

    return read_text(path, "cfg")


def _load_data(source: str, img_size: int, dist, num_classes: int):
    """The dataset, checked; rank 0 first so the demo is generated once."""
    from common.errors import UserError
    from engine.data import build_data
    from engine.distributed import barrier
    from yolodata import load_spec

    spec = None
    if dist.is_main:
        spec = load_spec(source)
    barrier()
    if spec is None:
        spec = load_spec(source)
    if spec.num_classes != num_classes:
        raise UserError(f"{spec.source}: {spec.num_classes} class names but the cfg's [yolo] "
                        f"layers have classes={num_classes}")
    return build_data(spec, img_size)


def _is_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def _new_run_dir(out: str | None, default_out: str) -> Path:
    from common.errors import UserError

    if out is not None:
        path = Path(out)
        if _is_run(path):
            raise UserError(f"{path} already holds a training run; pass --resume to continue "
                            "it or choose another --out")
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} exists and is not a directory")
    else:
        base = Path(default_out)
        path, n = base, 1
        while path.exists() and any(path.iterdir()):
            n += 1
            path = base.with_name(f"{base.name}{n}")
    return ensure_writable_dir(path)


def _resume_dir(out: str | None, default_out: str) -> Path:
    from common.errors import UserError

    if out is not None:
        return ensure_writable_dir(out) if Path(out).is_dir() else Path(out)
    base = Path(default_out)
    runs = [p for p in base.parent.glob(f"{base.name}*") if (p / "last.pt").is_file()]
    if not runs:
        raise UserError(f"--resume: no run with a last.pt under {base}*; pass --out")
    return max(runs, key=lambda p: (p / "last.pt").stat().st_mtime)


def _report(trainer, history: list[dict], elapsed: float, out: Path) -> None:
    from engine.data import skipped_summary

    images = sum(m["images_per_s"] * m["train_s"] for m in history)
    train_s = sum(m["train_s"] for m in history)
    minutes, seconds = divmod(round(elapsed), 60)
    last = trainer.history[-1]
    trainer.log(
        f"done: {len(history)} epoch(s) in {minutes}m{seconds:02d}s, "
        f"{images / max(train_s, 1e-9):.1f} images/s (training)")
    if last["map"] is not None:
        trainer.log(f"last epoch {last['epoch']}: mAP@.5 {last['map50']:.4f}  "
                    f"mAP@.5:.95 {last['map']:.4f}")
    if trainer.data.skipped:  # the header check's, and any found while loading
        trainer.log(skipped_summary(trainer.data.skipped))
    if trainer.best is not None:
        trainer.log(f"best epoch {trainer.best_epoch}: mAP@.5 {trainer.best[1]:.4f}  "
                    f"mAP@.5:.95 {trainer.best[0]:.4f} -> {out / 'best.weights'}")
