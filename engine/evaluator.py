"""Evaluating a detector on a data set: ``evaluate(model, data)`` -> :class:`Evaluation`.

Two layers, so that each concern is written once:

* :func:`evaluate` is what a script, ``main.py eval`` and ``main.py compare`` call: the data
  set named by ``data`` (``engine.data.load_data``: spec, class check, val split), a loader,
  and the batch loop below. Training reaches the same data function through ``engine.run``
  and the same loop through the trainer.
* :func:`evaluate_batches` is the loop: batched inference over a validation loader, NMS, COCO
  mAP (``evaluation.MapResult``). Detections and ground truth are both mapped from the
  letterboxed canvas back to the original image's pixels before matching, so the numbers do
  not depend on ``img_size`` padding.

**The predictor seam.** The loop never calls a model directly: it calls a *predictor*, any
callable mapping a float image batch ``[B, 3, H, W]`` (RGB in 0..1, letterboxed as the loader
gives it, on the CPU) to the decoded detections ``[B, N, 5 + C]`` (box centre x, y, width,
height in input pixels, objectness, class probabilities: what the exported ONNX file outputs,
``torch.cat(model(x), 1)`` of a ``Darknet`` in eval mode), with a ``num_classes`` attribute.
A torch module is wrapped as one (:func:`torch_predictor`: device, AMP, eval mode); an
onnxruntime session or an OpenVINO compiled model needs only that call to be evaluated by the
same loader and metric code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from common.boxes import cxcywh_to_xyxy
from common.errors import UserError
from evaluation import ClassAP, MapAccumulator, MapResult, postprocess
from evaluation.darknet_map import DarknetMapAccumulator, DarknetMapResult
from yolodata import Batch, DataSpec, Letterbox


@runtime_checkable
class Predictor(Protocol):
    """Images ``[B, 3, H, W]`` in 0..1 -> decoded detections ``[B, N, 5 + C]`` (see above)."""

    num_classes: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate`: the COCO mAP (``coco``) and how it was measured.

    Another metric (e.g. a Darknet-style mAP) is added as another field beside ``coco``, and
    to :meth:`as_dict`, so the callers that read ``map50``/``map`` keep working.
    """

    coco: MapResult
    images: int
    img_size: int
    seconds: float
    skipped: tuple[tuple[str, str], ...] = ()  # (image, reason) of unreadable images left out
    darknet: DarknetMapResult | None = None  # with evaluate(..., darknet=True)

    @property
    def map50(self) -> float:
        return self.coco.map50

    @property
    def map(self) -> float:
        return self.coco.map

    @property
    def per_class(self) -> dict[str, ClassAP]:
        return self.coco.per_class

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``main.py eval --json`` prints."""
        return {"map50": self.map50, "map": self.map,
                **({"darknet_map50": self.darknet.map50} if self.darknet else {}),
                "per_class": {name: {"ap50": c.ap50, "ap": c.ap, "n_gt": c.n_gt}
                              for name, c in self.per_class.items()},
                "images": self.images, "skipped": len(self.skipped),
                "img_size": self.img_size, "seconds": self.seconds}


class TorchPredictor:
    """A detector module (eval-mode ``Darknet`` forward: one tensor per head) as a predictor
    on ``device``, under float16 autocast when ``amp``."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", amp: bool = False):
        self.model, self.device, self.amp = model, torch.device(device), amp
        self.num_classes = getattr(model, "num_classes", None)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        autocast = (torch.autocast(self.device.type, dtype=torch.float16) if self.amp
                    else contextlib.nullcontext())
        with autocast:
            outputs = self.model(images.to(self.device, non_blocking=True))
        return torch.cat([o.float() for o in outputs], 1)


