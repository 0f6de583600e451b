"""Darknet ``.weights`` files: a small header, then float32 tensors in cfg order.

Header: int32 major, minor, revision; ``seen`` as int64 when ``major*10 + minor >= 2`` (and
both < 1000), else int32. Each (conv, bn) pair stores, with BN: bn.bias, bn.weight,
running_mean, running_var, conv.weight; without BN: conv.bias, conv.weight.

Load and save walk the same per-layer (conv, bn) iterator. Loading validates the whole file
before touching the model, so a bad file never leaves a half-loaded network.

A ``cutoff`` N limits both to layers 0..N-1 (Darknet's ``save_weights_upto`` /
``load_weights_upto``, what ``darknet partial`` writes: ``darknet53.conv.74``). Darknet's
loader stops silently at the end of a short file; here the cutoff is explicit and the file
must hold exactly those layers, so a truncated whole-model file is still an error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch

from common.io import atomic_open

from .errors import WeightsError

if TYPE_CHECKING:
    from .model import Darknet


@dataclass(frozen=True)
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def seen_is_int64(self) -> bool:
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    def to_bytes(self) -> bytes:
        seen = struct.pack("<q" if self.seen_is_int64 else "<i", self.seen)
        return struct.pack("<3i", self.major, self.minor, self.revision) + seen


def _read_header(data: bytes, path: str) -> tuple[WeightsHeader, int]:
    if len(data) < 16:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for a Darknet weights header")
    major, minor, revision = struct.unpack_from("<3i", data)
    header = WeightsHeader(major, minor, revision)
    if header.seen_is_int64:
        (seen,), size = struct.unpack_from("<q", data, 12), 20
    else:
        (seen,), size = struct.unpack_from("<i", data, 12), 16
    if len(data) < size:
        raise WeightsError(f"{path}: truncated header")
    return WeightsHeader(major, minor, revision, seen), size


def storage_tensors(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d | None) -> list[torch.Tensor]:
    """The tensors of one (conv, bn) pair in Darknet storage order."""
    if bn is not None:
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
    return [conv.bias, conv.weight]


def _layer_tensors(model: Darknet, cutoff: int | None = None
                   ) -> Iterator[tuple[int, list[torch.Tensor]]]:
    for index, layer in enumerate(model.layers):
        if cutoff is not None and index >= cutoff:
            return
        tensors = [t for conv, bn in layer.conv_bn_pairs() for t in storage_tensors(conv, bn)]
        if tensors:
            yield index, tensors


def read_weights_file(path: str | Path) -> tuple[WeightsHeader, np.ndarray]:
    """The header and the float32 values of a ``.weights`` file (no cfg needed)."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights: {e.strerror}") from None
    header, offset = _read_header(data, path)
    if (len(data) - offset) % 4:
        raise WeightsError(f"{path}: {len(data) - offset} bytes after the header is not a "
                           "whole number of float32 values")
    return header, np.frombuffer(data, dtype="<f4", offset=offset)


def prefix_floats(model: Darknet) -> list[int]:
    """``[k]``: how many floats layers 0..k-1 store (the size of a cutoff-k file's body)."""
    sizes = [0] * len(model.layers)
    for index, tensors in _layer_tensors(model):
        sizes[index] = sum(t.numel() for t in tensors)
    return [int(v) for v in np.cumsum([0, *sizes])]


def cutoffs_holding(model: Darknet, count: int) -> list[int]:
    """The cutoffs whose files hold exactly ``count`` floats (several when weightless
    layers such as ``[shortcut]`` sit at the boundary); empty when none does."""
    return [k for k, size in enumerate(prefix_floats(model)) if k and size == count]


def load_weights(model: Darknet, path: str | Path, cutoff: int | None = None) -> WeightsHeader:
    """Fill ``model`` (layers 0..cutoff-1 with a cutoff) from a ``.weights`` file; on any
    error raise and change nothing."""
    path = str(path)
    header, floats = read_weights_file(path)
    if cutoff is not None:
        _check_cutoff(model, path, cutoff, len(floats))
    needed = _float_count(model)
    plan: list[tuple[torch.Tensor, np.ndarray]] = []
    ptr = 0
    for index, tensors in _layer_tensors(model, cutoff):
        layer_size = sum(t.numel() for t in tensors)
        if ptr + layer_size > len(floats):
            section = model.cfg.layers[index]
            raise WeightsError(
                f"{path}: layer {index} [{section.kind}] (cfg line {section.line}) expects "
                f"{layer_size} floats, found {len(floats) - ptr}; the cfg needs {needed} floats, "
                f"the file has {len(floats)} (weights for another cfg?)"
            )
        for t in tensors:
            plan.append((t, floats[ptr:ptr + t.numel()]))
            ptr += t.numel()
    if ptr != len(floats):
        raise WeightsError(
            f"{path}: expected {needed} floats for {model.cfg.path}, found {len(floats)} "
            f"({len(floats) - needed} extra after the last layer; weights for another cfg?)"
        )
    copy_plan(plan)
    return header


def copy_plan(plan: list[tuple[torch.Tensor, np.ndarray]]) -> None:
    """Copy checked (tensor, values) pairs into the model: the only mutating step."""
    with torch.no_grad():
        for t, values in plan:
            t.copy_(torch.from_numpy(values.copy()).view_as(t))


def _check_cutoff(model: Darknet, path: str, cutoff: int, count: int) -> None:
    """A cutoff must name layers of the cfg and match the file's size exactly."""
    n = len(model.layers)
    if not 0 < cutoff <= n:
        raise WeightsError(f"cutoff {cutoff} is outside {model.cfg.path}'s layers 1..{n}")
    needed = prefix_floats(model)[cutoff]
    if needed == count:
        return
    fits = cutoffs_holding(model, count)
    holds = (f"what cutoff {_span(fits)} needs" if fits
             else "no cutoff of this cfg (weights for another cfg?)")
    raise WeightsError(f"{path}: cutoff {cutoff} needs {needed} floats (layers 0-{cutoff - 1} "
                       f"of {model.cfg.path}), the file holds {count}: {holds}")


def _span(cutoffs: list[int]) -> str:
    """``74``, or ``73 to 74`` when weightless layers make several cutoffs equal."""
    return str(cutoffs[0]) if len(cutoffs) == 1 else f"{cutoffs[0]} to {cutoffs[-1]}"


def write_weights(model: Darknet, f: BinaryIO, header: WeightsHeader | None = None,
                  cutoff: int | None = None) -> None:
    """Write ``model`` (layers 0..cutoff-1 with a cutoff) as Darknet weights into ``f``."""
    f.write((header or model.header).to_bytes())
    for _, tensors in _layer_tensors(model, cutoff):
        for t in tensors:
            f.write(t.detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes())


def weights_nbytes(model: Darknet, header: WeightsHeader | None = None) -> int:
    """The size of ``model``'s ``.weights`` file, without writing it."""
    return len((header or model.header).to_bytes()) + 4 * _float_count(model)


def _float_count(model: Darknet) -> int:
    return sum(t.numel() for _, tensors in _layer_tensors(model) for t in tensors)


def save_weights(model: Darknet, path: str | Path, header: WeightsHeader | None = None,
                 cutoff: int | None = None) -> None:
    """Write ``model`` (layers 0..cutoff-1 with a cutoff) as Darknet weights, atomically."""
    with atomic_open(path, "wb") as f:
        write_weights(model, f, header, cutoff)
