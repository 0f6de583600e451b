"""Distillation as a training hook: a frozen dense teacher guides the pruned student."""

from __future__ import annotations

from typing import Any

import torch

from common.errors import UserError
from darknet import Darknet
from engine.hooks import Hook

from .distill import distillation_loss


class DistillationHook(Hook):
    """Adds ``weight * distillation_loss(student, teacher) * batch`` to the YOLO loss.

    The batch factor puts it on the same per-batch-total scale as the detection loss. The
    teacher runs in eval mode (running BN statistics, no dropout of its own knowledge) but
    returns raw logits (``raw=True``) so both sides are compared in the same layout.
    """

    name = "distill"

    def __init__(self, teacher: Darknet, weight: float = 1.0):
        if weight < 0:
            raise UserError(f"--distill-weight must be >= 0, got {weight}")
        self.teacher, self.weight = teacher, weight

    def on_train_start(self, trainer) -> None:
        student = trainer.model
        t_heads = [(y.num_classes, y.anchors.tolist()) for y in self.teacher.yolo_layers]
        s_heads = [(y.num_classes, y.anchors.tolist()) for y in student.yolo_layers]
        if t_heads != s_heads:
            raise UserError(f"teacher {self.teacher.cfg.path} and student {student.cfg.path} "
                            "differ in YOLO heads (classes or anchors); distillation needs "
                            "the same heads")
        self.teacher.to(trainer.device).eval().requires_grad_(False)

    def extra_loss(self, trainer, images, targets, outputs) -> torch.Tensor:
        with torch.no_grad():
            teacher_out = self.teacher(images, raw=True)
        return self.weight * images.shape[0] * distillation_loss(outputs, teacher_out)

    def state_dict(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight = state.get("weight", self.weight)
