"""Darknet's `detector map` (AlexeyAB src/detector.c) on a case worked out by hand, and where
it differs from the COCO number on the same detections."""

from __future__ import annotations

import pytest
import torch

from evaluation import coco_map
from evaluation.darknet_map import darknet_map, format_darknet_map

NAMES = ("thing", "other")
SIZES = [(100, 100), (100, 100)]
# Class 0 has three truths: G1, G2 in image 0, G3 in image 1; class 1 has none.
GTS = [torch.tensor([[0, 0, 0, 10, 10], [0, 50, 50, 70, 70]], dtype=torch.float64),
       torch.tensor([[0, 20, 20, 40, 40]], dtype=torch.float64)]
DETS = [torch.tensor([[0, 0, 10, 10, 0.9, 0],     # G1, IoU 1: TP
                      [1, 0, 11, 10, 0.6, 0],     # G1 again (IoU 0.82): FP, a duplicate
                      [50, 50, 70, 70, 0.2, 0],   # G2: TP, below -thresh 0.25
                      [0, 0, 5, 5, 0.5, 1]],      # class 1, no truth: FP
                     dtype=torch.float64),
        torch.tensor([[80, 80, 90, 90, 0.8, 0],   # nothing there: FP
                      [20, 20, 40, 42, 0.7, 0]],  # G3, IoU 400/440: TP
                     dtype=torch.float64)]
# Class 0 ranked: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.2 TP
#   precision 1, 1/2, 2/3, 1/2, 3/5;  recall 1/3, 1/3, 2/3, 2/3, 1
# Darknet, from the last rank: (1 - 2/3) * 3/5 + (2/3 - 1/3) * 2/3 + 1/3 * 1 = 34/45
AP_THING = 34 / 45
# COCO 101 points: r <= 1/3 (34 points) -> 1, 1/3 < r <= 2/3 (33) -> 2/3, r > 2/3 (34) -> 3/5
COCO_THING = (34 + 33 * 2 / 3 + 34 * 3 / 5) / 101


def test_darknet_map_equals_the_hand_computed_value():
    result = darknet_map(DETS, GTS, NAMES)
    assert result.per_class["thing"].ap == pytest.approx(AP_THING, abs=1e-12)
    assert result.per_class["other"].ap == 0.0
    assert result.map50 == pytest.approx(AP_THING / 2, abs=1e-12)  # over all classes
    # Above 0.25: 0.9 TP, 0.6 FP (G1 taken), 0.5 FP, 0.8 FP, 0.7 TP; G2's 0.2 is below.
    assert (result.tp, result.fp, result.fn) == (2, 3, 1)
    assert result.precision == pytest.approx(2 / 5) and result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(0.5)
    assert result.avg_iou == pytest.approx((1 + 400 / 440) / 5)
    assert (result.per_class["thing"].tp, result.per_class["thing"].fp) == (2, 2)
    text = format_darknet_map(result)
    assert "name = thing, ap = 75.56%" in text and "(mAP@0.50) = 0.377778" in text


def test_darknet_map_differs_from_coco_on_the_same_case():
    coco = coco_map(DETS, GTS, SIZES, NAMES)
    assert coco.per_class["thing"].ap50 == pytest.approx(COCO_THING, abs=1e-9)
    assert coco.map50 == pytest.approx(COCO_THING, abs=1e-9)  # class 1 left out
    darknet = darknet_map(DETS, GTS, NAMES)
    assert abs(darknet.per_class["thing"].ap - coco.per_class["thing"].ap50) > 5e-4
    assert abs(darknet.map50 - coco.map50) > 0.3


def test_interpolated_points_follow_darknet_points_flag():
    # 11 points: r = 0, .1, .2, .3 -> 1; .4, .5, .6 -> 2/3; .7 .. 1 -> 3/5
    eleven = darknet_map(DETS, GTS, NAMES, points=11).per_class["thing"].ap
    assert eleven == pytest.approx((4 + 3 * 2 / 3 + 4 * 3 / 5) / 11)
    hundred_one = darknet_map(DETS, GTS, NAMES, points=101).per_class["thing"].ap
    assert hundred_one == pytest.approx(COCO_THING)
    with pytest.raises(ValueError, match="points must be 0, 11 or 101"):
        darknet_map(DETS, GTS, NAMES, points=7)


def test_no_detections_score_zero():
    empty = [torch.zeros((0, 6), dtype=torch.float64)] * 2
    result = darknet_map(empty, GTS, NAMES)
    assert result.map50 == 0.0 and result.fn == 3 and result.recall == 0.0
