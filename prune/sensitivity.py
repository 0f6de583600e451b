"""Sensitivity analysis: what removing each block costs, measured rather than guessed.

Layer pruning's field criterion ranks blocks by the mean |gamma| of the BN before the add
(``prune.blocks``), a proxy for what the block adds. Here each removable block is cut alone
(``prune.block_cut.cut_blocks``, its ``act(beta)`` folded as ``prune`` folds it), the cut
model's BatchNorms are recalibrated (``prune.recalibrate``) and its YOLO loss is measured on a
calibration set; a block's sensitivity is that loss less the dense model's, recalibrated on the
same images (PaddleSlim's and NNI's sensitivity analysis, DESIGN.md section 9).
``prune --block-ranking sensitivity`` removes the least sensitive blocks first.

A block whose pre-add BN has gamma = beta = 0 adds nothing, in train mode and in eval mode
alike, so the cut model computes what the dense one does: its sensitivity is 0.

The loss is the training loss (``engine.loss.YoloLoss``) of the model in eval mode on raw
logits, summed over the calibration batches and divided by their images: cheaper and smoother
than an mAP over a few hundred images, and defined for a cut that destroys the detections.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from darknet.model import Darknet

from .block_cut import cut_blocks
from .blocks import Block, block_scores, find_blocks
from .errors import PruneError
from .recalibrate import recalibrate_bn
from .rules import build_channel_graph

if TYPE_CHECKING:
    from yolodata import Batch

METRIC = "loss"


@dataclass(frozen=True)
class BlockSensitivity:
    layer: int  # the [res2net], or the unit's [shortcut] (dense cfg)
    kind: str
    bn: str  # the BN before the add
    gamma: float  # its mean |gamma|: the default criterion, for comparison
    loss: float  # calibration loss of the model without this block
    sensitivity: float  # ``loss`` less the dense model's: what removing the block costs


@dataclass(frozen=True)
class Sensitivity:
    """Every removable block's measured sensitivity (``sensitivity.json``)."""

    metric: str  # METRIC: the YOLO loss per calibration image
    images: int  # calibration images: the BNs are recalibrated and the loss measured on them
    recalibrated: bool  # were the BNs recalibrated before each measurement
    dense_loss: float
    blocks: tuple[BlockSensitivity, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "sensitivity") -> Sensitivity:
        """Read :meth:`as_dict`'s form; PruneError naming ``source`` when it is not that."""
        try:
            blocks = tuple(BlockSensitivity(int(b["layer"]), str(b["kind"]), str(b["bn"]),
                                            float(b["gamma"]), float(b["loss"]),
                                            float(b["sensitivity"])) for b in d["blocks"])
            return cls(str(d["metric"]), int(d["images"]), bool(d["recalibrated"]),
                       float(d["dense_loss"]), blocks)
        except (KeyError, TypeError, ValueError) as e:
            raise PruneError(f"{source}: not a sensitivity file of main.py analyze "
                             f"--sensitivity ({type(e).__name__}: {e})") from None

    def scores(self, blocks: Sequence[Block], source: str = "sensitivity") -> np.ndarray:
        """Per block of ``blocks`` (``find_blocks`` of the cfg to prune): its sensitivity."""
        by_layer = {b.layer: b for b in self.blocks}
        missing = [b.layer for b in blocks if b.layer not in by_layer
                   or by_layer[b.layer].bn != b.bn]
        if missing or len(by_layer) != len(blocks):
            raise PruneError(f"{source} was measured on another cfg: its blocks are at layers "
                             f"{sorted(by_layer)}, the cfg's at {[b.layer for b in blocks]}")
        return np.array([by_layer[b.layer].sensitivity for b in blocks], dtype=np.float64)


@torch.no_grad()
def calibration_loss(model: Darknet, batches: Sequence[Batch]) -> float:
    """The YOLO loss per image of ``model`` (eval mode, raw logits) over ``batches``."""
    from engine.loss import YoloLoss

    device = next(model.parameters()).device
    loss_fn = YoloLoss(model.yolo_layers).to(device)
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        outputs = model(batch.images.to(device), raw=True)
        loss, _ = loss_fn(outputs, batch.targets.to(device))
        total, count = total + float(loss), count + len(batch.images)
    return total / count


def _score(model: Darknet, batches: Sequence[Batch], recalibrate: bool) -> float:
    if recalibrate:
        recalibrate_bn(model, (b.images for b in batches))
    return calibration_loss(model, batches)


OnBlock = Callable[[int, int, BlockSensitivity], None]  # (done, of, result)


def block_sensitivity(model: Darknet, batches: Sequence[Batch], recalibrate: bool = True,
                      on_block: OnBlock | None = None) -> Sensitivity:
    """Cut each removable block of ``model`` alone and measure the loss on ``batches``
    (after recalibrating the BNs on their images, unless ``recalibrate`` is False).

    ``model`` is not modified; ``on_block`` hears of each block as it is measured.
    """
    if not batches:
        raise ValueError("sensitivity analysis needs at least one calibration batch")
    graph = build_channel_graph(model.cfg)
    blocks = find_blocks(model.cfg, graph)
    gammas = block_scores(model, blocks)
    dense_loss = _score(copy.deepcopy(model), batches, recalibrate)
    results = []
    for i, block in enumerate(blocks):
        cut, *_ = cut_blocks(model, [block], fold=True, graph=graph)
        loss = _score(cut, batches, recalibrate)
        results.append(BlockSensitivity(block.layer, block.kind, block.bn, float(gammas[i]),
                                        loss, loss - dense_loss))
        if on_block is not None:
            on_block(i + 1, len(blocks), results[-1])
    images = sum(len(b.images) for b in batches)
    return Sensitivity(METRIC, images, recalibrate, dense_loss, tuple(results))
