"""Batched inference over a validation loader -> COCO mAP (``evaluation.MapResult``).

Detections and ground truth are both mapped from the letterboxed canvas back to the original
image's pixels before matching, so the numbers do not depend on ``img_size`` padding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from common.boxes import cxcywh_to_xyxy
from evaluation import MapAccumulator, MapResult, postprocess
from evaluation.darknet_map import DarknetMapAccumulator
from yolodata import Batch, Letterbox


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    amp: bool = False,
    darknet: DarknetMapAccumulator | None = None,
) -> MapResult:
    """mAP@.5 and mAP@.5:.95 of ``model`` over ``batches`` (``yolodata.collate`` output).

    ``darknet``: also fed, from the same forward passes, with detections post-processed as
    Darknet's ``detector map`` does (its own confidence and NMS thresholds); call its
    ``compute()`` afterwards. The model is put in eval mode for the pass and restored
    afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    acc = MapAccumulator(class_names)
    autocast = (torch.autocast(device.type, dtype=torch.float16) if amp
                else contextlib.nullcontext())
    try:
        for batch in batches:
            images = batch.images.to(device, non_blocking=True)
            with autocast:
                outputs = model(images)
            outputs = [o.float() for o in outputs]
            _feed(acc, postprocess(outputs, conf_thres, iou_thres, max_det), batch,
                  images.shape[-1])
            if darknet is not None:  # every candidate: Darknet keeps no top-k
                _feed(darknet, postprocess(outputs, darknet.conf_thres, darknet.iou_thres,
                                           max_det=30000), batch, images.shape[-1])
    finally:
        model.train(was_training)
    return acc.compute()


def _feed(acc, dets: list[torch.Tensor], batch: Batch, size: int) -> None:
    """Each image's detections and ground truth, in original image pixels, into ``acc``."""
    targets = batch.targets
    for i, det in enumerate(dets):
        lb = Letterbox.fit(batch.orig_hw[i], size)
        det = det.cpu()
        gt = targets[targets[:, 0] == i]
        gt_xyxy = lb.to_original(cxcywh_to_xyxy(gt[:, 2:6]) * size)
        acc.update(torch.cat((lb.to_original(det[:, :4]), det[:, 4:6]), 1),
                   torch.cat((gt[:, 1:2], gt_xyxy), 1), batch.orig_hw[i])
