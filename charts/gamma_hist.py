"""gamma_hist.png: is the model sparse enough to prune at the chosen ratio?

The |gamma| distribution of the prunable BatchNorms per sparse epoch, on log-spaced bins; a
legend names the epochs drawn (all of them when few, else first, three between, last). The
red dashed line is the last epoch's |gamma| quantile at the pruning ratio: a per-channel cut
at that ratio would remove everything left of it. ``prune`` ranks coupled groups by mean
|gamma| and a FLOPs exponent, so the legend calls it approximate ("~ratio 0.5 cut"). Sparse
training has done its job when the mass left of the line has collapsed towards zero.

Target-aware sparse training (``sparsity.target``) knows the cut instead: the last epoch's
planned channels are drawn as a grey area (their share of the channels per bin), and the job
is done when that area sits at the left edge (|gamma| ~ 0).
"""

from __future__ import annotations

from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from .base import new_figure, round_ticks, style

SIZE = (900, 440)  # pixels
ALL_EPOCHS_UP_TO = 6
SUBSET = 5  # epochs drawn when there are more: first, three between, last


def shown_epochs(n: int) -> list[int]:
    """Indices of the epochs drawn out of ``n``, in order."""
    if n <= ALL_EPOCHS_UP_TO:
        return list(range(n))
    return sorted({round(k * (n - 1) / (SUBSET - 1)) for k in range(SUBSET)})


def figure(stats: dict[str, Any]) -> Figure:
    """``stats``: gamma_stats.json (``edges`` and per-epoch ``histogram``, ``below``, ``cut``)."""
    edges, epochs = stats["edges"], stats["epochs"]
    if not epochs:
        raise ValueError("no epochs to draw")
    fig = new_figure(*SIZE)
    ax = fig.add_subplot()
    shown = shown_epochs(len(epochs))
    for rank, k in enumerate(shown):
        last = k == len(epochs) - 1
        shade = 0.85 - 0.85 * rank / max(len(shown) - 1, 1)
        ax.stairs(epochs[k]["histogram"], edges, color=colormaps["viridis"](shade),
                  lw=2.0 if last else 1.2, label=f"epoch {epochs[k]['epoch']}")
    final = epochs[-1]
    if "planned" in final:
        ax.stairs(final["planned"], edges, fill=True, color="0.6", alpha=0.5,
                  label=f"planned cut, epoch {final['epoch']} "
                        f"({sum(final['planned']):.0%} of the channels)")
    elif "cut" in final:  # gamma_stats.json from before the line existed has no cut
        ax.axvline(min(max(final["cut"], edges[0]), edges[-1]), color="tab:red", ls="--",
                   lw=1.2, label=f"~ratio {final['cut_ratio']:g} cut (|gamma| "
                                 f"{final['cut']:.3g})")
    ax.set_xscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, None)
    round_ticks(ax, "y")
    style(ax, f"|gamma| of {final['count']:,} prunable BN channels; epoch {final['epoch']}: "
              f"{final['below']:.0%} below {final['threshold']:g}",
          "|gamma| (log scale; the end bins also hold what lies beyond)", "fraction of channels")
    fig.legend(fontsize=8, loc="outside right upper")
    return fig
