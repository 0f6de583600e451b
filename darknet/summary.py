"""Size and cost of a network: per-layer table, parameter count and GFLOPs (via thop)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import thop
import torch

from .model import Darknet
from .shapes import infer_shapes


@dataclass(frozen=True)
class LayerRow:
    index: int
    kind: str
    in_channels: int
    out: tuple[int, int, int]  # C, H, W
    params: int


@dataclass(frozen=True)
class ModelSummary:
    img_size: int
    rows: tuple[LayerRow, ...]
    params: int
    gflops: float  # 2 x multiply-adds / 1e9 at img_size, as counted by thop
    outputs: tuple[tuple[int, int, int], ...]  # [C, H, W] entering each [yolo] head

    def as_dict(self) -> dict:
        return {
            "img_size": self.img_size,
            "params": self.params,
            "gflops": self.gflops,
            "outputs": [list(o) for o in self.outputs],
            "layers": [
                {"index": r.index, "type": r.kind, "in_channels": r.in_channels,
                 "out": list(r.out), "params": r.params}
                for r in self.rows
            ],
        }

    def table(self) -> str:
        lines = [f"{'idx':>4}  {'type':<14}{'in':>6} -> {'out':>6}  {'output size':<12}"
                 f"{'params':>12}"]
        for r in self.rows:
            c, h, w = r.out
            lines.append(f"{r.index:>4}  {r.kind:<14}{r.in_channels:>6} -> {c:>6}  "
                         f"{f'{h}x{w}':<12}{r.params:>12,}")
        lines.append(f"params: {self.params:,}   GFLOPs @{self.img_size}: {self.gflops:.2f}   "
                     f"YOLO outputs: " + ", ".join(f"{c}x{h}x{w}" for c, h, w in self.outputs))
        return "\n".join(lines)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: Darknet, img_size: int) -> float:
    """2 x multiply-accumulates / 1e9 for one image, counted by thop on a copy of the model."""
    probe = copy.deepcopy(model).eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, model.cfg.net.channels, img_size, img_size, device=device)
    with torch.no_grad():
        macs, _ = thop.profile(probe, inputs=(x,), verbose=False)
    return 2.0 * float(macs) / 1e9


def summarize(model: Darknet, img_size: int | None = None) -> ModelSummary:
    img_size = img_size or model.cfg.net.height
    shapes = infer_shapes(model.cfg, img_size, img_size)
    rows = tuple(
        LayerRow(s.index, s.kind, s.in_channels, (s.out.c, s.out.h, s.out.w), count_params(layer))
        for s, layer in zip(shapes, model.layers, strict=True)
    )
    outputs = tuple((s.out.c, s.out.h, s.out.w) for s in shapes if s.head)
    return ModelSummary(img_size, rows, count_params(model), count_gflops(model, img_size), outputs)