@contextlib.contextmanager
def torch_predictor(model: nn.Module | Predictor, device: torch.device | str = "cpu",
                    amp: bool = False) -> Iterator[Predictor]:
    """``model`` as a predictor for the ``with`` block: a module is put in eval mode (and
    restored after), anything else is taken as a predictor already."""
    if not isinstance(model, nn.Module):
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        yield TorchPredictor(model, device, amp)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_batches(
    model: nn.Module | Predictor,
    batches: Iterable[Batch],
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    amp: bool = False,
    darknet: DarknetMapAccumulator | None = None,
) -> MapResult:
    """mAP@.5 and mAP@.5:.95 of ``model`` (a module or a predictor) over ``batches``
    (``yolodata.collate`` output). A module is put in eval mode for the pass and restored.

    ``darknet``: also fed, from the same forward passes, with detections post-processed as
    Darknet's ``detector map`` does (its own confidence and NMS thresholds, no top-k); call
    its ``compute()`` afterwards."""
    acc = MapAccumulator(class_names)
    with torch_predictor(model, device, amp) as predict:
        for batch in batches:
            pred = torch.as_tensor(predict(batch.images))
            _feed(acc, postprocess(pred, conf_thres, iou_thres, max_det), batch)
            if darknet is not None:
                _feed(darknet, postprocess(pred, darknet.conf_thres, darknet.iou_thres,
                                           max_det=30000), batch)
    return acc.compute()


def _feed(acc, dets: list[torch.Tensor], batch: Batch) -> None:
    """Each image's detections and ground truth, in original image pixels, into ``acc``."""
    size = batch.images.shape[-1]
    targets = batch.targets
    for i, det in enumerate(dets):
        lb = Letterbox.fit(batch.orig_hw[i], size)
        det = det.cpu()
        gt = targets[targets[:, 0] == i]
        gt_xyxy = lb.to_original(cxcywh_to_xyxy(gt[:, 2:6]) * size)
        acc.update(torch.cat((lb.to_original(det[:, :4]), det[:, 4:6]), 1),
                   torch.cat((gt[:, 1:2], gt_xyxy), 1), batch.orig_hw[i])


def evaluate(model: nn.Module | Predictor, data: str | Path | DataSpec = "demo",
             img_size: int | None = None, batch_size: int = 32, conf_thres: float = 0.001,
             iou_thres: float = 0.6, device: str | None = None,
             workers: int | None = None, darknet: bool = False) -> Evaluation:
    """COCO mAP of ``model`` on the val split of ``data`` (a data yaml, a Darknet ``.data``
    file, ``"demo"`` or a loaded ``DataSpec``), letterboxed to ``img_size`` (default: a
    ``Darknet``'s cfg height; a predictor must be given one).

    ``model``: a ``Darknet`` (or any module with its eval forward), run on ``device`` (None:
    CUDA when available, with AMP), or a :class:`Predictor` (see the module docstring).
    ``workers``: loader processes (None: 0 on the CPU, up to 8 with CUDA).
    ``darknet``: also Darknet's ``detector map`` mAP@.5 (``evaluation.darknet_map``).
    """
    from engine.data import EpochLoader, load_data
    from engine.distributed import DistInfo, loader_workers, select_device

    if batch_size < 1 or (workers or 0) < 0:
        raise UserError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    if not 0 <= conf_thres < 1 or not 0 <= iou_thres <= 1:
        raise UserError("conf_thres must be in [0, 1) and iou_thres in [0, 1]")
    img_size = img_size or _cfg_height(model)
    torch_device = select_device(device)
    workers = loader_workers(DistInfo(device=torch_device), workers)
    loaded = load_data(data, img_size, model.num_classes, train=False)
    loader = EpochLoader(loaded.val, batch_size, shuffle=False, workers=workers)
    if isinstance(model, nn.Module):
        model.to(torch_device)
    start = time.perf_counter()
    extra = DarknetMapAccumulator(loaded.names) if darknet else None
    result = evaluate_batches(model, loader, loaded.names, torch_device, conf_thres, iou_thres,
                              amp=torch_device.type == "cuda", darknet=extra)
    return Evaluation(result, len(loaded.val), img_size, time.perf_counter() - start,
                      loaded.skipped, extra.compute() if extra else None)


def _cfg_height(model: nn.Module | Predictor) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise UserError("img_size is needed to evaluate a predictor without a cfg")
    return cfg.net.height
