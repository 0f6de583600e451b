"""Boxes, in one place: formats, IoU variants and the YOLO decode.

Every layer imports these from here (torch only, no ``darknet``): the ``[yolo]`` layer and the
loss decode with :class:`YoloDecode`, evaluation and the data code convert and compare with
the functions below.

Formats: ``cxcywh`` is centre x, centre y, width, height; ``xyxy`` is the two corners.

The decode follows AlexeyAB Darknet (``forward_yolo_layer`` then ``get_yolo_box``). With the
head's logits ``t`` at grid cell ``(i, j)``, anchor ``(a_w, a_h)`` in pixels, stride ``S``
and ``s = scale_x_y`` (1 in YOLOv3, 1.05 in yolov4-tiny, 2 in scaled-YOLOv4):

* ``new_coords=0``: ``cx = (s * sigmoid(t_x) - (s - 1) / 2 + i) * S``, ``w = a_w * exp(t_w)``;
  objectness and classes are ``sigmoid(t)``;
* ``new_coords=1``: the conv in front already applied the logistic, so the layer applies
  none: ``cx = (s * t_x - (s - 1) / 2 + i) * S``, ``w = a_w * (2 * t_w) ** 2``; objectness and
  classes are ``t`` as they come.

``s > 1`` lets the centre reach its cell's edges (``sigmoid`` alone never gets there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "YoloDecode",
    "box_giou",
    "box_iou",
    "cxcywh_to_xyxy",
    "grid_cells",
    "pairwise_iou",
    "wh_iou",
    "xyxy_to_cxcywh",
]


# ---------------------------------------------------------------- formats

def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` centre/size boxes (extra trailing columns ignored) -> corner boxes."""
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((centre - size / 2, centre + size / 2), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``[..., 4]`` corner boxes -> centre/size boxes."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), -1)


# ---------------------------------------------------------------- IoU

def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU matrix ``[N, M]`` of xyxy boxes ``[N, 4]`` and ``[M, 4]``; empty boxes give IoU 0."""
    x1a, y1a, x2a, y2a = boxes1.unbind(dim=1)
    x1b, y1b, x2b, y2b = boxes2.unbind(dim=1)
    # Built from [N, M] planes rather than an [N, M, 2] tensor: half the time on CPU.
    inter_w = (torch.minimum(x2a[:, None], x2b) - torch.maximum(x1a[:, None], x1b)).clamp_(min=0)
    inter_h = (torch.minimum(y2a[:, None], y2b) - torch.maximum(y1a[:, None], y1b)).clamp_(min=0)
    inter = inter_w.mul_(inter_h)
    area1 = (x2a - x1a).clamp(min=0) * (y2a - y1a).clamp(min=0)
    area2 = (x2b - x1b).clamp(min=0) * (y2b - y1b).clamp(min=0)
    union = area1[:, None] + area2 - inter
    # union is 0 only when both boxes are empty, and then inter is 0 too: IoU 0, not NaN.
    return inter.div_(union.clamp_(min=torch.finfo(inter.dtype).tiny))


def box_giou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """Element-wise ``(IoU, GIoU)`` of ``[..., 4]`` cxcywh boxes (broadcasting)."""
    a0, a1 = box1[..., :2] - box1[..., 2:] / 2, box1[..., :2] + box1[..., 2:] / 2
    b0, b1 = box2[..., :2] - box2[..., 2:] / 2, box2[..., :2] + box2[..., 2:] / 2
    inter = (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp(min=0).prod(-1)
    union = box1[..., 2:].prod(-1) + box2[..., 2:].prod(-1) - inter + eps
    iou = inter / union
    hull = (torch.maximum(a1, b1) - torch.minimum(a0, b0)).prod(-1) + eps
    return iou, iou - (hull - union) / hull


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``[B, N, M]`` IoU of ``[B, N, 4]`` and ``[B, M, 4]`` cxcywh boxes, image by image."""
    return box_giou(boxes1[:, :, None], boxes2[:, None])[0]


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """``[N, M]`` IoU of boxes ``[N, 2]`` and ``[M, 2]`` given as (w, h) on a common centre."""
    inter = torch.minimum(wh1[:, None], wh2[None]).prod(2)
    return inter / (wh1.prod(1)[:, None] + wh2.prod(1)[None] - inter)


# ---------------------------------------------------------------- the YOLO decode

def grid_cells(h: int, w: int, like: Tensor) -> Tensor:
    """``[H, W, 2]`` cell indices as (x, y), on ``like``'s device and dtype."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=like.device, dtype=like.dtype),
        torch.arange(w, device=like.device, dtype=like.dtype),
        indexing="ij",
    )
    return torch.stack((xs, ys), dim=-1)


@dataclass(frozen=True)
class YoloDecode:
    """How one ``[yolo]`` head turns its inputs into boxes and scores (module docstring).

    The loss and inference both decode through this, so they cannot disagree; the loss
    alone passes ``max_log`` to cap ``exp`` (a training guard; inference is Darknet's own).
    """

    scale_x_y: float = 1.0
    new_coords: bool = False

    def offset(self, t_xy: Tensor) -> Tensor:
        """Centre offset within the cell: ``s * act(t) - (s - 1) / 2``."""
        p = t_xy if self.new_coords else t_xy.sigmoid()
        if self.scale_x_y == 1:
            return p  # bit-identical to the affine map with s = 1, and cheaper
        return p * self.scale_x_y - (self.scale_x_y - 1) / 2

    def centre(self, t_xy: Tensor, cell: Tensor) -> Tensor:
        """Box centre in grid units; ``cell`` broadcasts against ``t_xy``."""
        return self.offset(t_xy) + cell

    def size(self, t_wh: Tensor, anchors: Tensor, max_log: float | None = None) -> Tensor:
        """Box size in the anchors' units; ``max_log`` caps ``t`` before ``exp``."""
        if self.new_coords:
            return (2 * t_wh).square() * anchors
        if max_log is not None:
            t_wh = t_wh.clamp(max=max_log)
        return t_wh.exp() * anchors

    def scores(self, t: Tensor) -> Tensor:
        """Objectness and class probabilities."""
        return t if self.new_coords else t.sigmoid()

    def pixel_boxes(self, p: Tensor, anchors: Tensor, stride: float,
                    max_log: float | None = None) -> Tensor:
        """``[B, A, H, W, 4]`` cxcywh in input pixels from ``p[B, A, H, W, >= 4]``.

        ``anchors`` in pixels, shaped to broadcast against ``p[..., 2:4]`` (``[1, A, 1, 1, 2]``).
        """
        grid = grid_cells(p.shape[2], p.shape[3], p)
        xy = self.centre(p[..., :2], grid) * stride
        return torch.cat((xy, self.size(p[..., 2:4], anchors, max_log)), dim=-1)

    def detections(self, p: Tensor, anchors: Tensor, stride: float) -> Tensor:
        """``[B, A*H*W, 5 + C]``: pixel cxcywh, objectness, class probabilities."""
        b, a, h, w, n = p.shape
        out = torch.cat((self.pixel_boxes(p, anchors, stride), self.scores(p[..., 4:])), dim=-1)
        return out.view(b, a * h * w, n)
