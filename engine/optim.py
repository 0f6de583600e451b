"""The optimizer plumbing of the training loop: optimizer, LR schedule, warm-up momentum and
the AMP gradient scaler, as one object with a ``backward``/``step`` pair per iteration.

The schedule is a pure function of the settings (``lr0``, ``lrf``, ``epochs``,
``warmup_epochs``) and the global iteration. That is what lets a resumed run change ``lr0`` or
``epochs`` (``retarget``): from the resumed iteration on, the lr is what a run started with
the new settings would have there; the iterations already done keep what they had.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from engine.trainer import TrainConfig

OPTIMIZERS = ("sgd", "adamw")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv weights only; BatchNorm weights/biases and conv biases get none
    (decaying gammas would fight the sparsity penalty's own, deliberate, L1 pull)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


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


class Optimization:
    """Everything that turns a loss into a parameter update, for one ``model``.

    Per iteration the loop calls ``set_momentum(iteration)``, ``backward(loss)`` (zeroed,
    scaled, unscaled and clipped gradients: what ``after_backward`` hooks see), then
    ``step()`` (optimizer, scaler and schedule advance together).
    """

    def __init__(self, model: nn.Module, config: TrainConfig, iters_per_epoch: int,
                 amp: bool, device_type: str):
        self.model, self.config, self.iters_per_epoch = model, config, iters_per_epoch
        self.optimizer = build_optimizer(model, config)
        self.warmup_iters = round(config.warmup_epochs * iters_per_epoch)
        self.scheduler = self._schedule(config)
        self.scaler = torch.amp.GradScaler(device_type, enabled=amp)

    def _schedule(self, config: TrainConfig, last_iteration: int = -1):
        factor = LRSchedule(config.epochs * self.iters_per_epoch, self.warmup_iters, config.lrf)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor, last_iteration)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_momentum(self, iteration: int) -> None:
        """SGD momentum (AdamW beta1) ramps from ``warmup_momentum`` during the warm-up."""
        cfg = self.config
        if iteration < self.warmup_iters:
            frac = iteration / self.warmup_iters
            momentum = cfg.warmup_momentum + frac * (cfg.momentum - cfg.warmup_momentum)
        else:
            momentum = cfg.momentum
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def retarget(self, config: TrainConfig, iteration: int) -> None:
        """Continue with another ``lr0`` and/or ``epochs`` from ``iteration`` (after a resume):
        the lr becomes ``config.lr0 * LRSchedule(new total)(iteration)``."""
        self.config = config
        for group in self.optimizer.param_groups:
            group["initial_lr"] = config.lr0
        self.scheduler = self._schedule(config, iteration - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
