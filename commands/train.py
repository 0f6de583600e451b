"""`main.py train`: train a detector from a cfg on a YOLO-format dataset (or the demo)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
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

Files in --out, rewritten atomically after every epoch, the checkpoint first:
  last.pt                     resumable checkpoint (optimizer, schedule, EMA, RNG, flags)
  last.weights, best.weights  Darknet weights (EMA copy); best = highest mAP@.5:.95
  results.json, results.csv   per-epoch loss components, lr, images/s, mAP@.5, mAP@.5:.95
  model.cfg, run.json         the cfg trained and the settings used

Output directory: without --out, runs/train, or runs/train2, runs/train3, ... when it is
taken. An explicit --out that already holds a run is refused unless --resume is given.

Interrupted (ctrl-C, kill -9, NaN loss): --resume continues the run in --out (default: the
newest runs/train*) from its last completed epoch and, with the same flags, ends with the
same bytes as an uninterrupted run. Stopped before its first epoch completed, a run has no
last.pt: run the same command again without --resume. --resume replays the command and flags
recorded in last.pt; it honours --lr and --epochs: from the resumed iteration on, the lr is
what a run started with the new values would have there (warm-up, then cosine from --lr to
--lr x 0.05 at the last epoch; more epochs stretch the cosine, so on a finished run the lr
rises again). --device, --workers, --no-progress and --wait may change too; any other flag that
differs from the run's is refused by name, and so is another command (train on a sparse run).

One run per folder: a run holds a lock on --out (.lock, with its pid) until it ends; a
second command on the same --out refuses, naming that pid, or waits with --wait. A killed
run's lock goes with its process.

Pretrained weights: --weights darknet53.conv.74 loads layers 0-73 of the cfg (a file named
*.conv.N, or any file with --cutoff N: what `darknet partial` and `main.py partial` write);
--weights yolov3.weights --transfer loads an 80-class model into a cfg with other classes:
every layer but the [yolo] head convs, which start from the random init. The log says which.

Several processes: torchrun --nproc_per_node=N main.py train ... runs DistributedDataParallel
(NCCL on GPUs with SyncBatchNorm, gloo on CPU); --batch-size is the total over processes.

examples:
  python main.py train
  python main.py train --cfg cfgs/res2net-yolov3.cfg --data coco.yaml --img-size 416 \\
      --batch-size 64 --epochs 100 --device cuda --out runs/coco
  python main.py train --cfg yolov3-voc.cfg --data voc.yaml --weights darknet53.conv.74
  python main.py train --cfg yolov3-voc.cfg --data voc.yaml --weights yolov3.weights --transfer
  python main.py train --resume --out runs/coco"""

DEFAULT_CFG = "cfgs/demo.cfg"  # relative to the project, not to the working directory
PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = "runs/train"
# Values chosen on the demo (docs/results.md, "The demo pipeline"); None = the engine default.
DEFAULTS = dict(epochs=12, img_size=128, batch_size=8, optimizer="adamw", lr=0.006)
# Flags that say how a run is carried out, not what it computes: free on --resume.
HOW = ("device", "workers", "no_progress", "wait")
# Flags a resumed run honours (engine.optim: how the schedule continues).
HONOURED = {"lr": "lr0", "epochs": "epochs"}
NOT_RECORDED = ("command", "given", "resume", "out")


def add_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None,
                  default_out: str = DEFAULT_OUT) -> None:
    """The training flags; ``sparse`` and ``finetune`` reuse them with their own defaults."""
    d = {**DEFAULTS, **(defaults or {})}
    p.add_argument("--cfg", default=None, help=f"Darknet .cfg (default: {DEFAULT_CFG})")
    p.add_argument("--data", default="demo",
                   help="data .yaml (path/train/val/names), Darknet .data file, or 'demo' "
                        "(default: demo)")
    p.add_argument("--weights", default=None,
                   help="Darknet .weights to start from (default: random init); a file "
                        "named *.conv.N holds layers 0..N-1 (darknet partial) and loads as "
                        "--cutoff N")
    p.add_argument("--cutoff", type=int, default=None, metavar="N",
                   help="--weights holds only layers 0..N-1 (`main.py partial`, "
                        "darknet53.conv.74); the rest keep their initialisation")
    p.add_argument("--transfer", action="store_true",
                   help="--weights comes from a model with other [yolo] heads (another "
                        "class count): load every other layer, re-initialise the head convs")
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
                   help="continue the run in --out from its last completed epoch, with its "
                        "recorded flags; --lr and --epochs change them (see above)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader processes per training process (default: 0 on CPU, "
                        "where the cores do better computing; up to 8 with CUDA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_wait_argument(p)


def add_wait_argument(p: argparse.ArgumentParser) -> None:
    """``--wait``: every command that locks its --out (common.lock) has it."""
    p.add_argument("--wait", action="store_true",
                   help="when another run holds --out, wait for it to finish instead of "
                        "refusing")


def out_locked(folder: str | Path, args: argparse.Namespace):
    """Hold ``folder``'s lock (common.lock) for a ``with`` block; --wait says so on stderr."""
    import sys

    from common.lock import locked

    return locked(folder, getattr(args, "wait", False),
                  on_wait=lambda m: print(m, file=sys.stderr, flush=True))


def run(args: argparse.Namespace) -> int:
    return train(args)


HookFactory = Callable[[argparse.Namespace], list]


