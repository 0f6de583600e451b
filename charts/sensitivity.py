"""sensitivity.png: what removing each block costs, and whether |gamma| would have said so.

One horizontal bar per removable block, the least harmful at the top (the order
``prune --block-ranking sensitivity`` removes them in): its length is the calibration loss
increase measured with that block cut and the BatchNorms recalibrated (``prune.sensitivity``).
Each bar's label gives the block's place in the default order too (mean |gamma| of the BN
before its add, lowest first), so a reader sees where the two criteria disagree.

When the file has per-layer figures (``analyze --layer-ratios``), a second panel draws them:
per prunable layer (x, cfg order) the loss increase with that share of its channels masked,
one line per ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .base import new_figure, round_ticks, style

WIDTH, ROW_PX, MIN_HEIGHT, LAYERS_PX = 900, 26, 300, 320


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The blocks, least sensitive first (ties: the earlier block), each with its
    ``gamma_rank`` (1: what the mean |gamma| criterion removes first)."""
    blocks = data["blocks"]
    by_gamma = np.argsort([b["gamma"] for b in blocks], kind="stable")
    rank = {int(i): k + 1 for k, i in enumerate(by_gamma)}
    order = np.argsort([b["sensitivity"] for b in blocks], kind="stable")
    return [{**blocks[i], "gamma_rank": rank[int(i)]} for i in order]


def _blocks(ax: Axes, data: dict[str, Any]) -> None:
    shown = rows(data)
    ys = np.arange(len(shown))
    values = [r["sensitivity"] for r in shown]
    ax.barh(ys, values, 0.7, color=["tab:green" if v <= 0 else "tab:red" for v in values])
    ax.set_yticks(ys, [f"layer {r['layer']} [{r['kind']}]  |gamma| {r['gamma']:.3g} "
                       f"(gamma order {r['gamma_rank']})" for r in shown], fontsize=8)
    ax.invert_yaxis()  # the first to remove at the top
    ax.axvline(0, color="0.3", lw=0.8)
    round_ticks(ax, "x")
    how = ", BN recalibrated" if data["recalibrated"] else ""
    style(ax, f"what removing each block costs: {data['metric']} on {data['images']} "
              f"calibration images{how}\n(dense {data['dense_loss']:.4g}; the top bar goes first)",
          f"{data['metric']} with the block removed minus the dense model's", "")


def _layers(ax: Axes, layers: list[dict[str, Any]]) -> None:
    index = sorted({r["layer"] for r in layers})
    xs = {j: k for k, j in enumerate(index)}
    for ratio in sorted({r["ratio"] for r in layers}):
        pts = sorted((xs[r["layer"]], r["sensitivity"]) for r in layers if r["ratio"] == ratio)
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.2, label=f"ratio {ratio:g}")
    ax.set_xticks(range(len(index)), [str(j) for j in index], fontsize=8)
    ax.axhline(0, color="0.3", lw=0.8)
    round_ticks(ax, "y")
    style(ax, "each prunable layer with its lowest-|gamma| channels masked",
          "cfg layer", "loss increase")
    ax.legend(fontsize=8)


def figure(data: dict[str, Any]) -> Figure:
    """``data``: sensitivity.json (``prune.sensitivity.Sensitivity.as_dict``)."""
    if not data["blocks"] and not data.get("layers"):
        raise ValueError("nothing measured to draw")
    layers = data.get("layers") or []
    height = max(MIN_HEIGHT, 110 + ROW_PX * len(data["blocks"]))
    fig = new_figure(WIDTH, height + (LAYERS_PX if layers else 0))
    panels = [p for p in (data["blocks"] and _blocks, layers and _layers) if p]
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=(
        [height, LAYERS_PX] if len(panels) == 2 else [1]))[:, 0]
    for ax, draw in zip(axes, panels, strict=True):
        draw(ax, data if draw is _blocks else layers)
    return fig
