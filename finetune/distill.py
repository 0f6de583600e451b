"""Output-level knowledge distillation from the dense detector to its pruned copy.

Objectness-scaled distillation (Mehta & Ozturk, 2018): the student matches the teacher's
objectness everywhere, and its boxes and class scores only where the teacher sees an object,
so the teacher's background noise is not imitated. Every term is a squared difference, so
the loss is exactly zero when student and teacher agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from common.errors import UserError


def distillation_loss(student: Sequence[torch.Tensor],
                      teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over cells and heads; both are raw head outputs ``[B, A, H, W, 5 + C]``."""
    if len(student) != len(teacher):
        raise UserError(f"teacher has {len(teacher)} YOLO heads, student has {len(student)}")
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        if s.shape != t.shape:
            raise UserError(f"teacher head output {tuple(t.shape)} does not match the "
                            f"student's {tuple(s.shape)} (different classes or anchors?)")
        t = t.detach().float()
        s = s.float()
        t_obj = t[..., 4].sigmoid()
        obj = (s[..., 4].sigmoid() - t_obj).square()
        xy = (s[..., :2].sigmoid() - t[..., :2].sigmoid()).square().sum(-1)
        wh = (s[..., 2:4] - t[..., 2:4]).square().sum(-1)
        cls = (s[..., 5:].sigmoid() - t[..., 5:].sigmoid()).square().sum(-1)
        total = total + (obj + t_obj * (xy + wh + cls)).mean()
    return total / len(student)
