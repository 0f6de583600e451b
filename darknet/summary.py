"""Size and cost of a network: per-layer table, parameter count and GFLOPs (``darknet.cost``)."""

from __future__ import annotations

from dataclasses import dataclass

from .cfg import Cfg
from .cost import network_cost
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
    gflops: float  # 2 x multiply-adds / 1e9 at img_size (darknet.cost)
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


def summarize(cfg: Cfg, img_size: int | None = None) -> ModelSummary:
    img_size = img_size or cfg.net.height
    shapes = infer_shapes(cfg, img_size, img_size)
    cost = network_cost(cfg, img_size, img_size)
    rows = tuple(
        LayerRow(s.index, s.kind, s.in_channels, (s.out.c, s.out.h, s.out.w), layer.params)
        for s, layer in zip(shapes, cost.layers, strict=True)
    )
    outputs = tuple((s.out.c, s.out.h, s.out.w) for s in shapes if s.head)
    return ModelSummary(img_size, rows, cost.params, cost.gflops, outputs)
