"""prune_report.png: where the cut landed, layer by layer.

One slot per prunable layer, in cfg order: a grey bar for the channels it had, a coloured
bar for those kept. A ``[convolutional]`` counts its output channels; a ``[res2net]`` or
``[triangle]`` block counts its inner channels (``width * scale``: the groups G_0..G_{s-1},
drawn as ``scale`` segments, one width for all), whose width the block keeps for every
group. Layers on one residual chain (a stage conv and the blocks after it) are one channel
space: they share a colour and a bracket above the bars. Blocks removed whole by layer
pruning (``removed_blocks`` in the report: ``layer``, ``layers``, ``bn``) are hatched red.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from prune.settings import ranking_flags

from .base import new_figure, round_ticks, style

HEIGHT = 460
SLOT_PX, MIN_WIDTH, MAX_WIDTH = 26, 900, 2400
COLORS = {"conv": "tab:blue", "chain": "tab:orange", "block": "tab:green",
          "removed": "tab:red", "original": "0.85"}
ABBREV = {"convolutional": "conv", "res2net": "r2n", "triangle": "tri"}


@dataclass(frozen=True)
class Slot:
    """One bar pair: channels before and after, and how to mark them."""

    index: int
    kind: str
    before: int
    after: int
    groups: int  # segments drawn inside the bars (a block's scale; 1 for a conv)
    chain: int | None
    removed: bool


def _slot(row: dict[str, Any], removed: set[int]) -> Slot:
    block = row["width_before"] is not None
    before = row["width_before"] * row["scale"] if block else row["out_before"]
    after = row["width_after"] * row["scale"] if block else row["out_after"]
    gone = row["index"] in removed
    return Slot(row["index"], row["kind"], before, 0 if gone else after,
                row["scale"] if block else 1, row["chain"], gone)


def slots(report: dict[str, Any]) -> list[Slot]:
    """The prunable layers and every layer removed whole, in cfg order."""
    removed = {i for b in report.get("removed_blocks", ()) for i in (b["layer"], *b["layers"])}
    rows = {r["index"]: r for r in report["layers"]}
    chosen = sorted({i for i, r in rows.items() if r["prunable"]}
                    | {b["layer"] for b in report.get("removed_blocks", ())})
    return [_slot(rows[i], removed) if i in rows else Slot(i, "removed", 0, 0, 1, None, True)
            for i in chosen]


def size(n_slots: int) -> tuple[int, int]:
    """The picture's pixel size for ``n_slots`` bars."""
    return min(max(120 + SLOT_PX * n_slots, MIN_WIDTH), MAX_WIDTH), HEIGHT


def _color(s: Slot) -> str:
    if s.removed:
        return COLORS["removed"]
    if s.groups > 1:
        return COLORS["block"]
    return COLORS["chain"] if s.chain is not None else COLORS["conv"]


def _bars(ax: Axes, items: list[Slot]) -> None:
    xs = range(len(items))
    ax.bar(xs, [s.before for s in items], 0.8, color=COLORS["original"], zorder=1)
    ax.bar(xs, [s.after for s in items], 0.8, color=[_color(s) for s in items], zorder=2)
    top = max(s.before for s in items)  # a removed block is struck out over the whole height
    for x, s in zip(xs, items, strict=True):
        if s.removed:
            ax.bar(x, top, 0.8, fill=False, hatch="///", edgecolor=COLORS["removed"], lw=0,
                   zorder=3)
        for k in range(1, s.groups):  # the block's equal-width groups
            for total in (s.before, s.after):
                ax.plot([x - 0.4, x + 0.4], [total * k / s.groups] * 2, color="white", lw=0.6,
                        zorder=3)


def _chains(ax: Axes, items: list[Slot]) -> None:
    """A bracket above each residual chain's slots, labelled with its width before/after."""
    spans: dict[int, list[int]] = {}
    for x, s in enumerate(items):
        if s.chain is not None:
            spans.setdefault(s.chain, []).append(x)
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for chain, xs in spans.items():
        ax.plot([min(xs) - 0.4, max(xs) + 0.4], [1.01, 1.01], transform=trans,
                color=COLORS["chain"], lw=2.5, clip_on=False, solid_capstyle="butt")
        head = next((s for s in items if s.index == chain), None)
        if head is not None:
            ax.text((min(xs) + max(xs)) / 2, 1.025, f"{head.before}→{head.after}",
                    transform=trans, ha="center", va="bottom", fontsize=7,
                    color=COLORS["chain"])


def _command(chosen: dict[str, Any]) -> str:
    """The prune flags that chose this cut (the settings' defaults of this report's time)."""
    budget = [f"--{name.replace('_', '-')} {chosen[name]}"
              for name in ("target_gflops", "target_params", "target_latency") if chosen.get(name)]
    parts = ["prune", *budget, f"--ratio {chosen['ratio']:g}"]
    if chosen.get("layers"):
        parts.append(f"--layers {chosen['layers']}")
        if chosen.get("block_ranking", "gamma") != "gamma":
            parts.append(f"--block-ranking {chosen['block_ranking']}")
    parts.append(ranking_flags(chosen.get("ranking", "gamma"), chosen["flops_exponent"],
                               chosen.get("latency_exponent", 1.0)))
    return " ".join([*parts, f"--scope {chosen['scope']}"])


def _title(report: dict[str, Any]) -> str:
    p0, p1 = report["params_before"], report["params_after"]
    text = f"{_command(report['settings'])}\nparams {p0:,} → {p1:,} ({p1 / p0:.0%})"
    if report.get("gflops_before"):
        g0, g1 = report["gflops_before"], report["gflops_after"]
        text += f", GFLOPs @{report['img_size']} {g0:.3g} → {g1:.3g} ({g1 / g0:.0%})"
    if report.get("removed_blocks"):
        n = len(report["removed_blocks"])
        text += f", {n} block{'s' * (n != 1)} removed"
    return text


def figure(report: dict[str, Any]) -> Figure:
    """``report``: prune_report.json (``layers`` rows; ``removed_blocks`` when present)."""
    items = slots(report)
    if not items:
        raise ValueError("the report has no prunable layer")
    fig = new_figure(*size(len(items)))
    ax = fig.add_subplot()
    _bars(ax, items)
    _chains(ax, items)
    ax.set_xticks(range(len(items)),
                  [f"{s.index} {ABBREV.get(s.kind, s.kind)}" for s in items],
                  rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(items) - 0.4)
    round_ticks(ax, "y", integer=True)
    style(ax, "", "layer (cfg index, kind)", "channels")
    fig.suptitle(_title(report), fontsize=10)
    legend = [Patch(color=COLORS["original"], label="before"),
              Patch(color=COLORS["conv"], label="kept: conv"),
              Patch(color=COLORS["chain"], label="kept: residual chain (bracket: its width)"),
              Patch(color=COLORS["block"], label="kept: res2net / triangle (width × scale, "
                                                 "a segment per group)")]
    if any(s.removed for s in items):
        legend.append(Patch(facecolor="white", edgecolor=COLORS["removed"], hatch="///",
                            label="removed block"))
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8,
               frameon=False)
    return fig
