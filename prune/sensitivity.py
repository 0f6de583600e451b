"""Sensitivity analysis: what removing each block costs, measured rather than guessed.

Layer pruning's field criterion ranks blocks by the mean |gamma| of the BN before the add
(``prune.blocks``), a proxy for what the block adds. Here each removable block is cut alone
(``prune.block_cut.cut_blocks``, its ``act(beta)`` folded as ``prune`` folds it), the cut
model's BatchNorms are recalibrated (``prune.recalibrate``) and its YOLO loss is measured on a
calibration set; a block's sensitivity is that loss less the dense model's, recalibrated on the
same images (the sensitivity analysis of PaddleSlim and NNI).
``prune --block-ranking sensitivity`` removes the least sensitive blocks first.

Per prunable layer, at a few ratios r, the same is measured with the r lowest-|gamma| share of
the layer's prunable coupled channels masked (gamma and beta zeroed in every BN the channel
spans: the channel cut, without the fold of its ``act(beta)``, which recalibration absorbs for
1x1 readers). Residual chains are left out (one channel space over many layers: ``--scope
inner``'s channels). That table says which layers tolerate thinning; the global ratio does not
read it.

A block whose pre-add BN has gamma = beta = 0 adds nothing, in train mode and in eval mode
alike, so the cut model computes what the dense one does: its sensitivity is 0.

The loss is the training loss (``engine.loss.YoloLoss``) of the model in eval mode on raw
logits, summed over the calibration batches and divided by their images: cheaper and smoother
than an mAP over a few hundred images, and defined for a cut that destroys the detections.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from darknet.model import Darknet

from .analysis import analyze
from .block_cut import cut_blocks
from .blocks import Block, block_scores, find_blocks
from .errors import PruneError
from .importance import abs_gammas, importance_of
from .recalibrate import recalibrate_bn
from .rules import build_channel_graph
from .settings import Scope

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
class LayerSensitivity:
    layer: int
    channels: int  # its prunable coupled channels
    ratio: float
    removed: int  # of them masked: the lowest mean |gamma|
    loss: float
    sensitivity: float  # ``loss`` less the dense model's


@dataclass(frozen=True)
class Sensitivity:
    """Every removable block's measured sensitivity (``sensitivity.json``)."""

    metric: str  # METRIC: the YOLO loss per calibration image
    images: int  # calibration images: the BNs are recalibrated and the loss measured on them
    recalibrated: bool  # were the BNs recalibrated before each measurement
    dense_loss: float
    blocks: tuple[BlockSensitivity, ...]
    layers: tuple[LayerSensitivity, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "sensitivity") -> Sensitivity:
        """Read :meth:`as_dict`'s form; PruneError naming ``source`` when it is not that."""
        try:
            blocks = tuple(BlockSensitivity(int(b["layer"]), str(b["kind"]), str(b["bn"]),
                                            float(b["gamma"]), float(b["loss"]),
                                            float(b["sensitivity"])) for b in d["blocks"])
            layers = tuple(LayerSensitivity(int(r["layer"]), int(r["channels"]),
                                            float(r["ratio"]), int(r["removed"]),
                                            float(r["loss"]), float(r["sensitivity"]))
                           for r in d.get("layers", ()))
            return cls(str(d["metric"]), int(d["images"]), bool(d["recalibrated"]),
                       float(d["dense_loss"]), blocks, layers)
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


OnResult = Callable[[int, int, BlockSensitivity | LayerSensitivity], None]  # (done, of, it)


def _layer_classes(model: Darknet) -> tuple[dict[int, np.ndarray], dict[int, list]]:
    """Per layer: its prunable non-residual classes, lowest mean |gamma| first; per class:
    the (BN name, channel) pairs it spans."""
    analysis = analyze(model.cfg)
    ok = analysis.prunable(Scope.INNER)
    importance = importance_of(analysis, abs_gammas(model))
    by_layer: dict[int, set[int]] = defaultdict(set)
    members: dict[int, list] = defaultdict(list)
    for space in analysis.graph.spaces:
        if space.bn is None:
            continue
        for channel, k in enumerate(analysis.classes_of_space(space).tolist()):
            members[k].append((space.bn, channel))
            if ok[k]:
                by_layer[space.layer_index].add(k)
    order = {j: np.array(sorted(ks, key=lambda k: (importance[k], k)), dtype=np.int64)
             for j, ks in sorted(by_layer.items())}
    return order, members


def masked(model: Darknet, members: list[tuple[str, int]]) -> Darknet:
    """A copy of ``model`` with gamma and beta of each (BN, channel) of ``members`` zeroed."""
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    with torch.no_grad():
        for bn, channel in members:
            modules[bn].weight[channel] = 0.0
            modules[bn].bias[channel] = 0.0
    return out


LayerPlan = tuple[int, int, float, int, list]


def _layer_plans(model: Darknet, ratios: Sequence[float]) -> list[LayerPlan]:
    """(layer, its channels, ratio, how many go, the (BN, channel) pairs to mask) for each
    layer and ratio that masks at least one channel and keeps one."""
    order, members = _layer_classes(model)
    plans = []
    for layer, classes in order.items():
        for ratio in ratios:
            n = int(round(ratio * len(classes)))
            if 0 < n < len(classes):
                plans.append((layer, len(classes), ratio, n,
                              [m for k in classes[:n].tolist() for m in members[k]]))
    return plans


def measure(model: Darknet, batches: Sequence[Batch], ratios: Sequence[float] = (),
            recalibrate: bool = True, on_result: OnResult | None = None) -> Sensitivity:
    """Cut each removable block of ``model`` alone, and mask each prunable layer at each of
    ``ratios``, and measure the loss on ``batches`` (after recalibrating the BNs on their
    images, unless ``recalibrate`` is False).

    ``model`` is not modified; ``on_result`` hears of each block and layer as it is measured.
    """
    if not batches:
        raise ValueError("sensitivity analysis needs at least one calibration batch")
    if any(not 0 < r < 1 for r in ratios):
        raise ValueError(f"layer ratios must be in (0, 1), got {list(ratios)}")
    graph = build_channel_graph(model.cfg)
    blocks = find_blocks(model.cfg, graph)
    gammas = block_scores(model, blocks)
    plans = _layer_plans(model, ratios)
    dense_loss = _score(copy.deepcopy(model), batches, recalibrate)
    done, total = 0, len(blocks) + len(plans)
    results: list[BlockSensitivity] = []
    for i, block in enumerate(blocks):
        cut, *_ = cut_blocks(model, [block], fold=True, graph=graph)
        loss = _score(cut, batches, recalibrate)
        results.append(BlockSensitivity(block.layer, block.kind, block.bn, float(gammas[i]),
                                        loss, loss - dense_loss))
        done += 1
        if on_result is not None:
            on_result(done, total, results[-1])
    layers: list[LayerSensitivity] = []
    for layer, channels, ratio, n, pairs in plans:
        loss = _score(masked(model, pairs), batches, recalibrate)
        layers.append(LayerSensitivity(layer, channels, ratio, n, loss, loss - dense_loss))
        done += 1
        if on_result is not None:
            on_result(done, total, layers[-1])
    images = sum(len(b.images) for b in batches)
    return Sensitivity(METRIC, images, recalibrate, dense_loss, tuple(results), tuple(layers))
