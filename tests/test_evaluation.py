"""Tests for evaluation/: NMS against a brute-force greedy reference, mAP against hand counts."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from evaluation import (
    ClassAP,
    MapAccumulator,
    batched_nms,
    box_iou,
    coco_map,
    cxcywh_to_xyxy,
    format_map_table,
    postprocess,
)

# ---------------------------------------------------------------------------------------------
# Reference implementations: plain Python, one box at a time.


def _iou_ref(a: list[float], b: list[float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy_nms_ref(boxes: list, scores: list, classes: list, iou_thresh: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(
            classes[k] != classes[i] or _iou_ref(boxes[k], boxes[i]) <= iou_thresh for k in kept
        ):
            kept.append(i)
    return kept


def _nms_both(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, thresh: float):
    got = batched_nms(boxes, scores, classes, thresh).tolist()
    want = _greedy_nms_ref(boxes.tolist(), scores.tolist(), classes.tolist(), thresh)
    return got, want


def _random_int_boxes(gen: torch.Generator, n: int, extent: int, max_size: int) -> torch.Tensor:
    # Integer corners keep every IoU an exact ratio, so float32 and the float64 reference
    # agree on each `iou > thresh` comparison.
    xy = torch.randint(0, extent, (n, 2), generator=gen)
    wh = torch.randint(0, max_size, (n, 2), generator=gen)
    return torch.cat((xy, xy + wh), dim=1).float()


# ---------------------------------------------------------------------------------------------
# NMS


_box = st.tuples(
    st.integers(0, 30), st.integers(0, 30), st.integers(0, 20), st.integers(0, 20)
).map(lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(_box, st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0]), st.integers(0, 2)),
        max_size=40,
    ),
    thresh=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
)
def test_batched_nms_matches_greedy_reference(data, thresh):
    boxes = torch.tensor([d[0] for d in data], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([d[1] for d in data], dtype=torch.float32)
    classes = torch.tensor([d[2] for d in data], dtype=torch.long)
    got, want = _nms_both(boxes, scores, classes, thresh)
    assert got == want


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_matches_reference_across_blocks(seed):
    # > 512 boxes so that suppression across the internal blocks is exercised, with tied
    # scores (few distinct values) and several classes.
    gen = torch.Generator().manual_seed(seed)
    n = 1100
    boxes = _random_int_boxes(gen, n, extent=200, max_size=40)
    scores = torch.randint(0, 50, (n,), generator=gen).float() / 50
    classes = torch.randint(0, 3, (n,), generator=gen)
    got, want = _nms_both(boxes, scores, classes, [0.3, 0.5, 0.8][seed])
    assert got == want
    assert len(want) < n  # the case really suppresses something


def test_batched_nms_max_keep_truncates_full_result():
    gen = torch.Generator().manual_seed(7)
    boxes = _random_int_boxes(gen, 1500, extent=300, max_size=60)
    scores = torch.rand(1500, generator=gen)
    classes = torch.randint(0, 4, (1500,), generator=gen)
    full = batched_nms(boxes, scores, classes, 0.5)
    for max_keep in (0, 1, 37, 600, 5000):
        assert torch.equal(batched_nms(boxes, scores, classes, 0.5, max_keep), full[:max_keep])


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3)
    kept = batched_nms(boxes, torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0, 1, 0]), 0.5)
    assert kept.tolist() == [1, 2]


def test_batched_nms_empty_input():
    kept = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert kept.dtype == torch.long and kept.shape == (0,)


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "thresh", "match"),
    [
        (
            torch.zeros(3, 5),
            torch.zeros(3),
            torch.zeros(3),
            0.5,
            r"boxes .* \[N, 4\], got \[3, 5\]",
        ),
        (torch.zeros(3, 4), torch.zeros(2), torch.zeros(3), 0.5, r"scores .* \[3\].*got \[2\]"),
        (torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 1), 0.5, r"classes .*got \[3, 1\]"),
        (torch.zeros(3, 4), torch.zeros(3), torch.zeros(3), 1.5, r"iou_thresh .*got 1.5"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3), torch.zeros(3), 0.5, "int64"),
    ],
)
def test_batched_nms_rejects_bad_inputs(boxes, scores, classes, thresh, match):
    with pytest.raises(ValueError, match=match):
        batched_nms(boxes, scores, classes, thresh)


def test_box_iou_matches_pycocotools():
    gen = torch.Generator().manual_seed(3)
    a = _random_int_boxes(gen, 20, extent=50, max_size=30).double()
    b = _random_int_boxes(gen, 15, extent=50, max_size=30).double()
    xywh = lambda t: torch.cat((t[:, :2], t[:, 2:] - t[:, :2]), 1).numpy()  # noqa: E731
    want = mask_utils.iou(xywh(a), xywh(b), [0] * len(b))
    np.testing.assert_allclose(box_iou(a, b).numpy(), want, atol=1e-12)


def test_cxcywh_to_xyxy():
    got = cxcywh_to_xyxy(torch.tensor([[10.0, 20.0, 4.0, 6.0]]))
    assert got.tolist() == [[8.0, 17.0, 12.0, 23.0]]


# ---------------------------------------------------------------------------------------------
# postprocess


def _row(cx, cy, w, h, obj, *cls):
    return [cx, cy, w, h, obj, *cls]


def test_postprocess_hand_case():
    # Image 0: two overlapping class-0 boxes (the weaker one is suppressed), one class-1 box
    # on top of them (kept: other class), one box below the confidence threshold.
    # Image 1: nothing above the threshold.
    head_a = torch.tensor(
        [
            [_row(50, 50, 20, 20, 0.9, 0.8, 0.1), _row(51, 50, 20, 20, 0.8, 0.9, 0.0)],
            [_row(5, 5, 2, 2, 0.01, 0.5, 0.5), _row(5, 5, 2, 2, 0.0, 1.0, 1.0)],
        ]
    )
    head_b = torch.tensor(
        [[_row(50, 50, 20, 20, 0.5, 0.0, 0.6)], [_row(9, 9, 2, 2, 0.001, 1.0, 1.0)]]
    )
    out = postprocess([head_a, head_b], conf_thresh=0.1, iou_thresh=0.5, multi_label=False)
    assert len(out) == 2
    want = torch.tensor([[40.0, 40, 60, 60, 0.9 * 0.8, 0], [40, 40, 60, 60, 0.5 * 0.6, 1]])
    torch.testing.assert_close(out[0], want)
    assert out[1].shape == (0, 6)


def test_postprocess_multi_label_keeps_every_class_above_threshold():
    pred = torch.tensor([[_row(50, 50, 20, 20, 1.0, 0.7, 0.6, 0.05)]])
    multi = postprocess(pred, conf_thresh=0.1, multi_label=True)[0]
    single = postprocess(pred, conf_thresh=0.1, multi_label=False)[0]
    torch.testing.assert_close(multi[:, 4:], torch.tensor([[0.7, 0.0], [0.6, 1.0]]))
    torch.testing.assert_close(single[:, 4:], torch.tensor([[0.7, 0.0]]))


def _postprocess_ref(pred, conf, iou, max_det, multi_label):
    out = []
    for image in pred.tolist():
        boxes, scores, classes = [], [], []
        for cx, cy, w, h, obj, *probs in image:
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            pairs = [(obj * p, c) for c, p in enumerate(probs)]
            if not multi_label:
                pairs = [max(pairs, key=lambda sc: sc[0])]
            for score, c in pairs:
                if score > conf:
                    boxes.append(box), scores.append(score), classes.append(c)
        kept = _greedy_nms_ref(boxes, scores, classes, iou)[:max_det]
        out.append([[*boxes[k], scores[k], classes[k]] for k in kept])
    return out


@pytest.mark.parametrize("multi_label", [True, False])
def test_postprocess_matches_reference(multi_label):
    gen = torch.Generator().manual_seed(11)
    pred = torch.rand(2, 300, 5 + 4, generator=gen)
    pred[..., :2] *= 200
    pred[..., 2:4] = pred[..., 2:4] * 60 + 1
    got = postprocess(pred, conf_thresh=0.05, iou_thresh=0.5, max_det=50, multi_label=multi_label)
    want = _postprocess_ref(pred.double(), 0.05, 0.5, 50, multi_label)
    for g, w in zip(got, want, strict=True):
        assert len(w) == 50
        torch.testing.assert_close(g, torch.tensor(w, dtype=torch.float32))


@pytest.mark.parametrize(
    ("pred", "kwargs", "match"),
    [
        (torch.zeros(2, 10, 5), {}, r"\[B, N, 5 \+ C\].*got \[2, 10, 5\]"),
        (torch.zeros(10, 6), {}, r"got \[10, 6\]"),
        (torch.zeros(1, 10, 6), {"max_det": 0}, "max_det must be >= 1, got 0"),
        (torch.zeros(1, 10, 6), {"conf_thresh": 1.0}, r"conf_thresh .*got 1.0"),
    ],
)
def test_postprocess_rejects_bad_inputs(pred, kwargs, match):
    with pytest.raises(ValueError, match=match):
        postprocess(pred, **kwargs)


# ---------------------------------------------------------------------------------------------
# COCO mAP

_SIZE = (100, 100)


def _gt(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def _dt(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def test_perfect_predictions_score_one():
    gts = [
        _gt([0, 0, 0, 10, 10], [1, 20, 20, 60, 50], [1, 70, 10, 90, 30]),
        _gt([2, 5, 5, 95, 95]),
        _gt(),
    ]
    dets = [torch.cat((g[:, 1:], torch.ones(len(g), 1), g[:, :1]), dim=1) for g in gts]
    result = coco_map(dets, gts, [_SIZE] * 3, ["a", "b", "c", "unused"])
    assert result.map50 == pytest.approx(1.0, abs=1e-12)
    assert result.map == pytest.approx(1.0, abs=1e-12)
    assert result.per_class["b"] == ClassAP(ap50=pytest.approx(1.0), ap=pytest.approx(1.0), n_gt=2)
    assert result.per_class["unused"] == ClassAP(ap50=None, ap=None, n_gt=0)


def test_hand_computed_ap():
    # One class, GT A = [0, 0, 10, 10] and B = [20, 0, 30, 10].
    #   d1 score .9: A exactly (IoU 1.0)                       -> TP at every threshold
    #   d2 score .8: [0, 0, 10, 8], IoU .8 with the taken A   -> FP at every threshold
    #   d3 score .7: [20, 0, 30, 6.2], IoU .62 with B          -> TP at .50/.55/.60 only
    # Where d3 matches: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; the monotone envelope is
    # 1 up to recall 1/2 (51 of COCO's 101 recall points: 0.00 .. 0.50) and 2/3 above (50).
    # Elsewhere recall never passes 1/2: 51 points at precision 1, 50 at 0.
    gts = [_gt([0, 0, 0, 10, 10], [0, 20, 0, 30, 10])]
    dets = [_dt([0, 0, 10, 10, 0.9, 0], [0, 0, 10, 8, 0.8, 0], [20, 0, 30, 6.2, 0.7, 0])]
    ap_matched = (51 * 1.0 + 50 * 2 / 3) / 101
    ap_unmatched = 51 / 101
    result = coco_map(dets, gts, [_SIZE], ["a"])
    assert result.map50 == pytest.approx(ap_matched, abs=1e-6)
    assert result.map == pytest.approx((3 * ap_matched + 7 * ap_unmatched) / 10, abs=1e-6)


@pytest.mark.parametrize(
    ("height", "map50", "map5095"),
    [(6.2, 1.0, 0.3), (5.2, 1.0, 0.1), (4.8, 0.0, 0.0), (9.7, 1.0, 1.0)],
)
def test_iou_between_thresholds_counts_only_below_it(height, map50, map5095):
    # Detection [0, 0, 10, height] on GT [0, 0, 10, 10] has IoU height / 10: it matches at
    # the thresholds .50, .55, ... up to that IoU and misses at the rest, each worth 1/10.
    det = _dt([0, 0, 10, height, 0.9, 0])
    result = coco_map([det], [_gt([0, 0, 0, 10, 10])], [_SIZE], ["a"])
    assert result.map50 == pytest.approx(map50, abs=1e-6)
    assert result.map == pytest.approx(map5095, abs=1e-6)


def test_false_positive_on_image_without_ground_truth_counts():
    # The higher-scored detection sits on an image with no ground truth: precision 0 then 1/2
    # at recall 0 then 1, so the envelope is 1/2 at every recall point.
    gts = [_gt([0, 0, 0, 10, 10]), _gt()]
    dets = [_dt([0, 0, 10, 10, 0.5, 0]), _dt([0, 0, 10, 10, 0.9, 0])]
    result = coco_map(dets, gts, [_SIZE, _SIZE], ["a"])
    assert result.map50 == pytest.approx(0.5, abs=1e-6)
    assert result.map == pytest.approx(0.5, abs=1e-6)


def test_max_dets_caps_detections_per_image():
    gts = [_gt([0, 0, 0, 10, 10])]
    dets = [_dt([50, 50, 60, 60, 0.9, 0], [0, 0, 10, 10, 0.8, 0])]
    assert coco_map(dets, gts, [_SIZE], ["a"]).map50 == pytest.approx(0.5, abs=1e-6)
    assert coco_map(dets, gts, [_SIZE], ["a"], max_dets=1).map50 == 0.0


def test_class_mismatch_scores_zero():
    result = coco_map([_dt([0, 0, 10, 10, 0.9, 1])], [_gt([0, 0, 0, 10, 10])], [_SIZE], ["a", "b"])
    assert (result.map50, result.map) == (0.0, 0.0)
    assert result.per_class["a"] == ClassAP(ap50=0.0, ap=0.0, n_gt=1)
    assert result.per_class["b"] == ClassAP(ap50=None, ap=None, n_gt=0)


def test_class_without_ground_truth_is_left_out_of_the_mean():
    gts = [_gt([0, 0, 0, 10, 10], [1, 20, 20, 30, 30])]
    dets = [_dt([0, 0, 10, 10, 0.9, 0], [50, 50, 60, 60, 0.9, 2])]
    result = coco_map(dets, gts, [_SIZE], ["a", "b", "c"])
    # a: 1.0, b: 0.0 (missed), c: no ground truth -> mean over a and b only.
    assert result.map50 == pytest.approx(0.5, abs=1e-6)
    assert result.per_class["c"].ap50 is None


@pytest.mark.parametrize(
    ("dets", "gts", "sizes"),
    [
        ([_dt()], [_gt([0, 0, 0, 10, 10])], [_SIZE]),  # no detections at all
        ([_dt([0, 0, 10, 10, 0.9, 0])], [_gt()], [_SIZE]),  # no ground truth at all
        ([_dt()], [_gt()], [_SIZE]),
        ([], [], []),  # no images
    ],
)
def test_empty_cases_give_zero(dets, gts, sizes):
    result = coco_map(dets, gts, sizes, ["a"])
    assert (result.map50, result.map) == (0.0, 0.0)


def test_library_is_silent(capsys):
    coco_map([_dt([0, 0, 10, 10, 0.9, 0])], [_gt([0, 0, 0, 10, 10])], [_SIZE], ["a"])
    assert capsys.readouterr().out == ""


def test_accumulator_equals_one_shot():
    rng = random.Random(5)
    gts, dets, sizes = [], [], []
    for _ in range(6):
        g = [
            [rng.randrange(3), x, y, x + rng.randint(5, 30), y + rng.randint(5, 30)]
            for x, y in ((rng.randint(0, 60), rng.randint(0, 60)) for _ in range(rng.randint(0, 4)))
        ]
        d = [
            [b[1] + rng.uniform(-3, 3), b[2], b[3], b[4] + rng.uniform(-3, 3), rng.random(), b[0]]
            for b in g
            if rng.random() < 0.8
        ]
        d += [[10, 10, 40, 40, rng.random(), rng.randrange(3)]]
        gts.append(_gt(*g)), dets.append(_dt(*d)), sizes.append((rng.randint(90, 120), 100))
    accumulator = MapAccumulator(["a", "b", "c"])
    for d, g, s in zip(dets, gts, sizes, strict=True):
        accumulator.update(d, g, s)
    assert len(accumulator) == 6
    assert accumulator.compute() == coco_map(dets, gts, sizes, ["a", "b", "c"])
    accumulator.reset()
    assert len(accumulator) == 0 and accumulator.compute().map == 0.0


@pytest.mark.parametrize(
    ("dets", "gts", "size", "match"),
    [
        (torch.zeros(2, 5), _gt(), _SIZE, r"image 0: detections .*\[K, 6\].*got \[2, 5\]"),
        (_dt(), torch.zeros(5), _SIZE, r"image 0: ground truth .*\[M, 5\].*got \[5\]"),
        (_dt(), _gt([3, 0, 0, 1, 1]), _SIZE, r"ground-truth class ids .*\[0, 2\), got \[3.0\]"),
        (_dt([0, 0, 1, 1, 0.5, 0.5]), _gt(), _SIZE, r"detection class ids .*got \[0.5\]"),
        (_dt([5, 0, 1, 1, 0.5, 0]), _gt(), _SIZE, r"x2 >= x1 .*got \[\[5.0, 0.0, 1.0, 1.0\]\]"),
        (_dt(), _gt(), (0, 100), r"\(height, width\) > 0, got \(0, 100\)"),
    ],
)
def test_accumulator_rejects_bad_images(dets, gts, size, match):
    with pytest.raises(ValueError, match=match):
        MapAccumulator(["a", "b"]).update(dets, gts, size)


def test_coco_map_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"1 detections, 2 ground truths and 1 image sizes"):
        coco_map([_dt()], [_gt(), _gt()], [_SIZE], ["a"])
    with pytest.raises(ValueError, match=r"duplicates \['a'\]"):
        coco_map([], [], [], ["a", "b", "a"])
    with pytest.raises(ValueError, match="class_names is empty"):
        MapAccumulator([])


def test_format_map_table():
    gts = [_gt([0, 0, 0, 10, 10], [0, 20, 0, 30, 10])]
    dets = [_dt([0, 0, 10, 10, 0.9, 0])]
    table = format_map_table(coco_map(dets, gts, [_SIZE], ["person", "dog"]))
    assert table.splitlines() == [
        "class   n_gt   AP@.5  AP@.5:.95",
        "person     2  0.5050     0.5050",
        "dog        0       -          -",
        "all        2  0.5050     0.5050",
    ]
