"""The one training loop: train, sparse training and fine-tuning all run ``Trainer.fit``.

What differs between them plugs in through ``engine.hooks.Hook`` (see that module for the
call order). The loop itself: SGD (momentum, Nesterov) or AdamW, weight decay on conv
weights only, a linear warm-up and cosine decay stepped every iteration, optional EMA of the
weights, AMP on CUDA, gradient clipping, ``DistributedDataParallel`` under ``torchrun``, and
after every epoch an evaluation and these files in ``out_dir`` (rank 0 only, each written
atomically, the checkpoint last):

* ``last.weights`` -- Darknet weights after the epoch (the EMA copy when EMA is on);
* ``best.weights`` -- the epoch with the best mAP@.5:.95 so far (ties: mAP@.5), COCO's
  primary metric, which also rewards tight boxes -- what pruning must preserve;
* ``results.json`` / ``results.csv`` -- one row per epoch: loss and its components, lr,
  images/s, mAP@.5, mAP@.5:.95 (empty on epochs skipped by ``eval_interval``);
* ``results.png`` -- those curves (``charts.results``; a drawing failure is one warning line);
* ``last.pt`` -- the resumable checkpoint (``engine.checkpoint``).

A non-finite loss stops the run with ``NonFiniteLossError`` before anything of that epoch
is written, so the files of the last completed epoch stay as they were.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import charts
from common.errors import UserError
from common.io import atomic_write_text
from darknet import Darknet, WeightsHeader
from engine.checkpoint import rng_state, save_checkpoint, seed_everything, set_rng_state
from engine.data import DetectionData, EpochLoader
from engine.distributed import DistInfo, all_true, barrier, broadcast_object
from engine.ema import ModelEMA
from engine.evaluator import evaluate
from engine.hooks import Hook
from engine.loss import LOSS_NAMES, LossConfig, YoloLoss

RESULT_COLUMNS = ("epoch", "loss", *(f"loss_{n}" for n in LOSS_NAMES), "lr", "images_per_s",
                  "map50", "map", "train_s", "eval_s")


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the run stopped without writing that epoch."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the training trajectory (stored in the checkpoint).

    batch_size is the total over all processes. lr follows a linear warm-up over
    ``warmup_epochs`` and then a cosine from ``lr0`` to ``lr0 * lrf``, per iteration.
    """

    epochs: int = 30
    batch_size: int = 16
    img_size: int = 128
    optimizer: str = "sgd"
    lr0: float = 0.01
    lrf: float = 0.05
    momentum: float = 0.937
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    warmup_momentum: float = 0.8
    grad_clip: float = 10.0
    ema: bool = True
    ema_decay: float = 0.995
    ema_tau: float = 200.0
    amp: bool = True
    eval_interval: int = 1
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    seed: int = 0
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "img_size", "eval_interval"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.img_size % 32:
            raise UserError(f"img_size must be a multiple of 32, got {self.img_size}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                            f"got {self.optimizer!r}")
        if self.lr0 <= 0 or not 0 < self.lrf <= 1:
            raise UserError(f"need lr0 > 0 and 0 < lrf <= 1, got {self.lr0}, {self.lrf}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["loss"] = LossConfig(**d.get("loss", {}))
        return cls(**d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv weights only; BatchNorm weights/biases and conv biases get none
    (decaying gammas would fight the sparsity penalty's own, deliberate, L1 pull)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum, or AdamW with ``momentum`` as beta1.

    AdamW reaches a given mAP in far fewer steps on short schedules (a few thousand
    iterations, like the demo's); SGD is the classic choice for long runs, and the one
    network slimming's L1 subgradient assumes (``main.py sparse`` uses it).
    """
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr0, betas=(config.momentum, 0.999))
    return torch.optim.SGD(groups, lr=config.lr0, momentum=config.momentum,
                           nesterov=config.nesterov)


class LRSchedule:
    """Per-iteration factor on ``lr0``: linear warm-up, then cosine to ``lrf``."""

    def __init__(self, total: int, warmup: int, lrf: float):
        self.total, self.warmup, self.lrf = max(total, 1), warmup, lrf

    def __call__(self, it: int) -> float:
        cos = self.lrf + (1 - self.lrf) * 0.5 * (1 + math.cos(math.pi * min(it, self.total)
                                                             / self.total))
        if it < self.warmup:
            return cos * (it + 1) / self.warmup
        return cos


class Trainer:
    """Trains ``model`` on ``data``; ``fit()`` runs the epochs and writes ``out_dir``.

    ``meta`` is stored in the checkpoint verbatim (the CLI keeps its arguments there so
    ``--resume`` can rebuild the same model and data).
    """

    def __init__(
        self,
        model: Darknet,
        data: DetectionData,
        config: TrainConfig,
        out_dir: str | Path,
        hooks: Sequence[Hook] = (),
        dist: DistInfo | None = None,
        workers: int = 0,
        progress: bool = True,
        meta: dict[str, Any] | None = None,
    ):
        self.config, self.data = config, data
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.out_dir = Path(out_dir)
        self.hooks = list(hooks)
        names = [h.name for h in self.hooks]
        if len(set(names)) != len(names):
            raise ValueError(f"hook names must be unique, got {names}")
        self.meta = dict(meta or {})
        self.progress = progress and self.dist.is_main
        if config.batch_size % self.dist.world_size:
            raise UserError(f"--batch-size {config.batch_size} does not split evenly over "
                            f"{self.dist.world_size} processes")
        self.amp = config.amp and self.device.type == "cuda"

        self.model = model.to(self.device)
        self.model.train()
        self.ema = (ModelEMA(self.model, config.ema_decay, config.ema_tau) if config.ema
                    else None)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            if self.device.type == "cuda":  # torch's SyncBatchNorm has no CPU kernel
                nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        self.loss_fn = YoloLoss(self.model.yolo_layers, config.loss).to(self.device)

        local_batch = config.batch_size // self.dist.world_size
        self.train_loader = EpochLoader(
            data.train, local_batch, shuffle=True, workers=workers, seed=config.seed,
            rank=self.dist.rank, world_size=self.dist.world_size, drop_last=True,
            pin_memory=self.device.type == "cuda")
        if len(self.train_loader) == 0:
            raise UserError(f"the training set has {len(data.train)} images, fewer than one "
                            f"batch of {local_batch} per process")
        self.val_loader = EpochLoader(data.val, local_batch * 2, shuffle=False, workers=workers,
                                      pin_memory=self.device.type == "cuda")

        self.optimizer = build_optimizer(self.model, config)
        per_epoch = len(self.train_loader)
        self.warmup_iters = round(config.warmup_epochs * per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LRSchedule(config.epochs * per_epoch, self.warmup_iters, config.lrf))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

        self.epoch = 0  # epochs completed
        self.iteration = 0
        self.best: tuple[float, float] | None = None  # (map, map50) of best.weights
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ public API

    def log(self, text: str) -> None:
        """Print a line on rank 0 without breaking the progress bar."""
        if self.dist.is_main:
            tqdm.write(text, file=sys.stdout)

    @property
    def eval_model(self) -> nn.Module:
        """What gets evaluated and saved: the EMA copy when EMA is on."""
        return self.ema.module if self.ema else self.model

    def fit(self, checkpoint: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Train the remaining epochs (all, or those after ``checkpoint``); returns history."""
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
        for hook in self.hooks:
            hook.on_train_start(self)
        while self.epoch < self.config.epochs:
            epoch = self.epoch
            seed_everything(self.config.seed + 1000 * epoch + self.dist.rank)
            self.train_loader.set_epoch(epoch)
            for hook in self.hooks:
                hook.on_epoch_start(self, epoch)
            metrics = self._train_epoch(epoch)
            metrics.update(self._maybe_evaluate(epoch))
            for hook in self.hooks:
                hook.on_epoch_end(self, metrics)
            self.epoch = epoch + 1
            self.history.append(metrics)
            self._update_best(metrics)
            if self.dist.is_main:
                self._write_epoch(metrics)
            barrier()
            self.log(self._summary(metrics))
        for hook in self.hooks:
            hook.on_train_end(self)
        return self.history

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "hooks": {h.name: h.state_dict() for h in self.hooks},
            "config": self.config.as_dict(),
            "rng": rng_state(),
            "meta": self.meta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if TrainConfig.from_dict(state["config"]) != self.config:
            raise UserError("the checkpoint was written with other training settings")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.best = tuple(state["best"]) if state["best"] is not None else None
        self.best_epoch = state["best_epoch"]
        self.history = list(state["history"])
        for hook in self.hooks:
            hook.load_state_dict(state["hooks"].get(hook.name, {}))
        set_rng_state(state["rng"])

    # ------------------------------------------------------------------ one epoch

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        self.net.train()
        sums = torch.zeros(len(LOSS_NAMES) + 1 + len(self.hooks), dtype=torch.float64)
        seen, start = 0, time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True, mininterval=1.0,
                   file=sys.stderr)
        for step, batch in enumerate(bar):
            images = batch.images.to(self.device, non_blocking=True)
            targets = batch.targets.to(self.device, non_blocking=True)
            self._warmup_momentum()
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                outputs = self.net(images)
                loss, parts = self.loss_fn(outputs, targets)
                extras = [h.extra_loss(self, images, targets, outputs) for h in self.hooks]
            extras_t = [e if e is not None else loss.new_zeros(()) for e in extras]
            for e in extras_t:
                loss = loss + e
            row = torch.cat((loss.detach().reshape(1), parts,
                             torch.stack([e.detach().float() for e in extras_t]) if extras_t
                             else parts.new_zeros(0))).double().cpu()
            if not all_true(bool(torch.isfinite(row).all()), self.device):
                raise self._non_finite(epoch, step, row)
            self.optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over processes; the loss is a per-image sum.
            self.scaler.scale(loss * self.dist.world_size).backward()
            self.scaler.unscale_(self.optimizer)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            for hook in self.hooks:
                hook.after_backward(self)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.iteration += 1
            for hook in self.hooks:
                hook.after_step(self)
            sums += row
            seen += len(images) * self.dist.world_size
            if self.progress:
                mean = sums / (step + 1)
                rate = seen / (time.perf_counter() - start)
                bar.set_postfix_str(" ".join(
                    [f"loss {mean[0]:.3f}"]
                    + [f"{n} {v:.3f}" for n, v in zip(LOSS_NAMES, mean[1:4].tolist(),
                                                      strict=True)]
                    + [f"{rate:.1f} img/s"]), refresh=False)
        bar.close()
        elapsed = time.perf_counter() - start
        mean = (sums / max(len(self.train_loader), 1)).tolist()
        metrics: dict[str, Any] = {"epoch": epoch + 1, "loss": mean[0]}
        metrics.update({f"loss_{n}": v for n, v in zip(LOSS_NAMES, mean[1:4], strict=True)})
        metrics.update({f"loss_{h.name}": v for h, v in zip(self.hooks, mean[4:], strict=True)
                        if type(h).extra_loss is not Hook.extra_loss})
        metrics.update({"lr": self.optimizer.param_groups[0]["lr"],
                        "images_per_s": seen / elapsed, "train_s": elapsed})
        return metrics

    def _warmup_momentum(self) -> None:
        cfg = self.config
        if self.iteration < self.warmup_iters:
            frac = self.iteration / self.warmup_iters
            momentum = cfg.warmup_momentum + frac * (cfg.momentum - cfg.warmup_momentum)
        else:
            momentum = cfg.momentum
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum

    def _non_finite(self, epoch: int, step: int, row: torch.Tensor) -> NonFiniteLossError:
        parts = ", ".join(f"{n} {v:.4g}" for n, v in zip(LOSS_NAMES, row[1:4].tolist(),
                                                           strict=True))
        if self.epoch:
            kept = (f"{self.out_dir / 'last.pt'} (epoch {self.epoch}) is intact; "
                    "resume with a lower --lr")
        else:
            kept = "no epoch had completed, nothing was written; try a lower --lr"
        return NonFiniteLossError(
            f"loss became {row[0].item()} at epoch {epoch + 1}, iteration {step + 1} "
            f"({parts}); {kept}")

    # ------------------------------------------------------------------ evaluation, files

    def _maybe_evaluate(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        due = (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs
        result: dict[str, Any] = {"map50": None, "map": None, "eval_s": None}
        if due and self.dist.is_main:
            start = time.perf_counter()
            res = evaluate(self.eval_model, self.val_loader, self.data.names, self.device,
                           cfg.conf_thres, cfg.iou_thres, amp=self.amp)
            result = {"map50": res.map50, "map": res.map,
                      "eval_s": time.perf_counter() - start}
        return broadcast_object(result)

    def _update_best(self, metrics: dict[str, Any]) -> None:
        if metrics["map"] is None:
            metrics["best"] = False
            return
        score = (metrics["map"], metrics["map50"])
        metrics["best"] = self.best is None or score > self.best
        if metrics["best"]:
            self.best, self.best_epoch = score, metrics["epoch"]

    def _write_epoch(self, metrics: dict[str, Any]) -> None:
        out = self.out_dir
        model = self.eval_model
        header = WeightsHeader(seen=self.iteration * self.config.batch_size)
        model.save_weights(out / "last.weights", header)
        if metrics["best"]:
            model.save_weights(out / "best.weights", header)
        self._write_results()
        save_checkpoint(out / "last.pt", self.state_dict())

    def _write_results(self) -> None:
        summary = {"best_epoch": self.best_epoch,
                   "best_map": self.best[0] if self.best else None,
                   "best_map50": self.best[1] if self.best else None,
                   "epochs": self.history}
        atomic_write_text(self.out_dir / "results.json", json.dumps(summary, indent=2) + "\n")
        columns = list(RESULT_COLUMNS)
        columns += [k for row in self.history for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, extrasaction="ignore")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        atomic_write_text(self.out_dir / "results.csv", buf.getvalue())
        charts.write_chart(self.out_dir / "results.png", "results", self.history)

    def _summary(self, m: dict[str, Any]) -> str:
        text = (f"epoch {m['epoch']}/{self.config.epochs}  loss {m['loss']:.4f} "
                f"(box {m['loss_box']:.4f} obj {m['loss_obj']:.4f} cls {m['loss_cls']:.4f})  "
                f"lr {m['lr']:.5f}  {m['images_per_s']:.1f} img/s")
        if m["map"] is not None:
            text += f"  mAP@.5 {m['map50']:.4f}  mAP@.5:.95 {m['map']:.4f}"
            text += "  *best*" if m["best"] else ""
        return text
