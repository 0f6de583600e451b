"""Plain-text rendering of a ``MapResult`` for the command line."""

from __future__ import annotations

from evaluation.coco_map import MapResult

__all__ = ["format_map_table"]


def format_map_table(result: MapResult) -> str:
    """Per-class AP table, one row per class and a final ``all`` row.

    Classes without ground truth show ``-``: COCO leaves them out of the mean.
    """
    header = ("class", "n_gt", "AP@.5", "AP@.5:.95")
    rows = [(name, str(c.n_gt), _cell(c.ap50), _cell(c.ap)) for name, c in result.per_class.items()]
    total_gt = sum(c.n_gt for c in result.per_class.values())
    rows.append(("all", str(total_gt), _cell(result.map50), _cell(result.map)))
    name_width = max(len(row[0]) for row in [header, *rows])
    widths = [name_width, *(max(len(row[i]) for row in [header, *rows]) for i in (1, 2, 3))]
    return "\n".join(_line(row, widths) for row in [header, *rows])


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    name, *numbers = row
    return "  ".join(
        [name.ljust(widths[0]), *(n.rjust(w) for n, w in zip(numbers, widths[1:], strict=True))]
    )