def train(args: argparse.Namespace, build_hooks: HookFactory | None = None,
          default_out: str = DEFAULT_OUT) -> int:
    """Run ``args``'s training (engine.run): a fresh run, or with ``--resume`` the run in
    ``--out`` continued. ``build_hooks(args)`` makes the command's hooks (engine.hooks) from
    the run's effective flags: on resume, those recorded in the checkpoint.
    """
    import contextlib

    if args.resume and args.out is None:
        args = argparse.Namespace(**{**vars(args), "out": str(_resume_dir(None, default_out))})
    # a numbered folder (no --out) is locked as it is chosen (engine.writer.new_run_dir);
    # a missing folder to resume is not created
    lock = not (args.out is None or args.resume and not Path(args.out).is_dir())
    with out_locked(args.out, args) if lock else contextlib.nullcontext():
        return _train(args, build_hooks, default_out)


def _train(args: argparse.Namespace, build_hooks: HookFactory | None,
           default_out: str) -> int:
    from engine.run import RunSpec, run_training

    if args.resume:
        spec = RunSpec.resume(_resume_dir(args.out, default_out))
        args = resumed_args(args, spec)
        spec = replace(spec, config=replace(
            spec.config, **{field: getattr(args, flag) for flag, field in HONOURED.items()}))
    else:
        if (args.cutoff is not None or args.transfer) and not args.weights:
            from common.errors import UserError

            raise UserError("--cutoff and --transfer say how to read --weights; give --weights")
        cfg = args.cfg if args.cfg is not None else str(PROJECT / DEFAULT_CFG)
        spec = RunSpec(cfg=cfg, data=args.data, out_dir=Path(args.out or default_out),
                       numbered=args.out is None, config=_config(args), weights=args.weights,
                       cutoff=args.cutoff, transfer=args.transfer, command=args.command)
    hooks = tuple(build_hooks(args)) if build_hooks else ()
    spec = replace(spec, record=_record(args), hooks=hooks, device=args.device,
                   workers=args.workers, progress=not args.no_progress)
    result = run_training(spec)
    if result.is_main:
        _report(result)
    return 0


def resumed_args(args: argparse.Namespace, spec) -> argparse.Namespace:
    """The flags of the run ``spec`` continues: those its checkpoint recorded, with the ones
    typed now from ``HOW`` and ``HONOURED``. Refuses another command, and by name any other
    typed flag whose value differs from the recorded one."""
    from common.errors import UserError

    if spec.command != args.command:
        raise UserError(f"{spec.out_dir} holds a `main.py {spec.command}` run; continue it "
                        f"with `main.py {spec.command} --resume`, not `{args.command}`")
    free = (*HOW, *HONOURED)
    missing = object()
    differ = [d for d in sorted(args.given) if d not in (*free, *NOT_RECORDED)
              and spec.record.get(d, missing) != getattr(args, d)]
    if differ:
        d = differ[0]
        was = spec.record.get(d, "not recorded")
        raise UserError(f"--resume continues {spec.out_dir} with its own settings, but "
                        f"{_flag(d)} is {getattr(args, d)!r} here and {was!r} in that run; "
                        f"on resume only {', '.join(map(_flag, free))} may change")
    now = {d: getattr(args, d) for d in args.given if d in free}
    honoured = {flag: getattr(spec.config, field) for flag, field in HONOURED.items()}
    return argparse.Namespace(**{**vars(args), **spec.record, **honoured, **now,
                                 "out": str(spec.out_dir)})


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _record(args: argparse.Namespace) -> dict[str, Any]:
    """The flags a checkpoint keeps so ``--resume`` can replay and check them."""
    return {k: v for k, v in vars(args).items()
            if not k.startswith("_") and k not in NOT_RECORDED}


def _config(args: argparse.Namespace):
    from engine.trainer import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, img_size=args.img_size,
                       optimizer=args.optimizer, lr0=args.lr, ema=not args.no_ema,
                       eval_interval=args.eval_interval, seed=args.seed)


def _resume_dir(out: str | None, default_out: str) -> Path:
    from common.artefacts import CHECKPOINT
    from common.errors import UserError

    if out is not None:
        return ensure_writable_dir(out) if Path(out).is_dir() else Path(out)
    base = Path(default_out)
    runs = [p for p in base.parent.glob(f"{base.name}*") if (p / CHECKPOINT).is_file()]
    if not runs:
        raise UserError(f"--resume: no run with a {CHECKPOINT} under {base}*; pass --out")
    return max(runs, key=lambda p: (p / CHECKPOINT).stat().st_mtime)


def _report(result) -> None:
    from engine.data import skipped_summary

    history = result.history[len(result.history) - result.trained:]
    if not history:
        last = result.history[-1]["epoch"]
        print(f"nothing to train: {result.out_dir} has completed its {last} epoch(s); "
              "resume with --epochs N to train longer")
        return
    images = sum(m["images_per_s"] * m["train_s"] for m in history)
    train_s = sum(m["train_s"] for m in history)
    minutes, seconds = divmod(round(result.seconds), 60)
    last = history[-1]
    print(f"done: {len(history)} epoch(s) in {minutes}m{seconds:02d}s, "
          f"{images / max(train_s, 1e-9):.1f} images/s (training)")
    if last["map"] is not None:
        print(f"last epoch {last['epoch']}: mAP@.5 {last['map50']:.4f}  "
              f"mAP@.5:.95 {last['map']:.4f}")
    if result.skipped:  # the header check's, and any found while loading
        print(skipped_summary(result.skipped))
    if result.best is not None:
        print(f"best epoch {result.best_epoch}: mAP@.5 {result.best[1]:.4f}  "
              f"mAP@.5:.95 {result.best[0]:.4f} -> {result.out_dir / 'best.weights'}")
