"""mAP@.5 as AlexeyAB Darknet's ``./darknet detector map`` computes it, so that a number
printed here can be set beside one printed there.

It follows ``validate_detector_map`` in AlexeyAB's ``src/detector.c``:

* candidates: every (box, class) with score = objectness x class probability > 0.005, after
  per-class NMS at IoU 0.45 (``DARKNET_CONF``, ``DARKNET_NMS``: the caller's post-processing);
* matching, per image: a detection is a true positive candidate for the ground-truth box of
  its class with the highest IoU, when that IoU is > 0.5; all detections are then ranked by
  score over the whole set, and a truth already taken by a higher-ranked detection makes the
  later one a false positive (VOC's rule; COCO instead moves on to the next unmatched truth);
* AP per class, ``-points 0`` (the default): the area under the precision-recall curve at
  each unique recall (VOC2010+): walking the ranks from the last, each drop in recall is
  weighted by the highest precision at that rank or below it, and the recall left at the top
  by the top precision; ``-points 11`` / ``101``: the mean, over recall r = i/(points-1), of
  the highest precision at recall >= r (VOC2007 / COCO-style);
* mAP: the mean over *all* classes, a class without ground truth counting as AP 0 (COCO
  leaves such a class out);
* precision, recall, F1, TP/FP/FN and average IoU at ``-thresh 0.25``: a detection above the
  threshold is a TP when it matches a truth that no higher-scored detection of its image
  matched; average IoU is over TP + FP (an FP adds 0).

Inputs are letterboxed like every evaluation in this project; Darknet stretches images to
the network size unless the cfg has ``letter_box=1``, so small differences remain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from common.boxes import box_iou

__all__ = ["DARKNET_CONF", "DARKNET_NMS", "DarknetClassAP", "DarknetMapAccumulator",
           "DarknetMapResult", "darknet_map", "format_darknet_map"]

DARKNET_CONF = 0.005  # validate_detector_map's `thresh` for collecting detections
DARKNET_NMS = 0.45  # its `nms`
DARKNET_THRESH = 0.25  # `-thresh`: where precision / recall / F1 are printed


@dataclass(frozen=True)
class DarknetClassAP:
    ap: float
    n_gt: int
    tp: int  # at ``thresh``
    fp: int


@dataclass(frozen=True)
class DarknetMapResult:
    map50: float
    per_class: dict[str, DarknetClassAP]
    points: int
    thresh: float
    tp: int
    fp: int
    fn: int
    avg_iou: float

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class _Ranked:
    """One detection as Darknet lists it before the global sort."""

    score: float
    cls: int
    truth: int  # global index of the matched truth, -1 for none


def darknet_map(detections: Sequence[Tensor], ground_truths: Sequence[Tensor],
                class_names: Sequence[str], iou_thres: float = 0.5, points: int = 0,
                thresh: float = DARKNET_THRESH) -> DarknetMapResult:
    """Darknet's mAP of a set of images (module docstring).

    Args:
        detections: per image ``[K, 6]``: ``x1, y1, x2, y2, score, class``, already filtered
            at ``DARKNET_CONF`` and NMS'd at ``DARKNET_NMS`` for Darknet's number.
        ground_truths: per image ``[M, 5]``: ``class, x1, y1, x2, y2``.
        points: 0 (area under the curve), 11 or 101, as ``-points``.
    """
    if points not in (0, 11, 101):
        raise ValueError(f"points must be 0, 11 or 101, got {points}")
    if len(detections) != len(ground_truths):
        raise ValueError(f"need one entry per image, got {len(detections)} detections and "
                         f"{len(ground_truths)} ground truths")
    num_classes = len(class_names)
    ranked: list[_Ranked] = []
    counts = _ThreshCounts(num_classes)
    offset = 0
    for dets, gts in zip(detections, ground_truths, strict=True):
        ranked += _match_image(dets.double().cpu(), gts.double().cpu(), offset, iou_thres,
                               thresh, counts)
        offset += len(gts)
    ranked.sort(key=lambda d: -d.score)  # stable: ties keep image order, as listed
    n_gt = [0] * num_classes
    for gts in ground_truths:
        for c in gts[:, 0].long().tolist():
            n_gt[c] += 1
    aps = _class_aps(ranked, n_gt, offset, points)
    per_class = {name: DarknetClassAP(aps[k], n_gt[k], counts.tp[k], counts.fp[k])
                 for k, name in enumerate(class_names)}
    tp, fp = sum(counts.tp), sum(counts.fp)
    return DarknetMapResult(
        map50=math.fsum(aps) / num_classes, per_class=per_class, points=points,
        thresh=thresh, tp=tp, fp=fp, fn=offset - tp,
        avg_iou=counts.iou_sum / (tp + fp) if tp + fp else 0.0)


class _ThreshCounts:
    """TP / FP per class and the IoU sum of the detections above ``thresh``."""

    def __init__(self, num_classes: int):
        self.tp, self.fp, self.iou_sum = [0] * num_classes, [0] * num_classes, 0.0


def _match_image(dets: Tensor, gts: Tensor, offset: int, iou_thres: float, thresh: float,
                 counts: _ThreshCounts) -> list[_Ranked]:
    """Each detection's best same-class truth (IoU > ``iou_thres``); the ``thresh`` counts."""
    order = torch.sort(dets[:, 4], descending=True, stable=True).indices
    dets = dets[order]
    iou = box_iou(dets[:, :4], gts[:, 1:5]) if len(dets) and len(gts) else None
    out, taken = [], set()
    for i, (score, cls) in enumerate(zip(dets[:, 4].tolist(), dets[:, 5].long().tolist(),
                                         strict=True)):
        truth, best = -1, 0.0
        if iou is not None:
            same = torch.where(gts[:, 0].long() == cls, iou[i], torch.zeros_like(iou[i]))
            j = int(same.argmax())
            if same[j] > iou_thres:
                truth, best = offset + j, float(same[j])
        out.append(_Ranked(score, cls, truth))
        if score > thresh:
            if truth >= 0 and truth not in taken:
                counts.tp[cls] += 1
                counts.iou_sum += best
            else:
                counts.fp[cls] += 1
        if truth >= 0:
            taken.add(truth)
    return out


