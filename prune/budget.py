"""What a budgeted prune must reach: GFLOPs, parameters or latency, absolute or against dense.

``Budget.parse("gflops", "0.3x")`` asks for at most 0.3 of the dense model's GFLOPs;
``Budget.parse("latency", "12")`` for at most 12 ms. The figure a plan is held to comes from
``darknet.cost`` (GFLOPs at the report's input size, parameters) or, for latency, from the
latency table's prediction (``prune.latency``). The search that meets a budget is
``prune.search``.

Imports neither torch nor numpy: ``prune.settings`` reads this module.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .errors import PruneError


class Metric(enum.StrEnum):
    GFLOPS = "gflops"
    PARAMS = "params"
    LATENCY = "latency"

    @property
    def flag(self) -> str:
        return f"--target-{self.value}"

    @property
    def unit(self) -> str:
        return {"gflops": "GFLOPs", "params": "params", "latency": "ms"}[self.value]

    def format(self, value: float) -> str:
        """``12.3 GFLOPs``, ``4,503,210 params``, ``8.41 ms``."""
        if self is Metric.PARAMS:
            return f"{value:,.0f} params"
        return f"{value:.4g} {self.unit}"


RELATIVE = "x"  # suffix of a fraction of the dense model's figure: "0.3x"


@dataclass(frozen=True)
class Budget:
    """At most ``value`` of ``metric``: absolute, or (``relative``) a fraction of dense."""

    metric: Metric
    value: float
    relative: bool

    def __post_init__(self):
        object.__setattr__(self, "metric", Metric(self.metric))
        if not (math.isfinite(self.value) and self.value > 0):
            raise PruneError(f"{self.metric.flag} must be a positive number or a fraction of "
                             f"dense such as 0.3x, got {self}")
        if self.relative and self.value >= 1:  # refused before any work (pipeline: training)
            raise PruneError(f"{self.metric.flag} {self} is not below the dense model's "
                             f"figure (1x): nothing would be pruned; a budget is a fraction "
                             f"below 1, such as {self.value / 10:g}x")

    @classmethod
    def parse(cls, metric: Metric | str, text: str | float | Budget) -> Budget:
        if isinstance(text, Budget):
            return text
        metric = Metric(metric)
        raw = str(text).strip()
        relative = raw.lower().endswith(RELATIVE)
        try:
            value = float(raw[:-1] if relative else raw)
        except ValueError:
            raise PruneError(f"{metric.flag} must be a positive number or a fraction of dense "
                             f"such as 0.3x, got {text!r}") from None
        return cls(metric, value, relative)

    def limit(self, dense: float) -> float:
        """The figure a plan must not exceed, given the dense model's; a limit the dense model
        meets already (an absolute figure at or above it) is refused, naming both."""
        limit = self.value * dense if self.relative else self.value
        if limit >= dense:
            raise PruneError(f"{self.metric.flag} {self} ({self.metric.format(limit)}) is not "
                             f"below the dense model's {self.metric.format(dense)}: nothing "
                             "would be pruned; ask for less than the dense figure")
        return limit

    def __str__(self) -> str:
        return f"{self.value:g}{RELATIVE}" if self.relative else f"{self.value:g}"
