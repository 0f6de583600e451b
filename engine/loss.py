"""The YOLOv3 loss: target assignment over every head's anchors, GIoU box loss, objectness and
class BCE, and Darknet's ignore threshold.

Assignment (``assign_targets``), for every ground-truth box:

* its shape is compared with *every* anchor of *every* head by "wh-IoU" (the IoU of the two
  boxes placed on a common centre); the best anchor always gets the box, as in YOLOv3, and
  any other anchor whose wh-IoU exceeds ``LossConfig.anchor_t`` gets it too -- more positives
  per box, which is what lets a small model converge in a few epochs on CPU;
* on the chosen anchor's head the box lands in the grid cell holding its centre (the decode
  ``sigmoid(t) + cell`` cannot reach any other cell; with ``scale_x_y = s`` it reaches
  ``(s - 1) / 2`` of a cell beyond each edge).

Losses, per head (``p`` the raw logits ``[B, A, H, W, 5 + C]``):

* box: ``1 - GIoU(decoded prediction, target)`` over the assigned predictions (mean); boxes
  are decoded by the head's own ``common.boxes.YoloDecode`` (the one inference uses), with
  ``exp`` capped at ``MAX_LOG_WH`` so that a wild logit cannot blow up the gradient;
* class: BCE of the class logits against one-hot targets over the assigned predictions (mean);
* objectness: BCE over every prediction, with target ``1 - r + r * IoU`` at assigned ones
  (``r = obj_iou``; an IoU-aware score ranks boxes better for mAP@.5:.95) and 0 elsewhere,
  except that an unassigned prediction whose decoded box overlaps some ground truth of its
  image by more than the head's ``ignore_thresh`` gets no objectness loss at all (it is a
  good box, just not the responsible one). Heads are weighted by stride (``OBJ_BALANCE``),
  because a fine head's mean runs over 4x the cells of the next coarser one.

The total is ``(box * l_box + obj * l_obj + cls * l_cls) * batch_size``; the batch factor
keeps the gradient of one image the same whatever the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.boxes import box_giou, pairwise_iou, wh_iou
from common.errors import UserError
from darknet.layers import ConvLayer, YoloLayer

LOSS_NAMES = ("box", "obj", "cls")

# Training caps tw, th at log(1000) before exp: a box at most 1000x its anchor.
MAX_LOG_WH = math.log(1e3)

# Objectness weight per head stride (YOLOv5's balance); other strides weigh 1.
OBJ_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4}


@dataclass(frozen=True)
class LossConfig:
    """Loss gains and assignment settings.

    box, obj, cls: gains of the three components.
    anchor_t: besides the best anchor, every anchor whose wh-IoU with a box exceeds this is
        assigned the box too (1.0 or more: best anchor only, classic YOLOv3).
    obj_iou: objectness target at an assigned prediction is ``1 - obj_iou + obj_iou * IoU``.
    ignore_thresh: overrides every head's cfg ``ignore_thresh`` when set.
    label_smoothing: class targets become ``1 - eps / 2`` and ``eps / 2``.
    """

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.1
    anchor_t: float = 0.2
    obj_iou: float = 0.0
    ignore_thresh: float | None = None
    label_smoothing: float = 0.0


class Assignment(NamedTuple):
    """The predictions responsible for ground-truth boxes on one head.

    b, a, gj, gi: ``[P]`` indices into the head's ``[B, A, H, W]`` predictions.
    box: ``[P, 4]`` target ``cx, cy, w, h`` in this head's grid units.
    cls: ``[P]`` class ids.
    target: ``[P]`` row of the ground truth in the batch's targets tensor.
    """

    b: Tensor
    a: Tensor
    gj: Tensor
    gi: Tensor
    box: Tensor
    cls: Tensor
    target: Tensor


class YoloLoss(nn.Module):
    """YOLOv3 loss over a model's ``[yolo]`` heads (see the module docstring).

    ``forward(outputs, targets)`` takes the train-mode outputs (one ``[B, A, H, W, 5 + C]``
    tensor per head, cfg order) and the batch targets ``[M, 6]`` rows
    ``(batch_index, class, cx, cy, w, h)`` normalised to the input image, and returns
    ``(total, parts)`` with ``parts`` the detached ``[3]`` tensor of ``LOSS_NAMES``.
    """

    def __init__(self, heads: Sequence[YoloLayer], config: LossConfig | None = None):
        super().__init__()
        if not heads:
            raise ValueError("the model has no [yolo] head")
        _refuse_untrainable(heads)
        self.config = config or LossConfig()
        self.num_classes = heads[0].num_classes
        self.strides = [float(h.stride) for h in heads]
        self.coders = [h.coder for h in heads]
        self.ignore = [
            h.ignore_thresh if self.config.ignore_thresh is None else self.config.ignore_thresh
            for h in heads
        ]
        self.balance = [OBJ_BALANCE.get(round(s), 1.0) for s in self.strides]
        # Every assignable anchor, with the head it belongs to and its index there.
        self.register_buffer("anchors", torch.cat([h.anchors.float() for h in heads]), False)
        self.register_buffer("anchor_head", torch.cat(
            [torch.full((h.num_anchors,), k) for k, h in enumerate(heads)]), False)
        self.register_buffer("anchor_index", torch.cat(
            [torch.arange(h.num_anchors) for h in heads]), False)

    def assign_targets(self, outputs: Sequence[Tensor], targets: Tensor) -> list[Assignment]:
        """Which prediction of which head is responsible for which ground truth."""
        _, _, h0, w0, _ = outputs[0].shape
        img_w, img_h = w0 * self.strides[0], h0 * self.strides[0]
        targets = targets.to(self.anchors)
        gwh = targets[:, 4:6] * targets.new_tensor([img_w, img_h])
        ious = wh_iou(gwh, self.anchors)  # [M, K]
        match = ious > self.config.anchor_t
        if len(targets):
            match[torch.arange(len(targets)), ious.argmax(1)] = True
        t_idx, k_idx = match.nonzero(as_tuple=True)
        result = []
        for head, (out, stride) in enumerate(zip(outputs, self.strides, strict=True)):
            _, _, h, w, _ = out.shape
            on = self.anchor_head[k_idx] == head
            t, k = t_idx[on], k_idx[on]
            rows = targets[t]
            box = torch.cat((rows[:, 2:4] * rows.new_tensor([img_w, img_h]) / stride,
                             gwh[t] / stride), 1)
            gi = box[:, 0].long().clamp(0, w - 1)
            gj = box[:, 1].long().clamp(0, h - 1)
            result.append(Assignment(rows[:, 0].long(), self.anchor_index[k], gj, gi, box,
                                     rows[:, 1].long(), t))
        return result

    def forward(self, outputs: Sequence[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.config
        device = outputs[0].device
        zero = torch.zeros((), device=device)
        l_box, l_obj, l_cls = zero, zero, zero
        gt_boxes, gt_valid = self._gt_per_image(targets, outputs)
        for head, (out, asg) in enumerate(zip(outputs, self.assign_targets(outputs, targets),
                                              strict=True)):
            p = out.float()
            b, a, h, w, _ = p.shape
            anchors = self.anchors[self.anchor_head == head]  # pixels
            tobj = torch.zeros(p.shape[:4], device=device)
            weight = self._obj_weight(p, anchors, head, gt_boxes, gt_valid)
            if len(asg.b):
                ps = p[asg.b, asg.a, asg.gj, asg.gi]
                iou, giou = box_giou(self._assigned_boxes(ps, asg, anchors, head), asg.box)
                l_box = l_box + (1 - giou).mean()
                score = iou.detach().clamp(0).to(tobj.dtype)
                tobj[asg.b, asg.a, asg.gj, asg.gi] = 1 - cfg.obj_iou + cfg.obj_iou * score
                weight[asg.b, asg.a, asg.gj, asg.gi] = 1.0
                if self.num_classes > 1:
                    eps = cfg.label_smoothing
                    tcls = torch.full_like(ps[:, 5:], eps / 2)
                    tcls[torch.arange(len(asg.cls)), asg.cls] = 1 - eps / 2
                    l_cls = l_cls + F.binary_cross_entropy_with_logits(ps[:, 5:], tcls)
            obj = F.binary_cross_entropy_with_logits(p[..., 4], tobj, weight, reduction="sum")
            l_obj = l_obj + self.balance[head] * obj / tobj.numel()
        parts = torch.stack((cfg.box * l_box, cfg.obj * l_obj, cfg.cls * l_cls))
        batch = outputs[0].shape[0]
        return parts.sum() * batch, parts.detach()

    def _gt_per_image(self, targets: Tensor, outputs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Ground truth as padded ``[B, Mmax, 4]`` boxes in input pixels, and its mask."""
        batch, _, h0, w0, _ = outputs[0].shape
        size = targets.new_tensor([w0, h0, w0, h0]) * self.strides[0]
        b = targets[:, 0].long()
        counts = torch.bincount(b, minlength=batch)
        m = int(counts.max()) if len(targets) else 0
        # Position of each target among its image's targets (targets arrive grouped by image).
        order = torch.argsort(b, stable=True)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(b)
        slot[order] = torch.arange(len(b), device=b.device) - start[b[order]]
        boxes = targets.new_zeros(batch, m, 4)
        valid = torch.zeros(batch, m, dtype=torch.bool, device=targets.device)
        boxes[b, slot] = targets[:, 2:6] * size
        valid[b, slot] = True
        return boxes.to(outputs[0].device).float(), valid.to(outputs[0].device)

    def _assigned_boxes(self, ps: Tensor, asg: Assignment, anchors: Tensor,
                        head: int) -> Tensor:
        """``[P, 4]`` decoded cxcywh of the assigned predictions ``ps``, in grid units."""
        cell = torch.stack((asg.gi, asg.gj), 1).to(ps)
        coder, grid_anchors = self.coders[head], anchors[asg.a] / self.strides[head]
        return torch.cat((coder.centre(ps[:, :2], cell),
                          coder.size(ps[:, 2:4], grid_anchors, MAX_LOG_WH)), 1)

    def _obj_weight(self, p: Tensor, anchors: Tensor, head: int, gt_boxes: Tensor,
                    gt_valid: Tensor) -> Tensor:
        """1 where objectness is trained, 0 where a prediction overlaps some ground truth
        by more than the ignore threshold (the assigned ones are set back to 1 later)."""
        b, a, h, w, _ = p.shape
        weight = torch.ones(p.shape[:4], device=p.device)
        if gt_boxes.shape[1] == 0 or self.ignore[head] >= 1:
            return weight
        with torch.no_grad():
            pred = self.coders[head].pixel_boxes(p, anchors.view(1, a, 1, 1, 2),
                                                 self.strides[head], MAX_LOG_WH).view(b, -1, 4)
            iou = pairwise_iou(pred, gt_boxes).masked_fill(~gt_valid[:, None], 0)
            weight[(iou.amax(2) > self.ignore[head]).view(b, a, h, w)] = 0.0
        return weight


