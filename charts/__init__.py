"""The workflow's PNG charts, drawn with matplotlib (Agg: no display needed).

Each chart draws from the JSON-shaped data written beside it, so the picture and the numbers
never disagree and a user can redraw one from the JSON alone:

    compare.png        compare.json          charts.compare.figure(report)
    gamma_hist.png     gamma_stats.json      charts.gamma_hist.figure(stats)
    results.png        results.json epochs   charts.results.figure(history)
    prune_report.png   prune_report.json     charts.prune_report.figure(report)
    sensitivity.png    sensitivity.json      charts.sensitivity.figure(sensitivity)

This module imports no matplotlib: the chart modules are imported on first use, so
``main.py --help``, ``import darknet`` and ``import prune`` never load it.

A chart is a by-product, never the result: ``render`` turns any exception raised while drawing
into one warning line on the ``charts`` logger (once per chart and message) and returns None,
and ``write_png`` then removes a stale picture instead of leaving one that no longer matches
its numbers. A training run, a prune or a comparison goes on without its picture.
"""

from __future__ import annotations

import importlib
import io
import logging
from pathlib import Path
from typing import Any

from common.io import atomic_write_bytes

log = logging.getLogger(__name__)

_WARNED: set[tuple[str, str]] = set()


def render(chart: str, data: Any) -> bytes | None:
    """The PNG bytes of ``charts.<chart>.figure(data)``, or None (with a warning) if it fails."""
    try:
        fig = importlib.import_module(f"{__name__}.{chart}").figure(data)
        buf = io.BytesIO()
        # No "Software" stamp: the same data gives the same bytes.
        fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()
    except Exception as e:  # noqa: BLE001 -- any drawing failure; the caller's work goes on
        message = " ".join(f"{type(e).__name__}: {e}".split())
        if (chart, message) not in _WARNED:
            _WARNED.add((chart, message))
            log.warning("warning: %s.png not drawn (%s)", chart, message)
        return None


def write_png(path: str | Path, png: bytes | None) -> bool:
    """Write ``png`` to ``path`` atomically; None removes an old picture. True if written."""
    path = Path(path)
    if png is None:
        path.unlink(missing_ok=True)
        return False
    atomic_write_bytes(path, png)
    return True


def write_chart(path: str | Path, chart: str, data: Any) -> bool:
    """``render`` then ``write_png``: the one call a writer of ``data`` adds beside it."""
    return write_png(path, render(chart, data))
