"""Small PNG charts drawn with Pillow, so reports need no plotting library.

Two charts serve the workflow: the |gamma| distribution over sparse-training epochs (when is
the model sparse enough to prune?) and a labelled scatter (mAP against GFLOPs per model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from common.io import atomic_open

WIDTH, HEIGHT = 720, 440
MARGIN = dict(left=70, right=150, top=40, bottom=55)


@dataclass(frozen=True)
class Axes:
    """Maps data coordinates to pixels inside the plot area; optional log-x."""

    x0: float
    x1: float
    y0: float
    y1: float
    log_x: bool = False

    def _fx(self, x: float) -> float:
        return math.log10(x) if self.log_x else x

    def px(self, x: float, y: float) -> tuple[float, float]:
        left, top = MARGIN["left"], MARGIN["top"]
        w = WIDTH - MARGIN["left"] - MARGIN["right"]
        h = HEIGHT - MARGIN["top"] - MARGIN["bottom"]
        fx0, fx1 = self._fx(self.x0), self._fx(self.x1)
        u = (self._fx(x) - fx0) / ((fx1 - fx0) or 1.0)
        v = (y - self.y0) / ((self.y1 - self.y0) or 1.0)
        return left + u * w, top + (1.0 - v) * h


def _frame(title: str, xlabel: str, ylabel: str, axes: Axes, xticks, yticks):
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    (ax0, ay0), (ax1, ay1) = axes.px(axes.x0, axes.y0), axes.px(axes.x1, axes.y1)
    draw.rectangle((ax0, ay1, ax1, ay0), outline="black")
    for x in xticks:
        px, _ = axes.px(x, axes.y0)
        draw.line((px, ay0, px, ay0 + 4), fill="black")
        draw.text((px, ay0 + 6), _fmt(x), fill="black", font=font, anchor="mt")
    for y in yticks:
        _, py = axes.px(axes.x0, y)
        draw.line((ax0 - 4, py, ax0, py), fill="black")
        draw.text((ax0 - 6, py), _fmt(y), fill="black", font=font, anchor="rm")
    draw.text((WIDTH / 2, 12), title, fill="black", font=font, anchor="mt")
    draw.text(((ax0 + ax1) / 2, HEIGHT - 18), xlabel, fill="black", font=font, anchor="mm")
    draw.text((ax0, ay1 - 6), ylabel, fill="black", font=font, anchor="lb")
    return img, draw, font


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or abs(v) < 0.01:
        return f"{v:.0e}"
    return f"{v:.3g}"


def _save(img: Image.Image, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")


def plot_distributions(path: str | Path, edges: Sequence[float],
                       series: Sequence[tuple[str, Sequence[float]]], *, title: str,
                       xlabel: str, ylabel: str = "fraction") -> None:
    """One line per series over log-spaced bins (``edges``), light (early) to dark (late)."""
    axes = Axes(edges[0], edges[-1], 0.0,
                max((max(v) for _, v in series if len(v)), default=1.0) * 1.05 or 1.0, log_x=True)
    decades = range(math.ceil(math.log10(edges[0])), math.floor(math.log10(edges[-1])) + 1)
    img, draw, font = _frame(title, xlabel, ylabel, axes, [10.0 ** d for d in decades],
                             [axes.y1 * k / 4 for k in range(5)])
    centres = [math.sqrt(a * b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    n = len(series)
    for k, (label, values) in enumerate(series):
        shade = int(170 - 170 * (k / max(n - 1, 1)))
        colour = (shade, shade, 255) if k < n - 1 else (200, 30, 30)
        draw.line([axes.px(x, y) for x, y in zip(centres, values, strict=True)], fill=colour,
                  width=2)
        if k in (0, n - 1) or n <= 8:
            _, ly = axes.px(axes.x1, axes.y1)
            draw.text((WIDTH - MARGIN["right"] + 10, ly + 16 * (k if n <= 8 else k > 0)), label,
                      fill=colour, font=font)
    _save(img, path)


def plot_scatter(path: str | Path, points: Sequence[tuple[str, float, float]], *, title: str,
                 xlabel: str, ylabel: str) -> None:
    """Labelled points (label, x, y), e.g. mAP against GFLOPs for each compared model."""
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    pad_x = (max(xs) - min(xs)) * 0.15 or max(abs(xs[0]) * 0.2, 1e-3)
    pad_y = (max(ys) - min(ys)) * 0.15 or max(abs(ys[0]) * 0.2, 1e-3)
    axes = Axes(max(0.0, min(xs) - pad_x), max(xs) + pad_x, max(0.0, min(ys) - pad_y),
                max(ys) + pad_y)
    ticks = [axes.x0 + (axes.x1 - axes.x0) * k / 4 for k in range(5)]
    yticks = [axes.y0 + (axes.y1 - axes.y0) * k / 4 for k in range(5)]
    img, draw, font = _frame(title, xlabel, ylabel, axes, ticks, yticks)
    for label, x, y in points:
        px, py = axes.px(x, y)
        draw.ellipse((px - 5, py - 5, px + 5, py + 5), fill=(30, 90, 200))
        draw.text((px + 8, py - 8), label, fill="black", font=font)
    _save(img, path)