def _class_aps(ranked: list[_Ranked], n_gt: list[int], n_truths: int,
               points: int) -> list[float]:
    """Per class: walk the global ranking, a truth counts once (later hits are FPs)."""
    taken = [False] * n_truths
    curves: list[list[tuple[float, float]]] = [[] for _ in n_gt]  # (precision, recall)
    tp, fp = [0] * len(n_gt), [0] * len(n_gt)
    for d in ranked:
        if d.truth >= 0 and not taken[d.truth]:
            taken[d.truth] = True
            tp[d.cls] += 1
        else:
            fp[d.cls] += 1
        c = d.cls
        curves[c].append((tp[c] / (tp[c] + fp[c]), tp[c] / n_gt[c] if n_gt[c] else 0.0))
    return [_area(curve) if points == 0 else _interpolated(curve, points) for curve in curves]


def _area(curve: list[tuple[float, float]]) -> float:
    """Darknet's ``-points 0`` loop, from the last rank to the first."""
    if not curve:
        return 0.0
    last_precision, last_recall = curve[-1]
    area = 0.0
    for precision, recall in reversed(curve[:-1]):
        delta = last_recall - recall
        last_recall = recall
        last_precision = max(last_precision, precision)
        area += delta * last_precision
    return area + last_recall * last_precision  # the recall reached at the top rank


def _interpolated(curve: list[tuple[float, float]], points: int) -> float:
    total = 0.0
    for point in range(points):
        r = point / (points - 1)
        total += max((p for p, recall in curve if recall >= r), default=0.0)
    return total / points


class DarknetMapAccumulator:
    """Collects one image at a time during an eval loop, then computes ``darknet_map``.
    ``conf_thres``/``iou_thres``: the post-processing Darknet's number needs."""

    conf_thres = DARKNET_CONF
    iou_thres = DARKNET_NMS

    def __init__(self, class_names: Sequence[str], points: int = 0):
        self.class_names, self.points = tuple(class_names), points
        self._dets: list[Tensor] = []
        self._gts: list[Tensor] = []

    def update(self, dets: Tensor, gts: Tensor, image_size: tuple[int, int] | None = None
               ) -> None:
        self._dets.append(dets.detach().to("cpu", torch.float64))
        self._gts.append(gts.detach().to("cpu", torch.float64))

    def compute(self) -> DarknetMapResult:
        return darknet_map(self._dets, self._gts, self.class_names, points=self.points)


def format_darknet_map(result: DarknetMapResult) -> str:
    """The lines ``detector map`` prints: per-class AP with TP/FP, then P/R/F1 and mAP."""
    lines = [f"class_id = {k}, name = {name}, ap = {c.ap * 100:.2f}%   "
             f"(TP = {c.tp}, FP = {c.fp})"
             for k, (name, c) in enumerate(result.per_class.items())]
    how = ("Area-Under-Curve for each unique Recall" if result.points == 0
           else f"{result.points}-point interpolation")
    lines += [
        f"for conf_thresh = {result.thresh:.2f}, precision = {result.precision:.2f}, "
        f"recall = {result.recall:.2f}, F1-score = {result.f1:.2f}",
        f"for conf_thresh = {result.thresh:.2f}, TP = {result.tp}, FP = {result.fp}, "
        f"FN = {result.fn}, average IoU = {result.avg_iou * 100:.2f} %",
        f"IoU threshold = 50 %, used {how}",
        f"mean average precision (mAP@0.50) = {result.map50:.6f}, or "
        f"{result.map50 * 100:.2f} %",
    ]
    return "\n".join(lines)
