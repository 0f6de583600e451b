"""What every chart shares: an Agg figure of a given pixel size, round ticks, the house style."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100  # small: these are report pictures, and each epoch redraws two of them
# Tick spacings a reader does not have to decode: 1, 2, 2.5 or 5 times a power of ten.
ROUND_STEPS = (1, 2, 2.5, 5, 10)


def new_figure(width_px: int, height_px: int, layout: str | None = "constrained") -> Figure:
    """A figure of exactly ``width_px x height_px`` on its own Agg canvas (no pyplot state).

    ``layout=None`` leaves the margins to the caller (``subplots_adjust``): a third faster to
    draw than the constrained layout, for the chart redrawn every epoch.
    """
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def round_ticks(ax: Axes, axis: str = "both", nbins: int = 6, integer: bool = False) -> None:
    """Put ``axis`` ticks at round values (see ROUND_STEPS), at most ``nbins`` + 1 of them."""
    for name in ("x", "y") if axis == "both" else (axis,):
        getattr(ax, f"{name}axis").set_major_locator(
            MaxNLocator(nbins=nbins, steps=list(ROUND_STEPS), integer=integer,
                        min_n_ticks=1 if integer else 2))


def style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)


def freeze_layout(fig: Figure) -> None:
    """Lay the figure out once and keep it: what is measured afterwards stays where it is."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
