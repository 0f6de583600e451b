"""Starting a run from pretrained weights: whole files, cutoff files, and transfer to another
class count.

A Darknet ``.weights`` file stores no shapes, so a file made for another class count cannot
be read against the new cfg directly. It can be read against the same cfg with other
``[yolo]`` head convs: those convs are the only layers whose size depends on the classes
(``filters = anchors x (5 + classes)``), and their size is linear in the filter count, so the
file's length gives the source's filter count exactly (``80`` classes x 3 anchors -> 255)::

    file floats = fixed + F * sum over heads of (floats per output filter)

Every other layer is copied; a head conv whose filter count differs keeps its initialisation
(the detection biases of ``engine.loss.init_detection_biases``).

``load_start_weights`` is the one entry point for training commands: it reads a cutoff from a
``*.conv.N`` file name (Darknet's convention), loads strictly otherwise, and turns a strict
mismatch into an error that names the flag which would load the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError, WeightsError
from .layers import ConvLayer
from .model import Darknet
from .weights import (
    copy_plan,
    cutoffs_holding,
    load_weights,
    read_weights_file,
    storage_tensors,
)

_CONV_N = re.compile(r"\.conv\.(\d+)$")


@dataclass(frozen=True)
class StartWeights:
    """How start weights went into a model: what a training command reports.

    ``loaded``/``total``: layers with weights filled from the file / in the cfg.
    ``cutoff_from_name``: the cutoff came from a ``*.conv.N`` file name.
    ``reinitialised``: layer indices of the head convs that kept their initialisation,
    ``change``: why (``classes 80 -> 20`` or ``filters 255 -> 21``).
    """

    path: str
    loaded: int
    total: int
    cutoff: int | None = None
    cutoff_from_name: bool = False
    reinitialised: tuple[int, ...] = ()
    change: str = ""

    def describe(self) -> str | None:
        """One line for the log; None for a whole model loaded as it is."""
        name = Path(self.path).name
        if self.cutoff is not None:
            why = " (cutoff from the file name)" if self.cutoff_from_name else ""
            return (f"{name}: loaded layers 0-{self.cutoff - 1}{why}, {self.loaded} of "
                    f"{self.total} layers with weights; the rest keep their initialisation")
        if self.change:
            layers = ", ".join(map(str, self.reinitialised))
            return (f"{name}: transferred {self.loaded}/{self.total} layers; re-initialised "
                    f"{len(self.reinitialised)} head convs (layers {layers}): {self.change}")
        return None


def cutoff_from_name(path: str | Path) -> int | None:
    """N for a file named ``*.conv.N`` (``darknet53.conv.74``), else None."""
    match = _CONV_N.search(Path(path).name)
    return int(match.group(1)) if match else None


def load_start_weights(model: Darknet, path: str | Path, cutoff: int | None = None,
                       transfer: bool = False) -> StartWeights:
    """Load the weights a run starts from into ``model`` (see the module docstring)."""
    path = str(path)
    if cutoff is not None and transfer:
        raise UserError("give --cutoff or --transfer, not both: a cutoff file holds no heads "
                        "to transfer")
    if transfer:
        return transfer_weights(model, path)
    named = cutoff is None and cutoff_from_name(path) is not None
    if named:
        cutoff = cutoff_from_name(path)
    try:
        model.header = load_weights(model, path, cutoff)
    except WeightsError as e:
        raise WeightsError(f"{e}{_hint(model, path) if cutoff is None else ''}") from None
    total = sum(1 for _ in _weighted_layers(model))
    loaded = total if cutoff is None else sum(1 for i in _weighted_layers(model) if i < cutoff)
    return StartWeights(path, loaded, total, cutoff, named)


def transfer_weights(model: Darknet, path: str | Path) -> StartWeights:
    """Copy every layer of ``path`` that fits ``model``; head convs that do not keep their
    initialisation. Raises, changing nothing, when the file fits no head size."""
    path = str(path)
    header, floats = read_weights_file(path)
    filters = source_head_filters(model, len(floats))
    if filters is None:
        raise WeightsError(f"{path}: {len(floats)} floats fit {model.cfg.path} with no "
                           "[yolo] head size (weights for another network?)")
    heads = _head_convs(model)
    plan, skipped, ptr = [], [], 0
    for index in _weighted_layers(model):
        tensors = _tensors(model, index)
        if index in heads and model.layers[index].conv.out_channels != filters:
            skipped.append(index)
            ptr += filters * _floats_per_filter(model.layers[index])
            continue
        for t in tensors:
            plan.append((t, floats[ptr:ptr + t.numel()]))
            ptr += t.numel()
    copy_plan(plan)
    model.header = header
    total = sum(1 for _ in _weighted_layers(model))
    return StartWeights(path, total - len(skipped), total, reinitialised=tuple(skipped),
                        change=_change(model, filters) if skipped else "")


def source_head_filters(model: Darknet, count: int) -> int | None:
    """The filter count F of the source's head convs that makes a file of ``count`` floats
    fit ``model`` with every other layer as it is; None when no positive whole F does."""
    heads = _head_convs(model)
    if not heads:
        return None
    per_filter = sum(_floats_per_filter(model.layers[i]) for i in heads)
    fixed = sum(t.numel() for i in _weighted_layers(model) if i not in heads
                for t in _tensors(model, i))
    filters, rest = divmod(count - fixed, per_filter)
    return int(filters) if filters > 0 and rest == 0 else None


def _hint(model: Darknet, path: str) -> str:
    """What would load a file that does not fit as a whole model, or nothing."""
    _, floats = read_weights_file(path)
    fits = cutoffs_holding(model, len(floats))
    if fits and fits[0] < len(model.layers):
        return f"; it holds layers 0-{fits[-1] - 1}: pass --cutoff {fits[-1]} to load those"
    filters = source_head_filters(model, len(floats))
    if filters is not None:
        return (f"; it fits with other [yolo] head convs ({_change(model, filters)}): pass "
                "--transfer to load the other layers and re-initialise those")
    return ""


def _change(model: Darknet, filters: int) -> str:
    """``classes 80 -> 20`` when the anchors per head are the same, else the filters."""
    head = model.yolo_layers[0]
    target = model.layers[head.sources[0]].conv.out_channels
    anchors = head.num_anchors
    if filters % anchors == 0 and filters // anchors > 5:
        return f"classes {filters // anchors - 5} -> {head.num_classes}"
    return f"filters {filters} -> {target}"


def _weighted_layers(model: Darknet) -> list[int]:
    return [i for i, layer in enumerate(model.layers) if layer.conv_bn_pairs()]


def _tensors(model: Darknet, index: int) -> list[torch.Tensor]:
    return [t for conv, bn in model.layers[index].conv_bn_pairs()
            for t in storage_tensors(conv, bn)]


def _head_convs(model: Darknet) -> set[int]:
    """Layer indices of the plain convs feeding a ``[yolo]`` head directly."""
    return {head.sources[0] for head in model.yolo_layers
            if isinstance(model.layers[head.sources[0]], ConvLayer)}


def _floats_per_filter(layer: ConvLayer) -> int:
    """Floats one output filter of a conv stores: its kernel, plus bias or 4 BN values."""
    conv = layer.conv
    kernel = int(np.prod(conv.weight.shape[1:]))
    return kernel + (4 if layer.bn is not None else 1)
