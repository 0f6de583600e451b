"""The YOLO decode (common.boxes.YoloDecode) against Darknet's formulas computed by hand, and
the loss and inference decoding through it alike: scale_x_y, new_coords, yolov4-tiny."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import ROOT

from common.boxes import cxcywh_to_xyxy, wh_iou, xyxy_to_cxcywh
from common.errors import UserError
from darknet import CfgError, Darknet, parse_cfg, parse_cfg_text
from darknet.sections import YoloSection
from engine.loss import LossConfig, YoloLoss

# A 32 px input max-pooled to a 2x2 grid (stride 16) feeding one [yolo] head: one anchor
# (10, 14), one class. The tests feed the head known inputs directly.
HEAD_CFG = """[net]
width=32
height=32
channels=3

[maxpool]
size=16
stride=16

[convolutional]
size=1
filters=6
activation={activation}

[yolo]
mask=0
anchors=10,14
classes=1
num=1
{keys}
"""
DEMO = ROOT / "cfgs" / "demo.cfg"
YOLOV4_TINY = ROOT / "tests" / "data" / "darknet" / "yolov4-tiny.cfg"


def head(keys: str = "", activation: str = "linear") -> torch.nn.Module:
    model = Darknet(parse_cfg_text(HEAD_CFG.format(keys=keys, activation=activation)))
    return model.eval().yolo_layers[0]


def head_input(values: list[float], cell: tuple[int, int]) -> torch.Tensor:
    """``[1, 6, 2, 2]`` head input: zeros, and ``values`` at grid cell (x, y)."""
    x = torch.zeros(1, 6, 2, 2)
    x[0, :, cell[1], cell[0]] = torch.tensor(values)
    return x


def sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


@pytest.mark.parametrize("s", [1.0, 1.05, 2.0])
def test_decode_follows_darknets_scale_x_y_formula(s):
    """AlexeyAB: centre = (s * sigmoid(t) - (s - 1) / 2 + cell) * stride, by hand."""
    t = [3.0, -2.0, 0.5, -0.25, 2.0, -1.0]
    out = head(f"scale_x_y={s}")(head_input(t, cell=(1, 0)))  # [1, 4 cells, 6]
    got = out[0, 1].tolist()  # cell (x=1, y=0) is the second in row-major order
    want = [(s * sigmoid(3.0) - (s - 1) / 2 + 1) * 16,
            (s * sigmoid(-2.0) - (s - 1) / 2 + 0) * 16,
            10 * math.exp(0.5), 14 * math.exp(-0.25), sigmoid(2.0), sigmoid(-1.0)]
    assert got == pytest.approx(want, rel=1e-6)
    if s != 1:  # the scale moves the centre: a decode ignoring it would fail above
        assert abs(got[0] - (sigmoid(3.0) + 1) * 16) > 0.3


def test_new_coords_decodes_activated_inputs_without_sigmoid_or_exp():
    """AlexeyAB new_coords=1: the conv in front applied the logistic; the layer takes
    x = s * t - (s - 1) / 2 + cell, w = (2 t)^2 * anchor, scores = t."""
    t = [0.8, 0.1, 0.6, 0.3, 0.9, 0.2]
    layer = head("scale_x_y=2.0\nnew_coords=1", activation="logistic")
    got = layer(head_input(t, cell=(1, 0)))[0, 1].tolist()
    want = [(2 * 0.8 - 0.5 + 1) * 16, (2 * 0.1 - 0.5 + 0) * 16, (2 * 0.6) ** 2 * 10,
            (2 * 0.3) ** 2 * 14, 0.9, 0.2]
    assert got == pytest.approx(want, rel=1e-6)


def test_training_a_new_coords_head_is_refused_with_a_clear_error():
    layer = head("new_coords=1", activation="logistic")
    with pytest.raises(UserError, match=r"\[yolo\] layer 2 has new_coords=1 .*cannot train"):
        YoloLoss([layer])


def test_new_coords_outside_0_1_is_a_cfg_error_with_file_and_line():
    with pytest.raises(CfgError, match=r"h\.cfg:20: \[yolo\] bad value new_coords='2': "
                                       r"expected one of 0, 1"):
        parse_cfg_text(HEAD_CFG.format(keys="new_coords=2", activation="linear"), "h.cfg")


def test_inference_does_not_cap_exp():
    """Inference is Darknet's decode; only the loss caps tw (at log(1000), for training)."""
    got = head()(head_input([0, 0, 8.0, 0, 0, 0], cell=(0, 0)))[0, 0, 2].item()
    assert got == pytest.approx(10 * math.exp(8.0), rel=1e-6)


def with_keys(path, keys: str):
    """The cfg at ``path`` with ``keys`` added to every [yolo] section."""
    text = path.read_text().replace("[yolo]\n", f"[yolo]\n{keys}\n")
    return Darknet(parse_cfg_text(text, str(path)))


