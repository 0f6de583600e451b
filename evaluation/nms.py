"""Class-aware greedy non-maximum suppression and YOLO output post-processing, in pure torch.

Greedy NMS visits boxes in descending score order and keeps a box unless an already kept box
of the same class overlaps it by IoU > ``iou_thresh``. Here the visit is done in blocks of
sorted boxes: a block is first culled against everything kept so far (one IoU matrix), then
resolved internally (see ``_resolve_block``). Memory is ``O(block * (kept + block))`` rather
than ``O(N^2)``, and a ``max_keep`` limit stops the walk early, which is the common case
when post-processing thousands of low-confidence candidates down to ``max_det``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from common.boxes import box_iou, cxcywh_to_xyxy

__all__ = ["batched_nms", "postprocess"]

_BLOCK = 512


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    iou_thresh: float,
    max_keep: int | None = None,
) -> Tensor:
    """Class-aware greedy NMS.

    Args:
        boxes: ``[N, 4]`` float xyxy boxes.
        scores: ``[N]`` scores; equal scores are visited in index order.
        classes: ``[N]`` integer (or integral float) class ids; boxes of different classes
            never suppress each other.
        iou_thresh: a box is suppressed by a kept box of its class when IoU > ``iou_thresh``.
        max_keep: stop once this many boxes are kept. Because kept boxes come out in
            descending score, this equals truncating the full result.

    Returns:
        ``[K]`` int64 indices into ``boxes`` of the kept boxes, in descending score order.
    """
    _check_nms_inputs(boxes, scores, classes, iou_thresh, max_keep)
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = _greedy_sorted(boxes[order], classes[order], iou_thresh, max_keep)
    return order[kept]


def _check_nms_inputs(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_thresh: float, max_keep: int | None
) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {list(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating-point tensor, got {boxes.dtype}")
    n = boxes.shape[0]
    if scores.shape != (n,):
        raise ValueError(f"scores must have shape [{n}] to match boxes, got {list(scores.shape)}")
    if classes.shape != (n,):
        raise ValueError(f"classes must have shape [{n}] to match boxes, got {list(classes.shape)}")
    if not 0.0 <= iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh must be in [0, 1], got {iou_thresh}")
    if max_keep is not None and max_keep < 0:
        raise ValueError(f"max_keep must be >= 0 or None, got {max_keep}")


def _greedy_sorted(
    boxes: Tensor, classes: Tensor, iou_thresh: float, max_keep: int | None
) -> Tensor:
    """Greedy NMS over boxes sorted by descending score; returns kept positions in order."""
    limit = boxes.shape[0] if max_keep is None else max_keep
    kept = torch.empty(0, dtype=torch.long, device=boxes.device)
    for start in range(0, boxes.shape[0], _BLOCK):
        if kept.numel() >= limit:
            break
        block, block_classes = boxes[start : start + _BLOCK], classes[start : start + _BLOCK]
        alive = ~_suppresses(boxes[kept], classes[kept], block, block_classes, iou_thresh).any(0)
        within = _suppresses(block, block_classes, block, block_classes, iou_thresh).triu_(1)
        kept = torch.cat((kept, _resolve_block(within, alive).nonzero().squeeze(1) + start))
    return kept[:limit]


def _suppresses(
    boxes1: Tensor, classes1: Tensor, boxes2: Tensor, classes2: Tensor, iou_thresh: float
) -> Tensor:
    """``[N, M]`` bool: box ``i`` of the first set would suppress box ``j`` of the second.

    A same-class mask, rather than the usual per-class coordinate offset, keeps IoUs exact:
    offsets of ``class * image_size`` cost float32 precision in the box coordinates.
    """
    same_class = classes1[:, None] == classes2[None, :]
    return same_class & (box_iou(boxes1, boxes2) > iou_thresh)


def _resolve_block(within: Tensor, alive: Tensor) -> Tensor:
    """Greedy keep-mask of one block, from its strictly upper-triangular suppression matrix.

    The greedy pass is inherently sequential (whether box ``j`` survives depends on whether
    its suppressors survived), so it runs as a short host-side loop over the boxes that
    suppress anything at all; the tensors stay on their device everywhere else.
    """
    within_host = within.cpu().numpy()
    keep = alive.cpu().numpy().copy()
    for i in np.flatnonzero(within_host.any(axis=1) & keep):
        if keep[i]:
            keep[within_host[i]] = False
    return torch.from_numpy(keep).to(alive.device)


def postprocess(
    pred: Tensor | Sequence[Tensor],
    conf_thresh: float = 0.001,
    iou_thresh: float = 0.6,
    max_det: int = 300,
    multi_label: bool = True,
    max_candidates: int = 30000,
) -> list[Tensor]:
    """Turn raw eval-mode detector output into per-image detections.

    Args:
        pred: ``[B, N, 5 + C]`` (or a list of per-head ``[B, N_i, 5 + C]`` tensors, joined
            along dim 1) holding ``cx, cy, w, h`` in input pixels, objectness probability,
            then ``C`` class probabilities.
        conf_thresh: candidates need score = objectness * class probability > this.
        iou_thresh: class-aware NMS threshold (see ``batched_nms``).
        max_det: at most this many detections per image, best first.
        multi_label: if True every (box, class) pair above ``conf_thresh`` is a candidate;
            otherwise each box only competes with its best class.
        max_candidates: only the top-scoring candidates of an image enter NMS, which bounds
            time and memory when ``conf_thresh`` is tiny.

    Returns:
        One ``[K, 6]`` tensor per image: ``x1, y1, x2, y2, score, class`` (class as float),
        sorted by descending score, on the device and dtype of ``pred``.
    """
    pred = _join_heads(pred)
    _check_postprocess_args(conf_thresh, iou_thresh, max_det, max_candidates)
    return [
        _postprocess_image(p, conf_thresh, iou_thresh, max_det, multi_label, max_candidates)
        for p in pred
    ]


def _join_heads(pred: Tensor | Sequence[Tensor]) -> Tensor:
    if not isinstance(pred, Tensor):
        if len(pred) == 0:
            raise ValueError("pred is an empty sequence of head outputs")
        pred = torch.cat(list(pred), dim=1)
    if pred.dim() != 3 or pred.shape[2] < 6:
        raise ValueError(f"pred must have shape [B, N, 5 + C] with C >= 1, got {list(pred.shape)}")
    return pred


def _check_postprocess_args(
    conf_thresh: float, iou_thresh: float, max_det: int, max_candidates: int
) -> None:
    if not 0.0 <= conf_thresh < 1.0:
        raise ValueError(f"conf_thresh must be in [0, 1), got {conf_thresh}")
    if not 0.0 <= iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh must be in [0, 1], got {iou_thresh}")
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")


def _postprocess_image(
    pred: Tensor,
    conf_thresh: float,
    iou_thresh: float,
    max_det: int,
    multi_label: bool,
    max_candidates: int,
) -> Tensor:
    # Class probabilities are <= 1, so a row below the threshold on objectness alone
    # cannot produce a candidate; dropping it first keeps the class matrix small.
    pred = pred[pred[:, 4] > conf_thresh]
    boxes, scores, classes = _candidates(pred, conf_thresh, multi_label)
    if scores.numel() > max_candidates:
        # A stable sort, unlike topk, keeps ties at the cut in index order: deterministic.
        top = torch.sort(scores, descending=True, stable=True).indices[:max_candidates]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    keep = batched_nms(boxes, scores, classes, iou_thresh, max_keep=max_det)
    return torch.cat((boxes[keep], scores[keep, None], classes[keep, None].to(pred.dtype)), dim=1)


def _candidates(pred: Tensor, conf_thresh: float, multi_label: bool) -> tuple[Tensor, ...]:
    """``(xyxy boxes, scores, class ids)`` of every candidate above ``conf_thresh``."""
    boxes = cxcywh_to_xyxy(pred[:, :4])
    class_scores = pred[:, 4:5] * pred[:, 5:]
    if multi_label:
        rows, classes = (class_scores > conf_thresh).nonzero(as_tuple=True)
        return boxes[rows], class_scores[rows, classes], classes
    scores, classes = class_scores.max(dim=1)
    mask = scores > conf_thresh
    return boxes[mask], scores[mask], classes[mask]
