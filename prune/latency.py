"""Latency from a lookup table: per-conv times measured once per machine, summed per plan.

What a latency-aware prune needs (HALP, Shen et al., NeurIPS 2022: a per-layer latency lookup
table, and importance weighed against it): the time one convolution takes on this machine and
runtime, for each shape a search looks at.

* :class:`ConvShape` is the table's key: input and output channels, kernel, stride, padding,
  input height and width, and the activation fused after it. In onnxruntime those decide the
  kernel it picks (on AVX2 the blocked NCHWc path needs channel counts that are multiples of
  8) and its time. The BN is folded into the conv, as deployed.
* :class:`LatencyTable` holds the measured milliseconds, cached on disk per machine and
  runtime (``$RES2NET_YOLO_CACHE/latency`` or ``~/.cache/res2net-yolo/latency``, one file per
  machine fingerprint: CPU model, cores, onnxruntime version, threads) and filled lazily: a
  shape is measured the first time anything asks for it, all missing shapes of one question
  in one block (``prune.op_timing`` builds and times single-conv models). Each entry is the
  single-conv session's median minus the table's *overhead*, what running an almost empty
  graph costs: a conv inside a whole network does not pay a session call of its own.
* :class:`LatencyPredictor` predicts a network's latency from its cfg: the sum of its convs'
  times plus an *offset* for everything else (adds, concats, splits, upsampling, the decode,
  and the per-op cost the single-conv models do not see), calibrated once by measuring the
  dense model, times a *scale* that a measured miss corrects (``prune.search``).

For the ranking (``--ranking latency``), :func:`class_latency` charges each coupled class the
latency its removal saves at the widths of the cfg it ranks: per conv, the secant from the
current width to about half of it (rounded to a multiple of 8, so both ends stay on the
blocked path), per output channel for the convs that produce the class and per input channel
for the convs that read it. :func:`block_latency` charges a removable block the time of its
convs. Both come straight from the table, so hand-made tables test them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common.cache import cache_folder, cache_root
from common.errors import UserError
from common.io import atomic_write_text, read_text
from darknet.cfg import Cfg
from darknet.cost import ConvCost, network_cost

from .analysis import ChannelAnalysis
from .blocks import Block
from .graph import layer_module
from .importance import class_costs, conv_costs

BLOCK = 8  # channels per block of onnxruntime's NCHWc layout on AVX2 (16 on AVX-512)


@dataclass(frozen=True, order=True)
class ConvShape:
    """One convolution (BN folded, activation fused) as the latency table knows it."""

    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    h: int  # input size
    w: int
    activation: str

    @classmethod
    def of(cls, conv: ConvCost) -> ConvShape:
        h, w = conv.input_size
        return cls(conv.in_channels, conv.out_channels, conv.kernel, conv.stride, conv.padding,
                   h, w, conv.activation)

    @property
    def key(self) -> str:
        """``64x128 k3 s2 p1 208x208 leaky``: how the cache file names it."""
        return (f"{self.c_in}x{self.c_out} k{self.kernel} s{self.stride} p{self.padding} "
                f"{self.h}x{self.w} {self.activation}")


def narrower(channels: int) -> int:
    """The width the ranking's secant runs to: about half, a multiple of 8 from 16 up."""
    if channels < 2 * BLOCK:
        return channels // 2
    return -(-channels // (2 * BLOCK)) * BLOCK


Measure = Callable[[Sequence[ConvShape]], Sequence[float]]  # median ms of each single-conv model


@dataclass
class Measurer:
    """How a table gets numbers it lacks: ``convs`` times single-conv models (ms, medians),
    ``overhead`` an almost empty model; ``fingerprint`` names the machine and runtime."""

    fingerprint: Mapping[str, str]
    convs: Measure
    overhead: Callable[[], float]


class LatencyTable:
    """Milliseconds per :class:`ConvShape` for one machine and runtime, filled lazily.

    ``measured`` counts the shapes this object has measured (the overhead included): a
    search that finds everything in the cache measures nothing. ``notes``: one line per
    repair made to the cache file (a bad entry dropped, to be measured again; an unreadable
    file set aside as ``.bad``), for the command to print.
    """

    def __init__(self, measurer: Measurer | None, path: Path | None = None,
                 convs: Mapping[str, float] | None = None, overhead: float | None = None):
        self.measurer, self.path = measurer, path
        self.raw: dict[str, float] = dict(convs or {})
        self.overhead_ms = overhead
        self.measured = 0
        self.notes: list[str] = []

    @classmethod
    def cached(cls, measurer: Measurer, folder: Path | None = None) -> LatencyTable:
        """The table of ``measurer``'s machine, with what earlier runs cached on disk."""
        path = cache_file(measurer.fingerprint, folder)
        table = cls(measurer, path)
        if path.exists():
            data = _read_cache(path, measurer.fingerprint)
            if data is None:
                table.notes.append(_set_aside(path))
            else:
                table._merge(data)
        return table

    def ensure(self, shapes: Iterable[ConvShape]) -> None:
        """Measure every shape not yet in the table, in one block, and cache them."""
        missing = sorted({s for s in shapes if s.key not in self.raw})
        need_overhead = self.overhead_ms is None
        if not missing and not need_overhead:
            return
        if self.measurer is None:
            raise UserError(f"the latency table has no entry for {missing[0].key} and "
                            "nothing to measure it with")
        if need_overhead:
            self.overhead_ms = float(self.measurer.overhead())
            self.measured += 1
        if missing:
            times = self.measurer.convs(missing)
            self.raw.update((s.key, float(t)) for s, t in zip(missing, times, strict=True))
            self.measured += len(missing)
        self.save()

    def ms(self, shape: ConvShape) -> float:
        """The conv's time inside a network: its single-conv median less the overhead."""
        if shape.c_in == 0 or shape.c_out == 0:
            return 0.0
        self.ensure((shape,))
        return max(self.raw[shape.key] - (self.overhead_ms or 0.0), 0.0)

    def save(self) -> None:
        """Write the table (merged with what another process may have added meanwhile)."""
        if self.path is None or self.measurer is None:
            return
        if self.path.exists():  # what another process added; an unreadable file is replaced
            data = _read_cache(self.path, self.measurer.fingerprint)
            if data is not None:
                self._merge(data, keep_own=True)
        data = {"fingerprint": dict(self.measurer.fingerprint), "overhead_ms": self.overhead_ms,
                "convs": dict(sorted(self.raw.items()))}
        cache_folder(self.path.parent)
        atomic_write_text(self.path, json.dumps(data, indent=0) + "\n")

    def _merge(self, data: dict, keep_own: bool = False) -> None:
        """Take ``data``'s entries; one that is not a time (null, text, negative, NaN: a hand
        edit, another version) is left out, so it is measured again when needed."""
        theirs = {k: float(v) for k, v in data["convs"].items() if _is_ms(v)}
        bad = [k for k in data["convs"] if k not in theirs]
        overhead = data.get("overhead_ms")
        if overhead is not None and not _is_ms(overhead):
            bad.append("overhead_ms")
            overhead = None
        if bad and not keep_own:
            self.notes.append(
                f"{self.path}: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} not a time "
                f"({bad[0]!r}: {data['convs'].get(bad[0], overhead)!r}), measured again")
        self.raw = {**self.raw, **theirs} if not keep_own else {**theirs, **self.raw}
        if self.overhead_ms is None and overhead is not None:
            self.overhead_ms = float(overhead)


def cache_file(fingerprint: Mapping[str, str], folder: Path | None = None) -> Path:
    """``<cache>/latency/<runtime>-<digest of the fingerprint>.json``."""
    digest = hashlib.sha256(json.dumps(dict(fingerprint), sort_keys=True).encode()).hexdigest()
    runtime = fingerprint.get("runtime", "runtime")
    return (folder or cache_root() / "latency") / f"{runtime}-{digest[:16]}.json"


def _is_ms(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _read_cache(path: Path, fingerprint: Mapping[str, str]) -> dict | None:
    """The cache file's table, or None when it is not one of this machine (garbage, cut
    short, not UTF-8, another fingerprint under this machine's name)."""
    try:
        data = json.loads(read_text(path, "latency table"))
    except (UserError, json.JSONDecodeError):
        return None
    ok = (isinstance(data, dict) and data.get("fingerprint") == dict(fingerprint)
          and isinstance(data.get("convs"), dict))
    return data if ok else None


def _set_aside(path: Path) -> str:
    """Rename an unreadable cache file to ``<name>.bad`` (kept for a look, out of the way);
    the table is measured again. Returns the line saying so."""
    bad = path.with_name(path.name + ".bad")
    try:
        path.replace(bad)
    except OSError as e:
        raise UserError(f"{path}: not a latency table of this machine, and it cannot be set "
                        f"aside ({e.strerror}); delete it") from None
    return f"{path}: not a latency table of this machine; set aside as {bad.name}, measured again"


# -- what the table says about a cfg ----------------------------------------------------

def conv_shapes(cfg: Cfg, img_size: int) -> dict[str, ConvShape]:
    """Every conv of ``cfg`` at ``img_size`` px, by module name."""
    return {name: ConvShape.of(c)
            for name, c in conv_costs(network_cost(cfg, img_size, img_size)).items()}


def convs_ms(table: LatencyTable, cfg: Cfg, img_size: int) -> float:
    """The summed time of every conv of ``cfg`` (missing shapes measured in one block)."""
    shapes = list(conv_shapes(cfg, img_size).values())
    table.ensure(shapes)
    return sum(table.ms(s) for s in shapes)


@dataclass(frozen=True)
class LatencyPredictor:
    """``scale * (sum of a cfg's conv times) + offset``, at ``img_size`` px.

    :meth:`fitted` sets the two from measured models: one (the dense model) fixes the offset
    at scale 1; with more, the least-squares line through them, so that a measured plan's
    error corrects both what the table gets wrong about the convs (the scale) and what it
    leaves out (the offset).
    """

    table: LatencyTable
    img_size: int
    scale: float = 1.0
    offset: float = 0.0

    def convs(self, cfg: Cfg) -> float:
        return convs_ms(self.table, cfg, self.img_size)

    def predict(self, cfg: Cfg) -> float:
        return self.scale * self.convs(cfg) + self.offset

    def fitted(self, measured: Sequence[tuple[Cfg, float]]) -> LatencyPredictor:
        """Fitted to ``(cfg, measured ms)`` pairs (see the class docstring). A line that would
        not rise with the conv time (noise on plans too alike) falls back to scale 1 through
        the last pair."""
        x = np.array([self.convs(cfg) for cfg, _ in measured])
        y = np.array([ms for _, ms in measured])
        if len(x) > 1 and np.ptp(x) > 1e-9 * max(x.max(), 1e-12):
            scale, offset = np.polyfit(x, y, 1)
            if scale > 0:
                return replace(self, scale=float(scale), offset=float(offset))
        return replace(self, scale=1.0, offset=float(y[-1] - x[-1]))


def _secants(table: LatencyTable, shapes: Mapping[str, ConvShape]
             ) -> tuple[dict[str, float], dict[str, float]]:
    """Per conv: ms saved per output channel and per input channel, from the current width
    to :func:`narrower` of it."""
    def ends(s: ConvShape, field: str) -> tuple[ConvShape, int]:
        width = getattr(s, field)
        return replace(s, **{field: narrower(width)}), width - narrower(width)

    fields = ("c_out", "c_in")
    table.ensure([*shapes.values(), *(ends(s, f)[0] for s in shapes.values() for f in fields)])
    slopes: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for name, s in shapes.items():
        for slope, f in zip(slopes, fields, strict=True):
            smaller, removed = ends(s, f)
            slope[name] = (table.ms(s) - table.ms(smaller)) / removed
    return slopes


def class_latency(analysis: ChannelAnalysis, table: LatencyTable, img_size: int) -> np.ndarray:
    """Per class of ``analysis``: the ms one of its channels costs the convs that produce it
    and read it (secants, see the module docstring; noise can make a secant negative, which
    the ranking's floor turns into "costs nothing")."""
    per_out, per_in = _secants(table, conv_shapes(analysis.cfg, img_size))
    return class_costs(analysis, per_out, per_in)


def block_latency(cfg: Cfg, blocks: Sequence[Block], table: LatencyTable,
                  img_size: int) -> np.ndarray:
    """Per block: the ms of the convs it removes (the add it also removes is left out)."""
    shapes = conv_shapes(cfg, img_size)
    table.ensure(shapes.values())
    prefixes = [tuple(f"{layer_module(j)}." for j in b.layers) for b in blocks]
    return np.array([sum(table.ms(s) for n, s in shapes.items() if n.startswith(p))
                     for p in prefixes], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class LatencyContext:
    """What latency-aware pruning works with: the table, and a whole-model measurement
    (``measure(model)``: ms of its batch-1 forward at the report's input size)."""

    table: LatencyTable
    measure: Callable[[object], float]