def neighbour_case(model):
    """Head-1 outputs of demo.cfg (stride 16, anchor 0 = 20x19 px) and one 20x19 target at
    cell (3, 4) offset (0.9, 0.5). Cell (3, 4) predicts it exactly when scale_x_y = 2 (2 *
    0.7 - 0.5 = 0.9); cell (4, 4) reaches back onto it only through the scale (2 * 0.2 -
    0.5 = -0.1 -> x 3.9), while plain sigmoid puts it at 4.2 (IoU 0.61 < ignore 0.7)."""
    outputs = [torch.full((1, h.num_anchors, 128 // int(h.stride), 128 // int(h.stride),
                           5 + h.num_classes), -10.0) for h in model.yolo_layers]
    out = outputs[1]
    out[0, 0, 4, 3, :4] = torch.tensor([math.log(0.7 / 0.3), 0.0, 0.0, 0.0])
    out[0, 0, 4, 4, :4] = torch.tensor([math.log(0.2 / 0.8), 0.0, 0.0, 0.0])
    targets = torch.tensor([[0, 2, 3.9 * 16 / 128, 4.5 * 16 / 128, 20 / 128, 19 / 128]])
    return [o.requires_grad_(True) for o in outputs], targets


@pytest.mark.parametrize("s", [1.0, 2.0])
def test_the_loss_decodes_with_scale_x_y(s):
    model = with_keys(DEMO, f"scale_x_y={s}")
    loss = YoloLoss(model.yolo_layers, LossConfig(anchor_t=1.0))  # best anchor only
    outputs, targets = neighbour_case(model)
    total, parts = loss(outputs, targets)
    total.backward()
    neighbour_obj_grad = outputs[1].grad[0, 0, 4, 4, 4].item()
    if s == 2.0:
        assert parts[0].item() == pytest.approx(0.0, abs=1e-6)  # box: exact under the scale
        assert neighbour_obj_grad == 0.0  # ignored: its scaled box matches the truth
    else:
        assert parts[0].item() > 1e-3  # the same logits miss the box without the scale
        assert neighbour_obj_grad > 0  # not ignored: pushed down


def test_loss_and_inference_decode_the_same_boxes():
    """Targets made of a model's own eval-mode boxes give box loss 0 exactly when the loss
    decodes like inference; the same targets against a decode without scale_x_y do not."""
    scaled = with_keys(DEMO, "scale_x_y=1.05").eval()
    g = torch.Generator().manual_seed(0)
    # centres well off 0.5, where the scale shows; sizes near the anchors, so that each
    # prediction is its own box's best anchor
    gain = torch.tensor([2.0, 2.0, 0.3, 0.3] + [1.0] * (1 + scaled.num_classes))
    raw = [torch.randn(2, h.num_anchors, 128 // int(h.stride), 128 // int(h.stride),
                       5 + h.num_classes, generator=g) * gain for h in scaled.yolo_layers]
    rows = []
    anchors = torch.cat([h.anchors for h in scaled.yolo_layers])
    offset = 0
    for layer, p in zip(scaled.yolo_layers, raw, strict=True):
        boxes = layer.decode(p)[..., :4].view(p.shape[:4] + (4,))
        for b, a, j, i in itertools.product(range(2), range(3), range(4), range(4)):
            box = boxes[b, a, j, i]
            in_cell = box[:2].div(layer.stride).floor().tolist() == [i, j]
            best = wh_iou(box[None, 2:], anchors).argmax().item() == offset + a
            if in_cell and best:  # the loss will assign this very prediction
                rows.append([b, 0, *(box / 128).tolist()])
        offset += layer.num_anchors
    assert len(rows) >= 50
    targets = torch.tensor(sorted(rows))
    config = LossConfig(anchor_t=1.0)
    box_loss = YoloLoss(scaled.yolo_layers, config)(raw, targets)[1][0].item()
    assert box_loss == pytest.approx(0.0, abs=1e-6)
    plain = Darknet(DEMO)
    assert YoloLoss(plain.yolo_layers, config)(raw, targets)[1][0].item() > 1e-4


def test_yolov4_tiny_interprets_scale_x_y_and_runs():
    cfg = parse_cfg(YOLOV4_TINY)
    heads = [s for s in cfg.layers if isinstance(s, YoloSection)]
    assert [s.scale_x_y for s in heads] == [1.05, 1.05]
    assert all("scale_x_y" not in dict(s.extra) for s in heads)
    model = Darknet(cfg).eval()
    assert [h.coder.scale_x_y for h in model.yolo_layers] == [1.05, 1.05]
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape for o in outs] == [(1, 3 * 2 * 2, 85), (1, 3 * 4 * 4, 85)]


def test_box_formats_invert_each_other():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0], [0.0, 0.0, 0.5, 0.25]])
    cxcywh = xyxy_to_cxcywh(xyxy)
    assert cxcywh.tolist() == [[3.0, 6.0, 4.0, 8.0], [0.25, 0.125, 0.5, 0.25]]
    assert torch.equal(cxcywh_to_xyxy(cxcywh), xyxy)