def _refuse_untrainable(heads: Sequence[YoloLayer]) -> None:
    """This loss trains logits; a ``new_coords=1`` head reads probabilities instead."""
    for h in heads:
        if h.coder.new_coords:
            raise UserError(
                f"[yolo] layer {h.layer_index} has new_coords=1 (scaled-YOLOv4 coordinates): "
                "it decodes for inference, but this project cannot train it; "
                "train a new_coords=0 head")


def init_detection_biases(model: nn.Module, img_size: int) -> None:
    """Start every head near the data's base rates instead of at objectness 0.5.

    The conv feeding each ``[yolo]`` head gets objectness bias ``log(8 / cells)`` (about 8
    objects per image at that head) and class bias ``log(0.6 / (C - 0.99))`` (YOLOv5's
    priors). Without it the first hundreds of steps are spent pushing ~1,000 objectness
    scores per image down from 0.5. Heads not fed directly by a biased conv are left alone.
    """
    for head in model.yolo_layers:
        conv_layer = model.layers[head.sources[0]]
        if not isinstance(conv_layer, ConvLayer) or conv_layer.conv.bias is None:
            continue
        cells = (img_size / head.stride) ** 2
        c = head.num_classes
        with torch.no_grad():
            bias = conv_layer.conv.bias.view(head.num_anchors, 5 + c)
            bias[:, 4] += math.log(8 / cells)
            bias[:, 5:] += math.log(0.6 / (c - 0.99)) if c > 1 else 0.0
