"""Channel selection: a pure function from class importances to a keep-plan.

Nothing here knows about models or cfgs; inputs are small arrays, so every rule is testable
with hand-made numbers. The steps, in order:

1. **Global ratio.** Rank the prunable classes by importance (mean |gamma| over their BNs) and
   remove the lowest ``ratio`` fraction of them (ties: the earlier class goes first).
2. **One width per split.** For each :class:`SameWidth <prune.graph.SameWidth>` constraint
   (a Res2Net/Triangle block's groups and K_i, or a route's chunks) choose one width ``w'``:
   the parts' mean kept count after step 1, rounded half up. Each part then keeps its ``w'``
   most important classes, so a block's channel budget follows the ratio but is shared equally.
3. **Floors and rounding**, by adding back the most important removed classes until nothing
   changes: every layer keeps at least ``min_keep`` channels (never zero), a multiple of
   ``round_to`` (or all of them; ``auto``: ``settings.auto_round_to`` of the layers' widths),
   and the parts of each split stay equally wide. A layer split into parts (a block's conv1)
   gets its floor and rounding per part.

Step 3 only adds, so it terminates; :func:`check_plan` states what a valid plan is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import PruneError
from .settings import AUTO, MinKeep, PruneSettings, auto_round_to


@dataclass(frozen=True, eq=False)
class LayerChannels:
    """One prunable layer (a BN): the class of each of its channels."""

    name: str
    classes: np.ndarray


@dataclass(frozen=True, eq=False)
class SelectionStructure:
    prunable: np.ndarray  # bool per class
    layers: tuple[LayerChannels, ...]
    same_width: tuple[tuple[np.ndarray, ...], ...]  # per constraint: class ids of each part
    _units: dict = field(default_factory=dict, repr=False)  # floor -> (constraints, units)

    @property
    def num_classes(self) -> int:
        return len(self.prunable)

    def units(self, min_keep: MinKeep) -> tuple[list[list[np.ndarray]], list[_Unit]]:
        """The split constraints (distinct parts) and what gets floors and rounding; computed
        once per floor, since a budget search selects on one structure many times."""
        if min_keep not in self._units:
            constraints = [_unique_parts(c) for c in self.same_width]
            parts = [p for c in constraints for p in c]
            self._units[min_keep] = (constraints, _units(self, parts, min_keep))
        return self._units[min_keep]


@dataclass(frozen=True)
class FloorNote:
    """The ratio would have left ``wanted`` of ``size`` channels; the floor kept ``kept``."""

    layer: str
    size: int
    wanted: int
    kept: int


@dataclass(frozen=True, eq=False)
class KeepPlan:
    keep: np.ndarray  # bool per class
    removed_by_ratio: int  # classes the global ratio alone removed
    threshold: float  # importance of the last class the ratio removed (-inf: none)
    floors: tuple[FloorNote, ...]

    def kept_positions(self, classes: np.ndarray) -> np.ndarray:
        """Indices of the kept channels of a layer / tensor whose channels are ``classes``."""
        return np.flatnonzero(self.keep[classes])


def _unique_parts(constraint: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Parts with identical classes are one part (G_i and the K_{i-1} it is added to)."""
    seen: dict[tuple[int, ...], np.ndarray] = {}
    for part in constraint:
        seen.setdefault(tuple(np.sort(part).tolist()), part)
    return list(seen.values())


def _keep_top(keep, prunable, importance, part: np.ndarray, width: int) -> None:
    classes = np.unique(part)
    cand = classes[prunable[classes]]
    n_fixed = len(classes) - len(cand)
    keep[cand] = False
    best = cand[np.argsort(-importance[cand], kind="stable")]
    keep[best[:max(width - n_fixed, 0)]] = True


def _raise_to(keep, importance, positions: np.ndarray, target: int) -> bool:
    """Keep the most important removed classes among ``positions`` until ``target`` are kept."""
    count = int(keep[positions].sum())
    if count >= target:
        return False
    classes, mult = np.unique(positions, return_counts=True)
    gone = ~keep[classes]
    classes, mult = classes[gone], mult[gone]
    order = np.argsort(-importance[classes], kind="stable")
    need = int(np.searchsorted(np.cumsum(mult[order]), target - count)) + 1
    keep[classes[order[:need]]] = True
    return True


