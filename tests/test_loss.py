"""The YOLOv3 loss: assignment hand-checked on known boxes, components against oracles."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ROOT

from darknet import Darknet
from engine.loss import LossConfig, YoloLoss, box_giou, init_detection_biases, wh_iou

DEMO = ROOT / "cfgs" / "demo.cfg"
# demo.cfg: 128 px; head 0 stride 32 anchors (52,50) (70,72) (100,96); head 1 stride 16
# (20,19) (28,27) (38,40); head 2 stride 8 (6,6) (10,9) (14,14).


@pytest.fixture(scope="module")
def demo():
    return Darknet(DEMO)


def raw_outputs(model, batch=2, size=128, fill=0.0):
    """Train-mode shaped outputs without running the network."""
    return [torch.full((batch, h.num_anchors, size // int(h.stride), size // int(h.stride),
                        5 + h.num_classes), fill) for h in model.yolo_layers]


def test_best_anchor_and_cell_for_a_known_box(demo):
    loss = YoloLoss(demo.yolo_layers, LossConfig(anchor_t=1.0))  # best anchor only
    # A 20x19 px box centred at (50, 70) px: exactly anchor (20,19) = head 1, anchor 0;
    # stride 16 puts its centre in cell column 50 // 16 = 3, row 70 // 16 = 4.
    targets = torch.tensor([[1, 2, 50 / 128, 70 / 128, 20 / 128, 19 / 128]])
    per_head = loss.assign_targets(raw_outputs(demo), targets)
    assert [len(a.b) for a in per_head] == [0, 1, 0]
    a = per_head[1]
    assert (a.b.item(), a.a.item(), a.gj.item(), a.gi.item(), a.cls.item()) == (1, 0, 4, 3, 2)
    torch.testing.assert_close(a.box, torch.tensor([[50 / 16, 70 / 16, 20 / 16, 19 / 16]]))


def test_large_and_small_boxes_go_to_coarse_and_fine_heads(demo):
    loss = YoloLoss(demo.yolo_layers, LossConfig(anchor_t=1.0))
    targets = torch.tensor([[0, 0, 0.5, 0.5, 95 / 128, 100 / 128],  # -> (100, 96), head 0
                            [0, 1, 0.99, 0.01, 6 / 128, 7 / 128]])  # -> (6, 6), head 2, corner
    per_head = loss.assign_targets(raw_outputs(demo), targets)
    assert [a.target.tolist() for a in per_head] == [[0], [], [1]]
    assert (per_head[0].a.item(), per_head[0].gj.item(), per_head[0].gi.item()) == (2, 2, 2)
    assert (per_head[2].a.item(), per_head[2].gj.item(), per_head[2].gi.item()) == (0, 0, 15)


def test_extra_anchors_above_threshold_match_a_brute_force_oracle(demo):
    cfg = LossConfig(anchor_t=0.3)
    loss = YoloLoss(demo.yolo_layers, cfg)
    g = torch.Generator().manual_seed(0)
    n = 40
    targets = torch.cat((torch.randint(0, 2, (n, 1), generator=g).float(),
                         torch.randint(0, 4, (n, 1), generator=g).float(),
                         torch.rand(n, 2, generator=g),
                         torch.rand(n, 2, generator=g) * 0.8 + 0.03), 1)
    got = {(int(a.target[i]), k, int(a.a[i]), int(a.gj[i]), int(a.gi[i]))
           for k, a in enumerate(loss.assign_targets(raw_outputs(demo), targets))
           for i in range(len(a.b))}
    want = set()
    for t, (_, _, cx, cy, w, h) in enumerate(targets.tolist()):
        ious = []
        for k, head in enumerate(demo.yolo_layers):
            for a, (aw, ah) in enumerate(head.anchors.tolist()):
                inter = min(w * 128, aw) * min(h * 128, ah)
                ious.append((inter / (w * h * 128 * 128 + aw * ah - inter), k, a, head.stride))
        best = max(ious)
        for iou, k, a, stride in ious:
            if iou > cfg.anchor_t or (iou, k, a, stride) == best:
                cells = 128 // int(stride)
                want.add((t, k, a, min(int(cy * 128 / stride), cells - 1),
                          min(int(cx * 128 / stride), cells - 1)))
    assert got == want
    assert len(got) > n  # the threshold really adds anchors


def test_giou_against_hand_computed_values():
    a = torch.tensor([[1.0, 1.0, 2.0, 2.0]])  # corners (0,0)-(2,2)
    b = torch.tensor([[2.0, 1.0, 2.0, 2.0]])  # corners (1,0)-(3,2): inter 2, union 6, hull 6
    iou, giou = box_giou(a, b)
    assert iou.item() == pytest.approx(2 / 6) and giou.item() == pytest.approx(2 / 6)
    c = torch.tensor([[4.0, 4.0, 2.0, 2.0]])  # corners (3,3)-(5,5): disjoint, hull 25
    iou, giou = box_giou(a, c)
    assert iou.item() == 0 and giou.item() == pytest.approx(-(25 - 8) / 25)
    assert wh_iou(torch.tensor([[2.0, 4.0]]), torch.tensor([[4.0, 2.0]])).item() == \
        pytest.approx(4 / 12)


def test_perfect_prediction_has_zero_box_loss_and_ignore_spares_good_neighbours(demo):
    loss = YoloLoss(demo.yolo_layers, LossConfig(anchor_t=1.0, obj_iou=0.0))
    outputs = raw_outputs(demo, batch=1, fill=-10.0)  # objectness ~0 everywhere
    # box of exactly anchor (20, 19) centred in cell (3, 4) of head 1 at offset 0.5
    targets = torch.tensor([[0, 2, 3.5 * 16 / 128, 4.5 * 16 / 128, 20 / 128, 19 / 128]])
    head = outputs[1]
    head[0, 0, 4, 3, :4] = 0.0  # sigmoid(0) = 0.5 offset, exp(0) = anchor size
    head[0, 0, 4, 3, 4] = 10.0  # objectness ~1
    head[0, 0, 4, 3, 5:] = torch.tensor([-10.0, -10.0, 10.0, -10.0])  # class 2
    # anchor 1 of the same cell, same box shape: IoU with the truth ~0.95 > ignore 0.7
    head[0, 1, 4, 3, :4] = torch.tensor([0.0, 0.0, math.log(20 / 28), math.log(19 / 27)])
    outputs = [o.requires_grad_(True) for o in outputs]
    total, parts = loss(outputs, targets)
    assert parts[0].item() == pytest.approx(0.0, abs=1e-6)  # box
    assert parts[2].item() == pytest.approx(0.0, abs=1e-3)  # class
    total.backward()
    grad = outputs[1].grad
    assert grad[0, 1, 4, 3, 4].item() == 0.0  # ignored: no objectness gradient
    assert grad[0, 2, 4, 3, 4].item() > 0  # a poor anchor at the same cell is pushed down
    assert grad[0, 0, 4, 3, 4].item() < 0  # the responsible one is pushed up


def test_loss_is_batch_order_invariant_and_differentiable(demo):
    torch.manual_seed(0)
    demo.train()
    images = torch.rand(3, 3, 128, 128)
    targets = torch.tensor([[2, 0, 0.3, 0.4, 0.2, 0.25], [0, 1, 0.6, 0.6, 0.05, 0.06],
                            [2, 3, 0.7, 0.2, 0.5, 0.4], [1, 2, 0.5, 0.5, 0.3, 0.3]])
    loss = YoloLoss(demo.yolo_layers)
    outputs = demo(images)
    total, parts = loss(outputs, targets)
    shuffled, _ = loss(outputs, targets[torch.tensor([3, 1, 0, 2])])
    torch.testing.assert_close(total, shuffled)
    assert parts.shape == (3,) and (parts > 0).all()
    total.backward()
    assert all(p.grad is not None for p in demo.parameters())
    empty, _ = loss(outputs, torch.zeros(0, 6))
    assert empty.item() > 0  # objectness alone


def test_detection_bias_init_sets_low_objectness_prior():
    model = Darknet(DEMO)
    init_detection_biases(model, 128)
    model.eval()
    out = torch.cat(model(torch.rand(1, 3, 128, 128)), 1)
    # ~8 objects per head spread over all its cells: mean objectness far below 0.5
    assert out[..., 4].mean().item() < 0.1
