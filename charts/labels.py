"""Point labels that never overlap: a small deterministic placement.

Each label tries offsets around its point, nearest ring first and, within a ring, the
directions in a fixed order (up-right first); it takes the first spot whose text box, as the
renderer measures it, overlaps no label placed before it, no marker and nothing outside the
axes. A label pushed beyond the nearest ring gets a thin leader line back to its point. If no
spot is free (a crowded chart), the one with the least overlapping area wins. The same
points always give the same picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

RINGS = (6.0, 16.0, 28.0, 42.0, 60.0, 80.0)  # offset from the point, in points
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))
PAD_PX = 1.5  # space kept free around every box


@dataclass(frozen=True)
class Label:
    text: str
    x: float  # the point it names, in data coordinates
    y: float
    color: str = "black"


def marker_boxes(ax: Axes, xs: Sequence[float], ys: Sequence[float],
                 size_pt: float) -> list[Bbox]:
    """Display-space boxes of square markers ``size_pt`` wide centred on the points."""
    half = size_pt * ax.figure.dpi / 72 / 2
    centres = ax.transData.transform(list(zip(xs, ys, strict=True)))
    return [Bbox.from_extents(cx - half, cy - half, cx + half, cy + half) for cx, cy in centres]


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0) + PAD_PX
    h = min(a.y1, b.y1) - max(a.y0, b.y0) + PAD_PX
    return max(w, 0.0) * max(h, 0.0)


def _outside(box: Bbox, area: Bbox) -> float:
    inside = (max(min(box.x1, area.x1) - max(box.x0, area.x0), 0.0)
              * max(min(box.y1, area.y1) - max(box.y0, area.y0), 0.0))
    return box.width * box.height - inside


def _annotate(ax: Axes, label: Label, dx: float, dy: float, leader: bool,
              fontsize: float) -> Annotation:
    arrow = dict(arrowstyle="-", color="0.45", lw=0.6, shrinkA=0, shrinkB=4) if leader else None
    return ax.annotate(
        label.text, (label.x, label.y), xytext=(dx, dy), textcoords="offset points",
        ha="left" if dx > 0 else "right" if dx < 0 else "center",
        va="bottom" if dy > 0 else "top" if dy < 0 else "center",
        fontsize=fontsize, color=label.color, arrowprops=arrow, annotation_clip=False)


def place_labels(ax: Axes, labels: Sequence[Label], obstacles: Sequence[Bbox] = (),
                 fontsize: float = 8) -> list[Annotation]:
    """Annotate ``ax`` with ``labels`` in order, none over another or over ``obstacles``.

    Call it after the axes limits and the figure layout are final (``base.freeze_layout``):
    the boxes are measured in display space.
    """
    renderer = ax.figure.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    taken = list(obstacles)
    placed = []
    for label in labels:
        best: tuple[float, int, float, float, Bbox] | None = None
        for ring, r in enumerate(RINGS):
            for ux, uy in DIRECTIONS:
                probe = _annotate(ax, label, ux * r, uy * r, False, fontsize)
                box = probe.get_window_extent(renderer)
                probe.remove()
                cost = sum(_overlap(box, t) for t in taken) + _outside(box, area)
                if best is None or cost < best[0]:
                    best = (cost, ring, ux * r, uy * r, box)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, ring, dx, dy, box = best
        placed.append(_annotate(ax, label, dx, dy, ring > 0, fontsize))
        taken.append(box)
    return placed