def _round_up(count: int, step: int, size: int) -> int:
    return min(-(-count // step) * step, size)


@dataclass
class _Unit:
    """Something that gets a floor and rounding: a layer, or one part of a split layer."""

    positions: np.ndarray
    floor: int


def _units(structure: SelectionStructure, parts: list[np.ndarray],
           min_keep: MinKeep) -> list[_Unit]:
    units: list[_Unit] = []
    part_floor: dict[int, int] = {}
    part_sets = [frozenset(p.tolist()) for p in parts]
    starting: dict[int, list[int]] = {}  # a class -> the parts listed from it
    for i, p in enumerate(parts):
        starting.setdefault(int(p[0]), []).append(i)
    for layer in structure.layers:
        layer_set = set(layer.classes.tolist())
        inside = sorted(i for k in layer_set for i in starting.get(k, ())
                        if part_sets[i] <= layer_set)
        covered = (inside and sum(len(parts[i]) for i in inside) == len(layer.classes)
                   and set().union(*(part_sets[i] for i in inside)) == layer_set)
        if covered:
            floor = -(-min_keep.of(len(layer.classes)) // len(inside))
            for i in inside:
                part_floor[i] = max(part_floor.get(i, 1), floor)
        else:
            units.append(_Unit(layer.classes, min_keep.of(len(layer.classes))))
    units += [_Unit(parts[i], f) for i, f in part_floor.items()]
    return units


def select_channels(structure: SelectionStructure, importance: np.ndarray,
                    settings: PruneSettings) -> KeepPlan:
    """The keep-plan for ``settings``' ratio, floor and rounding (see the module docstring)."""
    importance = np.asarray(importance, dtype=np.float64)
    if importance.shape != (structure.num_classes,):
        raise ValueError(f"importance has shape {importance.shape}, expected "
                         f"({structure.num_classes},)")
    ratio, min_keep, round_to = settings.ratio, settings.min_keep, settings.round_to
    if round_to == AUTO:
        round_to = auto_round_to(len(layer.classes) for layer in structure.layers)
    prunable = structure.prunable

    # 1. global ratio
    cand = np.flatnonzero(prunable)
    n_remove = int(math.floor(ratio * len(cand) + 1e-9))
    order = cand[np.argsort(importance[cand], kind="stable")]
    keep = np.ones(structure.num_classes, dtype=bool)
    keep[order[:n_remove]] = False
    threshold = float(importance[order[n_remove - 1]]) if n_remove else -math.inf

    # 2. one width per split
    constraints, units = structure.units(min_keep)
    for parts in constraints:
        counts = [int(keep[p].sum()) for p in parts]
        width = int(math.floor(sum(counts) / len(counts) + 0.5))
        for p in parts:
            _keep_top(keep, prunable, importance, p, width)

    # 3. floors, rounding, equal widths: add back until stable
    before = keep.copy()
    changed = True
    while changed:
        changed = False
        for u in units:
            target = max(int(keep[u.positions].sum()), u.floor)
            changed |= _raise_to(keep, importance, u.positions,
                                 _round_up(target, round_to, len(u.positions)))
        for parts in constraints:
            widest = max(int(keep[p].sum()) for p in parts)
            for p in parts:
                changed |= _raise_to(keep, importance, p, widest)

    floors = tuple(
        FloorNote(layer.name, len(layer.classes), int(before[layer.classes].sum()),
                  int(keep[layer.classes].sum()))
        for layer in structure.layers
        if before[layer.classes].sum() < min_keep.of(len(layer.classes))
    )
    return KeepPlan(keep, n_remove, threshold, floors)


def check_plan(structure: SelectionStructure, plan: KeepPlan) -> None:
    """Raise :class:`PruneError` unless ``plan`` can be cut: run before touching any model."""
    keep = plan.keep
    if keep.shape != (structure.num_classes,):
        raise PruneError(f"keep-plan covers {keep.shape[0]} classes, expected "
                         f"{structure.num_classes}")
    pinned = np.flatnonzero(~structure.prunable & ~keep)
    if len(pinned):
        raise PruneError(f"keep-plan removes {len(pinned)} channel(s) that must stay")
    for layer in structure.layers:
        if not keep[layer.classes].any():
            raise PruneError(f"keep-plan empties {layer.name}")
    for parts in structure.same_width:
        widths = {int(keep[p].sum()) for p in parts}
        if len(widths) != 1:
            raise PruneError(f"keep-plan gives a split unequal parts: widths {sorted(widths)}")
