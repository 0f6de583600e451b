"""compare.png: accuracy against cost, one marker per model, the reference model as lines.

Two panels share the mAP axis: against GFLOPs (what the pruning removed) and against the
measured latency (what a user gets). A filled marker is mAP@.5, the hollow one below it on
the same stalk mAP@.5:.95; the first model (the dense reference) is also drawn as a dashed
(mAP@.5) and a dotted (mAP@.5:.95) line across both panels.
"""

from __future__ import annotations

from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .base import freeze_layout, new_figure, round_ticks, style
from .labels import Label, marker_boxes, place_labels

SIZE = (1000, 440)  # pixels
MARKER = 7.0  # points
PANELS = (("gflops", "GFLOPs"), ("latency_ms", "latency ms"))


def _colors(n: int) -> list:
    return [colormaps["tab10"](k % 10) for k in range(n)]


def _limits(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.12, hi * 0.05, 1e-3)
    # mAP is never negative: below zero only a sliver, so a model at 0 stays visible.
    return (lo - pad if lo - pad >= 0 else -0.04 * (hi + pad)), hi + pad


def _panel(ax, models: list[dict[str, Any]], key: str, colors: list) -> None:
    ref = models[0]
    ax.axhline(ref["map50"], ls="--", color="0.45", lw=0.9)
    ax.axhline(ref["map"], ls=":", color="0.45", lw=0.9)
    for m, c in zip(models, colors, strict=True):
        ax.plot([m[key]] * 2, [m["map"], m["map50"]], color=c, lw=1.2, zorder=2)
        ax.plot(m[key], m["map"], "o", ms=MARKER, mfc="white", mec=c, mew=1.5, zorder=3)
        ax.plot(m[key], m["map50"], "o", ms=MARKER, color=c, zorder=4)
    ax.set_xlim(0, max(m[key] for m in models) * 1.15 or 1.0)
    round_ticks(ax)


def figure(report: dict[str, Any]) -> Figure:
    """``report``: compare.json (``models`` rows with name, map50, map, gflops, latency_ms)."""
    models = report["models"]
    if not models:
        raise ValueError("no models to draw")
    fig = new_figure(*SIZE)
    axes = fig.subplots(1, len(PANELS), sharey=True)
    colors = _colors(len(models))
    for ax, (key, name) in zip(axes, PANELS, strict=True):
        _panel(ax, models, key, colors)
        style(ax, f"mAP against {name}", name, "mAP" if ax is axes[0] else "")
    axes[0].set_ylim(*_limits([m[k] for m in models for k in ("map50", "map")]))
    ref = models[0]["name"]
    fig.legend(handles=[
        Line2D([], [], ls="", marker="o", ms=MARKER, color="0.3", label="mAP@.5"),
        Line2D([], [], ls="", marker="o", ms=MARKER, mfc="white", mec="0.3", mew=1.5,
               label="mAP@.5:.95"),
        Line2D([], [], ls="--", color="0.45", label=f"{ref} mAP@.5"),
        Line2D([], [], ls=":", color="0.45", label=f"{ref} mAP@.5:.95"),
    ], loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    fig.suptitle(_title(report), fontsize=10)
    freeze_layout(fig)
    for ax, (key, _) in zip(axes, PANELS, strict=True):
        xs = [m[key] for m in models]
        obstacles = (marker_boxes(ax, xs, [m["map50"] for m in models], MARKER)
                     + marker_boxes(ax, xs, [m["map"] for m in models], MARKER))
        place_labels(ax, [Label(m["name"], m[key], m["map50"], c)
                          for m, c in zip(models, colors, strict=True)], obstacles)
    return fig


def _title(report: dict[str, Any]) -> str:
    parts = [f"{len(report['models'])} models"]
    if report.get("img_size"):
        parts.append(f"input {report['img_size']} px")
    if report.get("runtime"):
        threads = report.get("threads")
        parts.append(f"latency: CPU, batch 1, {report['runtime']} form"
                     + (f", {threads} thread{'s' * (threads != 1)}" if threads else ""))
    return "; ".join(parts)
