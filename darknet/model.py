"""The Darknet network: a cfg turned into modules, with Darknet weights I/O."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .cfg import Cfg, parse_cfg
from .layers import BUILDERS, YoloLayer
from .shapes import INPUT, LayerShape, infer_shapes
from .weights import WeightsHeader, load_weights, save_weights


class Darknet(nn.Module):
    """A detector built from a Darknet ``.cfg`` (path or parsed :class:`Cfg`), with the
    Darknet ``weights`` loaded when given (else freshly initialized).

    ``forward(images[B, C, H, W])`` returns one tensor per ``[yolo]`` head, in cfg order:

    * training mode: raw logits ``[B, A, H/s, W/s, 5 + classes]``
      (tx, ty, tw, th, objectness, class scores) for the loss;
    * eval mode: detections ``[B, A*(H/s)*(W/s), 5 + classes]``: box centre x, y, width,
      height in input pixels, objectness probability, per-class probabilities.
      ``torch.cat(outputs, 1)`` gives every candidate box of an image.

    ``forward(x, raw=True)`` returns the raw layout whatever the mode (a frozen teacher for
    distillation runs in eval mode but is compared on logits).
    """

    def __init__(self, cfg: str | Path | Cfg, weights: str | Path | None = None):
        super().__init__()
        self.cfg: Cfg = cfg if isinstance(cfg, Cfg) else parse_cfg(cfg)
        self.shapes: list[LayerShape] = infer_shapes(self.cfg)
        self.layers = nn.ModuleList()
        for section, shape in zip(self.cfg.layers, self.shapes, strict=True):
            layer = BUILDERS[type(section)](section, shape)
            layer.sources = shape.sources
            self.layers.append(layer)
        # Outputs read by a layer other than the next one must be kept during forward.
        self._saved = {
            j for shape in self.shapes for j in shape.sources if j not in (shape.index - 1, INPUT)
        }
        self._heads = frozenset(shape.index for shape in self.shapes if shape.head)
        self.header = WeightsHeader()
        if weights is not None:
            self.load_weights(weights)

    @property
    def yolo_layers(self) -> list[YoloLayer]:
        return [self.layers[i] for i in sorted(self._heads)]

    @property
    def num_classes(self) -> int:
        self.cfg.require_heads("a detector")
        return self.yolo_layers[0].num_classes

    def forward(self, x: torch.Tensor, raw: bool | None = None) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        heads = []
        image, prev = x, x
        for i, layer in enumerate(self.layers):
            ins = [prev if j == i - 1 else image if j == INPUT else saved[j]
                   for j in layer.sources]
            if i in self._heads:
                prev = layer(*ins, raw=raw)
                heads.append(prev)
            else:
                prev = layer(*ins)
            if i in self._saved:
                saved[i] = prev
        return heads

    def conv_bn_pairs(self) -> Iterator[tuple[int, nn.Conv2d, nn.BatchNorm2d | None]]:
        """Every (conv, bn) pair with its layer index, in Darknet storage order."""
        for index, layer in enumerate(self.layers):
            for conv, bn in layer.conv_bn_pairs():
                yield index, conv, bn

    def load_weights(self, path: str | Path, cutoff: int | None = None) -> None:
        """Fill the model (layers 0..cutoff-1 with a cutoff) from a Darknet weights file."""
        self.header = load_weights(self, path, cutoff)

    def save_weights(self, path: str | Path, header: WeightsHeader | None = None,
                     cutoff: int | None = None) -> None:
        save_weights(self, path, header, cutoff)
