"""results.png: the training curves of one run, redrawn after every epoch.

Three panels over epochs: the loss and its components (box, obj, cls and any hook's extra
loss, e.g. distillation), mAP@.5 and mAP@.5:.95 (evaluated epochs only), and the learning
rate at the end of each epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .base import new_figure, round_ticks, style

SIZE = (1200, 380)  # pixels


def _curve(ax: Axes, rows: Sequence[dict[str, Any]], key: str, **kw) -> None:
    points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", ms=3, label=kw.pop("label", key), **kw)


def figure(history: Sequence[dict[str, Any]]) -> Figure:
    """``history``: results.json ``epochs`` (epoch, loss, loss_*, map50, map, lr)."""
    if not history:
        raise ValueError("no epochs to draw")
    fig = new_figure(*SIZE, layout=None)
    fig.subplots_adjust(left=0.05, right=0.985, bottom=0.13, top=0.91, wspace=0.22)
    loss_ax, map_ax, lr_ax = fig.subplots(1, 3)
    _curve(loss_ax, history, "loss", color="black", lw=1.8, label="loss (total)")
    parts = [k for k in history[-1] if k.startswith("loss_")]
    for key in parts:
        _curve(loss_ax, history, key, lw=1.2, label=key.removeprefix("loss_"))
    _curve(map_ax, history, "map50", label="mAP@.5")
    _curve(map_ax, history, "map", label="mAP@.5:.95")
    _curve(lr_ax, history, "lr", color="tab:purple", label="lr")
    evaluated = [r for r in history if r.get("map") is not None]
    best = max(evaluated, key=lambda r: (r["map"], r["map50"]), default=None)
    map_title = (f"mAP (best mAP@.5:.95 {best['map']:.4f}, epoch {best['epoch']})" if best
                 else "mAP (not evaluated yet)")
    for ax, title, ylabel in ((loss_ax, "loss per image (training mean)", "loss"),
                              (map_ax, map_title, "mAP"), (lr_ax, "learning rate", "lr")):
        style(ax, title, "epoch", ylabel)
        round_ticks(ax, "x", integer=True)
        round_ticks(ax, "y")
        ax.set_xlim(0.5, max(r["epoch"] for r in history) + 0.5)
        if ax is not lr_ax and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return fig
