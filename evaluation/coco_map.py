"""COCO-standard box mAP (@.5 and @.5:.95) computed by pycocotools from in-memory tensors.

Both the ground truth and the detections are handed to pycocotools as in-memory COCO
datasets (no JSON files). pycocotools reports progress on stdout; that is swallowed here so
the library stays silent. Images, categories and annotations get 1-based ids because
pycocotools treats a match id of 0 as "unmatched".
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

__all__ = ["ClassAP", "MapAccumulator", "MapResult", "coco_map"]

_AREA_ALL = 0  # index of the 'all' area range in COCOeval.params.areaRng
_IOU_50 = 0  # index of IoU 0.5 in COCOeval.params.iouThrs (0.50, 0.55, ..., 0.95)


@dataclass(frozen=True)
class ClassAP:
    """AP of one class; ``ap50``/``ap`` are None when it has no ground truth (COCO skips it)."""

    ap50: float | None
    ap: float | None
    n_gt: int


@dataclass(frozen=True)
class MapResult:
    """mAP over the classes that have ground truth, plus the per-class breakdown.

    ``map50`` and ``map`` are 0.0 when no class has any ground truth.
    """

    map50: float
    map: float
    per_class: dict[str, ClassAP]


def coco_map(
    detections: Sequence[Tensor],
    ground_truths: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
    max_dets: int = 100,
) -> MapResult:
    """COCO box mAP of a set of images.

    Args:
        detections: per image ``[K, 6]``: ``x1, y1, x2, y2, score, class`` in pixels.
        ground_truths: per image ``[M, 5]``: ``class, x1, y1, x2, y2`` in pixels.
        image_sizes: per image ``(height, width)`` in pixels.
        class_names: one unique name per class id.
        max_dets: COCO's per-image, per-class cap on scored detections (COCO uses 100).
    """
    _check_class_names(class_names)
    if not len(detections) == len(ground_truths) == len(image_sizes):
        raise ValueError(
            f"need one entry per image in each input, got {len(detections)} detections, "
            f"{len(ground_truths)} ground truths and {len(image_sizes)} image sizes"
        )
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    for index, (dets, gts, size) in enumerate(
        zip(detections, ground_truths, image_sizes, strict=True)
    ):
        _check_image(index, dets, gts, size, len(class_names))
    return _evaluate(detections, ground_truths, image_sizes, class_names, max_dets)


class MapAccumulator:
    """Collects one image at a time during an eval loop, then computes ``coco_map``.

    Inputs are validated on ``update`` (so a bad image is reported where it is fed) and
    stored detached on the CPU.
    """

    def __init__(self, class_names: Sequence[str], max_dets: int = 100) -> None:
        _check_class_names(class_names)
        if max_dets < 1:
            raise ValueError(f"max_dets must be >= 1, got {max_dets}")
        self.class_names = tuple(class_names)
        self.max_dets = max_dets
        self.reset()

    def reset(self) -> None:
        self._detections: list[Tensor] = []
        self._ground_truths: list[Tensor] = []
        self._image_sizes: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._image_sizes)

    def update(self, dets: Tensor, gts: Tensor, image_size: tuple[int, int]) -> None:
        """Add one image: ``dets [K, 6]``, ``gts [M, 5]``, ``image_size (height, width)``."""
        _check_image(len(self), dets, gts, image_size, len(self.class_names))
        self._detections.append(dets.detach().to("cpu", torch.float64))
        self._ground_truths.append(gts.detach().to("cpu", torch.float64))
        self._image_sizes.append((int(image_size[0]), int(image_size[1])))

    def compute(self) -> MapResult:
        return _evaluate(
            self._detections,
            self._ground_truths,
            self._image_sizes,
            self.class_names,
            self.max_dets,
        )


def _check_class_names(class_names: Sequence[str]) -> None:
    if len(class_names) == 0:
        raise ValueError("class_names is empty")
    duplicates = sorted(name for name, count in Counter(class_names).items() if count > 1)
    if duplicates:
        raise ValueError(f"class_names must be unique, got duplicates {duplicates}")


def _check_image(
    index: int, dets: Tensor, gts: Tensor, size: tuple[int, int], num_classes: int
) -> None:
    if dets.dim() != 2 or dets.shape[1] != 6:
        raise ValueError(
            f"image {index}: detections must have shape [K, 6] (x1, y1, x2, y2, score, class), "
            f"got {list(dets.shape)}"
        )
    if gts.dim() != 2 or gts.shape[1] != 5:
        raise ValueError(
            f"image {index}: ground truth must have shape [M, 5] (class, x1, y1, x2, y2), "
            f"got {list(gts.shape)}"
        )
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image {index}: image size must be (height, width) > 0, got {size}")
    _check_class_ids(index, "detection", dets[:, 5], num_classes)
    _check_class_ids(index, "ground-truth", gts[:, 0], num_classes)
    _check_corners(index, "detection", dets[:, :4])
    _check_corners(index, "ground-truth", gts[:, 1:5])


def _check_class_ids(index: int, what: str, ids: Tensor, num_classes: int) -> None:
    bad = (ids < 0) | (ids >= num_classes) | (ids != ids.round())
    if bad.any():
        raise ValueError(
            f"image {index}: {what} class ids must be integers in [0, {num_classes}), "
            f"got {ids[bad].tolist()}"
        )


def _check_corners(index: int, what: str, boxes: Tensor) -> None:
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]) | ~boxes.isfinite().all(1)
    if bad.any():
        raise ValueError(
            f"image {index}: {what} boxes must be finite x1, y1, x2, y2 with x2 >= x1 and "
            f"y2 >= y1, got {boxes[bad].tolist()}"
        )


def _evaluate(
    detections: Sequence[Tensor],
    ground_truths: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
    max_dets: int,
) -> MapResult:
    images = [{"id": i + 1, "height": h, "width": w} for i, (h, w) in enumerate(image_sizes)]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    gt_annotations = _annotations(ground_truths, class_col=0, box_cols=slice(1, 5))
    dt_annotations = _annotations(detections, class_col=5, box_cols=slice(0, 4), score_col=4)
    coco_gt = _coco({"images": images, "categories": categories, "annotations": gt_annotations})
    coco_dt = _coco({"images": images, "categories": categories, "annotations": dt_annotations})
    precision = _precision(coco_gt, coco_dt, max_dets)
    n_gt = np.bincount([a["category_id"] - 1 for a in gt_annotations], minlength=len(categories))
    return _summarise(precision, n_gt, class_names)


def _annotations(
    per_image: Sequence[Tensor], class_col: int, box_cols: slice, score_col: int | None = None
) -> list[dict]:
    """COCO annotation dicts (bbox as x, y, w, h) for a list of per-image tensors."""
    annotations: list[dict] = []
    for image_index, rows in enumerate(per_image):
        for row in rows.detach().to("cpu", torch.float64).tolist():
            x1, y1, x2, y2 = row[box_cols]
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_index + 1,
                "category_id": int(row[class_col]) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
            if score_col is not None:
                annotation["score"] = row[score_col]
            annotations.append(annotation)
    return annotations


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _precision(coco_gt: COCO, coco_dt: COCO, max_dets: int) -> np.ndarray:
    """COCO's interpolated precision ``[T iou thresholds, R recall points, K classes]``.

    Entries are -1 for classes without ground truth.
    """
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.params.maxDets = [max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, _AREA_ALL, 0]


def _summarise(precision: np.ndarray, n_gt: np.ndarray, class_names: Sequence[str]) -> MapResult:
    # COCO averages every valid (threshold, recall, class) cell; a class with ground truth
    # has all its cells valid, so this equals the mean of the per-class APs below.
    per_class = {}
    for k, name in enumerate(class_names):
        valid = bool((precision[:, :, k] > -1).all())
        per_class[name] = ClassAP(
            ap50=float(precision[_IOU_50, :, k].mean()) if valid else None,
            ap=float(precision[:, :, k].mean()) if valid else None,
            n_gt=int(n_gt[k]),
        )
    scored = [c for c in per_class.values() if c.ap is not None]
    return MapResult(
        map50=_mean([c.ap50 for c in scored]),
        map=_mean([c.ap for c in scored]),
        per_class=per_class,
    )


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0
