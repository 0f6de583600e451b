"""The one training loop: train, sparse training and fine-tuning all run ``Trainer.fit``.

What differs between them plugs in through ``engine.hooks.Hook`` (see that module for the
call order and for what a hook may read). The loop itself: the optimizer plumbing of
``engine.optim`` (SGD or AdamW, warm-up and cosine schedule, warm-up momentum, AMP scaler,
gradient clipping), optional EMA of the weights, ``DistributedDataParallel`` under
``torchrun``, the NaN policy, and after every epoch an evaluation and the run's files
(``engine.writer``: rank 0, checkpoint first).

A non-finite loss stops the run with ``NonFiniteLossError`` before anything of that epoch
is written, so the files of the last completed epoch stay as they were. Weights can also
explode while the loss stays finite (a huge --lr): the next step, of a resumed run too, is
NaN. So before an epoch's checkpoint is committed its weights are checked (``_check_weights``)
and a bad epoch stops the run the same way: the checkpoint on disk is always resumable.

``Trainer.fit`` is the loop on a built model and data; ``engine.run.run_training`` is the
whole run from a ``RunSpec`` (cfg, data, settings, output folder, resume).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from common.artefacts import CHECKPOINT
from common.errors import UserError
from darknet import Darknet
from engine.checkpoint import rng_state, seed_everything, set_rng_state
from engine.data import DetectionData, EpochLoader
from engine.distributed import DistInfo, all_true, barrier, broadcast_object, distribute
from engine.ema import ModelEMA
from engine.evaluator import evaluate_batches
from engine.hooks import Hook
from engine.loss import LOSS_NAMES, LossConfig, YoloLoss
from engine.optim import OPTIMIZERS, Optimization
from engine.writer import RunWriter

# What a resumed run may change (``engine.optim.Optimization.retarget``); all else must match.
RESUMABLE = ("lr0", "epochs")


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the run stopped without writing that epoch."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the training trajectory (stored in the checkpoint).

    batch_size is the total over all processes. lr follows a linear warm-up over
    ``warmup_epochs`` and then a cosine from ``lr0`` to ``lr0 * lrf``, per iteration.
    A resumed run may change ``RESUMABLE`` fields only (see ``engine.optim``).
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


def check_resumable(saved: TrainConfig, config: TrainConfig, done: int) -> list[str]:
    """The fields ``config`` changes against a checkpoint's ``saved`` one after ``done``
    epochs; a ``UserError`` for any outside ``RESUMABLE``, or fewer epochs than done."""
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if getattr(saved, f.name) != getattr(config, f.name)]
    refused = [name for name in changed if name not in RESUMABLE]
    if refused:
        raise UserError("the checkpoint was written with other training settings ("
                        + ", ".join(f"{n}: {getattr(saved, n)!r} there, "
                                    f"{getattr(config, n)!r} now" for n in refused)
                        + f"); only {' and '.join(RESUMABLE)} may change on resume")
    if config.epochs < done:
        raise UserError(f"epochs {config.epochs} is fewer than the {done} the checkpoint has "
                        "completed")
    return changed


class Trainer:
    """Trains ``model`` on ``data``; ``fit()`` runs the epochs and writes ``out_dir``.

    ``meta`` is stored in the checkpoint verbatim (``engine.run`` keeps the run's cfg, data
    and command there so a resume can rebuild the same model and data).
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
        self.net: nn.Module = distribute(self.model, self.dist)
        self.loss_fn = YoloLoss(self.model.yolo_layers, config.loss).to(self.device)
        self.train_loader, self.val_loader = self._loaders(workers)
        self.optim = Optimization(self.model, config, len(self.train_loader), self.amp,
                                  self.device.type)
        self.writer = RunWriter(self.out_dir, self.hooks)

        self.epoch = 0  # epochs completed
        self.iteration = 0
        self.best: tuple[float, float] | None = None  # (map, map50) of best.weights
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.stopped: str | None = None  # why a hook ended the run early

    def _loaders(self, workers: int) -> tuple[EpochLoader, EpochLoader]:
        cfg, data, dist = self.config, self.data, self.dist
        local_batch = cfg.batch_size // dist.world_size
        pin = self.device.type == "cuda"
        train = EpochLoader(data.train, local_batch, shuffle=True, workers=workers,
                            seed=cfg.seed, rank=dist.rank, world_size=dist.world_size,
                            drop_last=True, pin_memory=pin)
        if len(train) == 0:
            raise UserError(f"the training set has {len(data.train)} images, fewer than one "
                            f"batch of {local_batch} per process")
        val = EpochLoader(data.val, local_batch * 2, shuffle=False, workers=workers,
                          pin_memory=pin)
        return train, val

    # ------------------------------------------------------------------ what hooks see

    def log(self, text: str) -> None:
        """Print a line on rank 0 without breaking the progress bar."""
        if self.dist.is_main:
            tqdm.write(text, file=sys.stdout)

    @property
    def eval_model(self) -> Darknet:
        """What gets evaluated and saved: the EMA copy when EMA is on."""
        return self.ema.module if self.ema else self.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optim.optimizer

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def evaluate(self, model: Darknet) -> tuple[float, float]:
        """(mAP@.5, mAP@.5:.95) of ``model`` on the run's val split, as the epochs measure."""
        cfg = self.config
        res = evaluate_batches(model, self.val_loader, self.data.names, self.device,
                               cfg.conf_thres, cfg.iou_thres, amp=self.amp)
        return res.map50, res.map

    def request_stop(self, reason: str) -> None:
        """End the run after the current epoch (its files are written as usual)."""
        self.stopped = reason

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return self.optim.scheduler

    # ------------------------------------------------------------------ the run

    def fit(self, checkpoint: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Train the remaining epochs (all, or those after ``checkpoint``); returns history.

        From a checkpoint, its epoch's files are written again first (engine.writer)."""
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            if self.dist.is_main:
                self.writer.write_epoch(self.state_dict(), self.eval_model, checkpoint=False)
        for hook in self.hooks:
            hook.on_train_start(self)
        while self.epoch < self.config.epochs and not self.stopped:
            self._run_epoch(self.epoch)
            if self.stopped:
                self.log(f"stopped after epoch {self.epoch}: {self.stopped}")
        for hook in self.hooks:
            hook.on_train_end(self)
        return self.history

    def _run_epoch(self, epoch: int) -> None:
        seed_everything(self.config.seed + 1000 * epoch + self.dist.rank)
        self.train_loader.set_epoch(epoch)
        for hook in self.hooks:
            hook.on_epoch_start(self, epoch)
        metrics = self._train_epoch(epoch)
        self._check_weights(epoch)
        metrics.update(self._maybe_evaluate(epoch))
        for hook in self.hooks:
            hook.on_epoch_end(self, metrics)
        self.epoch = epoch + 1
        self.history.append(metrics)
        self._update_best(metrics)
        if self.dist.is_main:
            self.writer.write_epoch(self.state_dict(), self.eval_model)
        barrier()
        self.log(self._summary(metrics))

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            **self.optim.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "stopped": self.stopped,
            "hooks": {h.name: h.state_dict() for h in self.hooks},
            "config": self.config.as_dict(),
            "rng": rng_state(),
            "meta": self.meta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state``; ``self.config`` may differ from its config in ``RESUMABLE``
        fields only (the schedule is then retargeted from the restored iteration on)."""
        changed = check_resumable(TrainConfig.from_dict(state["config"]), self.config,
                                  state["epoch"])
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state)
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.best = tuple(state["best"]) if state["best"] is not None else None
        self.best_epoch = state["best_epoch"]
        self.history = list(state["history"])
        self.stopped = state.get("stopped")
        for hook in self.hooks:
            hook.load_state_dict(state["hooks"].get(hook.name, {}))
        set_rng_state(state["rng"])
        if changed:
            self.optim.retarget(self.config, self.iteration)
            cfg = self.config
            self.log(f"resumed with {', '.join(changed)} changed: lr {self.optim.lr:.5g} at "
                     f"iteration {self.iteration}, cosine to {cfg.lr0 * cfg.lrf:.5g} at epoch "
                     f"{cfg.epochs}")

    # ------------------------------------------------------------------ one epoch

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        self.net.train()
        sums = torch.zeros(len(LOSS_NAMES) + 1 + len(self.hooks), dtype=torch.float64)
        seen, start = 0, time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.config.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True, mininterval=1.0,
                   file=sys.stderr)
        for step, batch in enumerate(bar):
            images = batch.images.to(self.device, non_blocking=True)
            targets = batch.targets.to(self.device, non_blocking=True)
            if step == 0:
                self._probe = (images, targets)  # for _check_weights
            row = self._train_step(epoch, step, images, targets)
            sums += row
            seen += len(images) * self.dist.world_size
            if self.progress:
                bar.set_postfix_str(self._progress(sums / (step + 1), seen, start),
                                    refresh=False)
        bar.close()
        elapsed = time.perf_counter() - start
        mean = (sums / max(len(self.train_loader), 1)).tolist()
        metrics: dict[str, Any] = {"epoch": epoch + 1, "loss": mean[0]}
        metrics.update({f"loss_{n}": v for n, v in zip(LOSS_NAMES, mean[1:4], strict=True)})
        metrics.update({f"loss_{h.name}": v for h, v in zip(self.hooks, mean[4:], strict=True)
                        if type(h).extra_loss is not Hook.extra_loss})
        metrics.update({"lr": self.optim.lr, "images_per_s": seen / elapsed,
                        "train_s": elapsed})
        return metrics

    def _train_step(self, epoch: int, step: int, images: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
        """One optimizer step; returns the loss row (total, parts, hook extras), float64."""
        self.optim.set_momentum(self.iteration)
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
        # DDP averages gradients over processes; the loss is a per-image sum.
        self.optim.backward(loss * self.dist.world_size)
        for hook in self.hooks:
            hook.after_backward(self)
        self.optim.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        for hook in self.hooks:
            hook.after_step(self)
        return row

    @staticmethod
    def _progress(mean: torch.Tensor, seen: int, start: float) -> str:
        rate = seen / (time.perf_counter() - start)
        return " ".join([f"loss {mean[0]:.3f}"]
                        + [f"{n} {v:.3f}" for n, v in zip(LOSS_NAMES, mean[1:4].tolist(),
                                                          strict=True)]
                        + [f"{rate:.1f} img/s"])

    def _non_finite(self, epoch: int, step: int, row: torch.Tensor) -> NonFiniteLossError:
        parts = ", ".join(f"{n} {v:.4g}" for n, v in zip(LOSS_NAMES, row[1:4].tolist(),
                                                           strict=True))
        return NonFiniteLossError(
            f"loss became {row[0].item()} at epoch {epoch + 1}, iteration {step + 1} "
            f"({parts}); {self._kept()}")

    def _kept(self) -> str:
        """What a stop before this epoch's files leaves, and what to do (only true because
        every committed checkpoint passed ``_check_weights``)."""
        if self.epoch:
            return (f"{self.out_dir / CHECKPOINT} (epoch {self.epoch}) is intact; resume with "
                    "a lower --lr")
        return "no epoch had completed, nothing was written; try a lower --lr"

    @torch.no_grad()
    def _check_weights(self, epoch: int) -> None:
        """Refuse to commit epoch ``epoch``'s weights unless every weight (and the EMA copy)
        is finite and the loss of the epoch's first batch, recomputed as the next step would
        (train mode), is finite too; BatchNorm statistics are restored after that forward."""
        models = [self.model, *([self.ema.module] if self.ema else [])]
        finite = all(bool(torch.isfinite(t).all()) for m in models
                     for t in (*m.parameters(), *m.buffers()) if t.is_floating_point())
        loss = float("nan")
        if finite:
            saved = {k: v.clone() for k, v in self.model.named_buffers()}
            images, targets = self._probe
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                loss = self.loss_fn(self.model(images), targets)[0].item()
            for k, v in self.model.named_buffers():
                v.copy_(saved[k])
        if all_true(finite and math.isfinite(loss), self.device):
            return
        what = (f"give a loss of {loss} on its first batch" if finite
                else "are not finite")
        raise NonFiniteLossError(f"the weights after epoch {epoch + 1} {what} (diverged "
                                 f"during it; not saved); {self._kept()}")

    # ------------------------------------------------------------------ evaluation

    def _maybe_evaluate(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        due = (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs
        result: dict[str, Any] = {"map50": None, "map": None, "eval_s": None}
        if due and self.dist.is_main:
            start = time.perf_counter()
            res = evaluate_batches(self.eval_model, self.val_loader, self.data.names,
                                   self.device, cfg.conf_thres, cfg.iou_thres, amp=self.amp)
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

    def _summary(self, m: dict[str, Any]) -> str:
        text = (f"epoch {m['epoch']}/{self.config.epochs}  loss {m['loss']:.4f} "
                f"(box {m['loss_box']:.4f} obj {m['loss_obj']:.4f} cls {m['loss_cls']:.4f})  "
                f"lr {m['lr']:.5f}  {m['images_per_s']:.1f} img/s")
        if m["map"] is not None:
            text += f"  mAP@.5 {m['map50']:.4f}  mAP@.5:.95 {m['map']:.4f}"
            text += "  *best*" if m["best"] else ""
        return text
