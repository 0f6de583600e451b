"""sensitivity.png: what removing each block costs, and whether |gamma| would have said so.

One horizontal bar per removable block, the least harmful at the top (the order
``prune --block-ranking sensitivity`` removes them in): its length is the calibration loss
increase measured with that block cut and the BatchNorms recalibrated (``prune.sensitivity``).
Each bar's label gives the block's place in the default order too (mean |gamma| of the BN
before its add, lowest first), so a reader sees where the two criteria disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .base import new_figure, round_ticks, style

WIDTH, ROW_PX, MIN_HEIGHT = 900, 26, 300


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The blocks, least sensitive first (ties: the earlier block), each with its
    ``gamma_rank`` (1: what the mean |gamma| criterion removes first)."""
    blocks = data["blocks"]
    by_gamma = np.argsort([b["gamma"] for b in blocks], kind="stable")
    rank = {int(i): k + 1 for k, i in enumerate(by_gamma)}
    order = np.argsort([b["sensitivity"] for b in blocks], kind="stable")
    return [{**blocks[i], "gamma_rank": rank[int(i)]} for i in order]


def figure(data: dict[str, Any]) -> Figure:
    """``data``: sensitivity.json (``prune.sensitivity.Sensitivity.as_dict``)."""
    shown = rows(data)
    if not shown:
        raise ValueError("no removable block to draw")
    fig = new_figure(WIDTH, max(MIN_HEIGHT, 110 + ROW_PX * len(shown)))
    ax = fig.add_subplot()
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
    return fig
