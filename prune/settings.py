"""What a prune run is asked to do: one frozen value, parsed at the CLI edge, validated once.

:class:`PruneSettings` holds every knob of ``prune_model``. Each field carries its default,
its help text and its check, so adding a knob is adding a field here: ``main.py prune`` gets
the flag (``add_arguments``), a bad value is refused with one message before any work
(``__post_init__``), and the prune report records it (``as_dict``). ``main.py pipeline``
forwards the fields it names to its prune stage (``argv``). A few checks span fields (one
budget at most; ``--layers auto`` needs one): :meth:`PruneSettings.__post_init__` runs them
after the per-field ones.

Imports neither torch nor numpy: ``main.py prune --help`` reads this module.
"""

from __future__ import annotations

import argparse
import enum
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .budget import Budget, Metric
from .errors import PruneError

AUTO = "auto"  # --layers auto: the search chooses the blocks; --round-to auto: by cfg size
ROUND_TO_WIDE, WIDE_MEDIAN = 8, 64  # --round-to auto: 8 where the median BN width is >= 64


def auto_round_to(bn_widths: Iterable[int]) -> int:
    """What ``--round-to auto`` means for a cfg whose BN layers have ``bn_widths`` channels."""
    widths = sorted(bn_widths)
    median = widths[len(widths) // 2] if widths else 0
    return ROUND_TO_WIDE if median >= WIDE_MEDIAN else 1


class Scope(enum.StrEnum):
    """``inner``: never touch residual chains (the classic approach); ``all``: prune them too."""

    INNER = "inner"
    ALL = "all"


class Ranking(enum.StrEnum):
    """What a channel's (and a block's) importance is weighed against (``prune.importance``):
    ``gamma``: its multiply-adds, to ``--flops-exponent``; ``latency``: the latency its removal
    saves, from the measured table (``prune.latency``), to ``--latency-exponent``."""

    GAMMA = "gamma"
    LATENCY = "latency"


class BlockRanking(enum.StrEnum):
    """What ``--layers`` removes first: ``gamma``: the blocks whose BN before the add has the
    lowest mean |gamma|; ``sensitivity``: those whose removal raised the calibration loss the
    least, as measured by ``prune.sensitivity``."""

    GAMMA = "gamma"
    SENSITIVITY = "sensitivity"


@dataclass(frozen=True)
class MinKeep:
    """The per-layer floor: a fraction of the layer's channels (``0 < value < 1``) or a count.

    ``MinKeep.parse("0.1")`` keeps 10% (rounded up), ``MinKeep.parse("8")`` keeps 8 (or the
    whole layer if smaller). The floor is never below one channel.
    """

    value: float

    def __post_init__(self):
        if not (0 < self.value < 1 or (self.value >= 1 and float(self.value).is_integer())):
            raise PruneError(f"--min-keep must be a fraction in (0, 1) or a whole count >= 1, "
                             f"got {self.value:g}")

    @classmethod
    def parse(cls, text: str | float | MinKeep) -> MinKeep:
        if isinstance(text, MinKeep):
            return text
        try:
            value = float(text)
        except ValueError:
            raise PruneError(f"--min-keep must be a fraction in (0, 1) or a whole count >= 1, "
                             f"got {text!r}") from None
        return cls(value)

    def of(self, size: int) -> int:
        wanted = math.ceil(self.value * size) if self.value < 1 else int(self.value)
        return max(1, min(wanted, size))

    def __str__(self) -> str:
        return f"{self.value:g}"


# -- checks: (flag, value) -> the value in its settled type, or PruneError ------------------
Check = Callable[[str, Any], Any]


def _interval(low: float, high: float, *, high_open: bool) -> Check:
    def check(flag: str, value: Any) -> float:
        value = float(value)
        inside = low <= value < high if high_open else low <= value <= high
        if not inside:
            raise PruneError(f"{flag} must be in [{low:g}, {high:g}{')' if high_open else ']'}, "
                             f"got {value:g}")
        return value
    return check


def _at_least(low: int) -> Check:
    def check(flag: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise PruneError(f"{flag} must be a whole number >= {low}, got {value}")
        return int(value)
    return check


def _choice(kind: type[enum.StrEnum]) -> Check:
    def check(flag: str, value: Any) -> enum.StrEnum:
        try:
            return kind(value)
        except ValueError:
            raise PruneError(f"{flag} must be one of {', '.join(kind)}, got {value!r}") from None
    return check


def _whole_or_auto(low: int) -> Check:
    """A whole number >= ``low`` (given as a number or as text), or ``auto``."""
    def check(flag: str, value: Any) -> int | str:
        if value == AUTO:
            return AUTO
        whole = value
        if isinstance(value, str):
            try:
                whole = int(value)
            except ValueError:
                whole = None
        if isinstance(whole, bool) or not isinstance(whole, numbers.Integral) or whole < low:
            raise PruneError(f"{flag} must be a whole number >= {low} or {AUTO}, got {value}")
        return int(whole)
    return check


def _target(metric: Metric) -> Check:
    def check(flag: str, value: Any) -> Budget | None:
        return None if value is None else Budget.parse(metric, value)
    return check


def _min_keep(flag: str, value: Any) -> MinKeep:
    return MinKeep.parse(value)


def _bool(flag: str, value: Any) -> bool:
    return bool(value)


def _setting(default: Any, check: Check, help_text: str, *, cli_type: type = float,
             metavar: str | None = None, choices: tuple[str, ...] | None = None):
    """A field of :class:`PruneSettings`: its default, check and command-line form."""
    return field(default=default, metadata={"check": check, "help": help_text, "type": cli_type,
                                            "metavar": metavar, "choices": choices})


@dataclass(frozen=True)
class PruneSettings:
    """Every choice ``prune_model`` makes from outside; the prune report records all of them.

    Numbers and text are accepted where a field has a richer type (``min_keep=1``,
    ``scope="inner"``) and settled by its check, so a constructed value is always valid.
    """

    ratio: float = _setting(
        0.5, _interval(0, 1, high_open=True),
        "fraction of the prunable (coupled) channels to remove, in [0, 1)")
    layers: int | str = _setting(
        0, _whole_or_auto(0), "first remove the N least important blocks (--block-ranking: by "
        "default, the lowest mean |gamma| of the BN before the add) (auto: the budget search "
        "chooses N; needs a --target-*)",
        cli_type=str, metavar="N|auto")
    block_ranking: BlockRanking = _setting(
        BlockRanking.GAMMA, _choice(BlockRanking),
        "which blocks --layers removes first: gamma: the lowest mean |gamma| before the add; "
        "sensitivity: the least loss increase measured with the block removed (main.py "
        "analyze --sensitivity; needs --sensitivity FILE or --data)", cli_type=str,
        choices=tuple(map(str, BlockRanking)))
    # Measured on the demo (docs/results.md, "The demo pipeline"): at --ratio 0.5, E = 0
    # keeps 38% of the GFLOPs, E = 0.1 keeps 29% with fewer parameters too, and fine-tunes
    # to the same mAP.
    flops_exponent: float = _setting(
        0.1, _interval(0, 1, high_open=False),
        "rank channels by mean |gamma| / (their multiply-adds)^E, E in [0, 1]: 0 is network "
        "slimming's gamma alone, 1 is gamma per multiply-add; a larger E cuts more GFLOPs at "
        "the same --ratio", metavar="E")
    ranking: Ranking = _setting(
        Ranking.GAMMA, _choice(Ranking),
        "gamma: rank by mean |gamma| / (multiply-adds)^--flops-exponent; latency: by mean "
        "|gamma| / (the latency removing the channel or block saves, from a table measured "
        "once per machine in onnxruntime)^--latency-exponent", cli_type=str,
        choices=tuple(map(str, Ranking)))
    latency_exponent: float = _setting(
        1.0, _interval(0, 1, high_open=False),
        "with --ranking latency: the exponent of the latency saved (1: importance per ms, the "
        "greedy knapsack order)", metavar="E")
    target_gflops: Budget | None = _setting(
        None, _target(Metric.GFLOPS),
        "search --ratio (and with --layers auto the blocks) so that the slim model has at most "
        "G GFLOPs, or F x the dense model's (0.3x)", cli_type=str, metavar="G|Fx")
    target_params: Budget | None = _setting(
        None, _target(Metric.PARAMS), "the same for parameters: at most P, or F x dense",
        cli_type=str, metavar="P|Fx")
    target_latency: Budget | None = _setting(
        None, _target(Metric.LATENCY),
        "the same for onnxruntime latency on this machine (batch 1): at most L ms, or F x the "
        "dense model's; the search predicts from the latency table, then measures the result",
        cli_type=str, metavar="L|Fx")
    scope: Scope = _setting(
        Scope.ALL, _choice(Scope), "all: prune residual chains as groups; inner: leave them",
        cli_type=str, choices=tuple(map(str, Scope)))
    # A fifth of every layer: at 10% the FLOPs-weighted ranking thinned the demo's 8-channel
    # stem to one channel, and the fine-tuned model ended 0.01 mAP@.5 lower than with two.
    min_keep: MinKeep = _setting(
        MinKeep(0.2), _min_keep,
        "per-layer floor: a fraction (0.2 = 20%%, rounded up) or a count (8)", cli_type=str)
    # Measured in onnxruntime and folded PyTorch (docs/results.md, "Widths the kernels
    # like"): on the full-size cfgs multiples of 8 (AVX2's NCHWc block) bring the latency
    # ratio close to the GFLOPs ratio; on the demo they cost up to twice the GFLOPs and buy
    # no latency.
    round_to: int | str = _setting(
        AUTO, _whole_or_auto(1), f"keep a multiple of N channels per layer (or all of them); auto: "
        f"{ROUND_TO_WIDE} on cfgs whose median BN layer has >= {WIDE_MEDIAN} channels (the "
        f"full-size ones), else 1 (the demo)", cli_type=str, metavar="N|auto")
    fold: bool = _setting(
        True, _bool, "do not fold removed channels' and blocks' act(beta) into their readers",
        cli_type=bool)

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](flag_of(f.name),
                                                                 getattr(self, f.name)))
        targets = [t for t in self.targets if t is not None]
        if len(targets) > 1:
            raise PruneError(f"give one budget, got {' and '.join(t.metric.flag for t in targets)}")
        if self.layers == AUTO and not targets:
            raise PruneError("--layers auto needs a budget (--target-gflops, --target-params or "
                             "--target-latency) to choose the number of blocks for")

    @property
    def targets(self) -> tuple[Budget | None, ...]:
        return (self.target_gflops, self.target_params, self.target_latency)

    @property
    def budget(self) -> Budget | None:
        """The one budget given, if any: the search then chooses ``ratio`` (and ``layers``)."""
        return next((t for t in self.targets if t is not None), None)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PruneSettings:
        """The settings a parsed command line gives (fields it has no flag for: defaults)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: numbers and flags as they are, scope and floor as their text."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def argv(self, names: Iterable[str]) -> list[str]:
        """The ``main.py prune`` arguments that give these values of the fields ``names``."""
        out: list[str] = []
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                out += [] if value else [flag_of(name)]
            else:
                out += [flag_of(name), str(value)]
        return out


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, enum.Enum | MinKeep | Budget) else value


def _field(name: str):
    return next(f for f in fields(PruneSettings) if f.name == name)


def ranking_flags(ranking: str, flops_exponent: float, latency_exponent: float) -> str:
    """The flags that say how channels and blocks were ranked, as a prune command gives them
    (plain values: the prune summary passes a settings value's, the chart a report's)."""
    if ranking == Ranking.LATENCY:
        return f"--ranking latency --latency-exponent {latency_exponent:g}"
    return f"--flops-exponent {flops_exponent:g}"


def flag_of(name: str) -> str:
    """The command-line flag of a field: ``--flops-exponent``; ``--no-fold`` for a switch."""
    dashed = name.replace("_", "-")
    return f"--no-{dashed}" if _field(name).metadata["type"] is bool else f"--{dashed}"


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None,
                  unset: Mapping[str, str] | None = None,
                  defaults: Mapping[str, Any] | None = None) -> None:
    """Add the flags of ``names`` (default: every field).

    ``unset`` maps fields whose flag defaults to None (the command decides what that means) to
    what the help says instead of the default; ``defaults`` maps fields to the command's own
    default, in place of the field's. Values stay raw here (argparse would turn a bad
    one into a usage dump): the checks run when :meth:`PruneSettings.from_args` builds the
    settings, and say what is wrong in one line.
    """
    unset, defaults = unset or {}, defaults or {}
    wanted = [f.name for f in fields(PruneSettings)] if names is None else list(names)
    for name in wanted:
        f, flag = _field(name), flag_of(name)
        meta = f.metadata
        if meta["type"] is bool:
            parser.add_argument(flag, dest=name, action="store_false", help=meta["help"])
            continue
        default = None if name in unset else _plain(defaults.get(name, f.default))
        shown = unset.get(name, "none" if default is None else default)
        parser.add_argument(flag, dest=name, type=meta["type"], default=default,
                            metavar=meta["metavar"], choices=meta["choices"],
                            help=f"{meta['help']} (default: {shown})")
