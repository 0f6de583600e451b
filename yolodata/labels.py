"""YOLO label files, parsed strictly, and an up-front check of a whole split.

Policy (chosen so that bad data fails before the first epoch, not in the middle of one):

* a bad label line always raises ``LabelError`` naming ``file:line`` -- a silently dropped
  box would bias training and evaluation without anyone noticing;
* an image PIL cannot open is skipped and reported in ``SplitCheck.skipped`` (one corrupt
  download should not stop a run), unless ``skip_unreadable=False``; a split with no
  readable image at all raises. The same holds wherever an image turns out unreadable later
  (``yolodata.dataset``: filling the RAM cache, or decoding in an epoch, in this process or a
  loader worker): it is left out and counted, never an error.

A label file holds one object per line, ``class cx cy w h``, all four coordinates normalised
to the image size. Blank lines are ignored; a missing label file means the image has no
objects (YOLO's convention for negatives).
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.io import read_text
from yolodata.errors import DataError, ImageError, LabelError
from yolodata.image import IMAGE_ERRORS

COORD_EPS = 1e-3  # tolerance for coordinates written as e.g. 1.0000004 by other tools
COORD_NAMES = ("cx", "cy", "w", "h")


def label_path(image: Path) -> Path:
    """``.../images/x/foo.png`` -> ``.../labels/x/foo.txt`` (the last ``images`` component).

    Images outside any ``images`` folder keep their labels beside them (Darknet's layout).
    """
    parts = image.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_labels(path: Path, num_classes: int) -> np.ndarray:
    """Rows ``(class, cx, cy, w, h)`` as float32 ``[N, 5]``; empty if the file is missing."""
    if not path.exists():
        return np.zeros((0, 5), np.float32)
    text = read_text(path, "label file")
    rows = [
        _parse_line(line, path, lineno, num_classes)
        for lineno, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    return np.array(rows, np.float32).reshape(-1, 5)


def _parse_line(line: str, path: Path, lineno: int, num_classes: int) -> list[float]:
    fields = line.split()
    if len(fields) != 5:
        raise LabelError(f"expected 5 fields 'class cx cy w h', got {len(fields)}", path, lineno)
    values = [_number(f, path, lineno) for f in fields]
    cls = values[0]
    if not cls.is_integer():
        raise LabelError(f"class id {fields[0]!r} is not an integer", path, lineno)
    if not 0 <= cls < num_classes:
        raise LabelError(
            f"class id {int(cls)} outside names ({num_classes} names: ids 0..{num_classes - 1})",
            path,
            lineno,
        )
    for name, value in zip(COORD_NAMES, values[1:], strict=True):
        if not -COORD_EPS <= value <= 1 + COORD_EPS:
            raise LabelError(f"{name}={value:g} outside [0, 1]", path, lineno)
        if name in ("w", "h") and value <= 0:
            raise LabelError(f"{name}={value:g} must be > 0", path, lineno)
    return values


def _number(field: str, path: Path, lineno: int) -> float:
    try:
        value = float(field)
    except ValueError:
        raise LabelError(f"{field!r} is not a number", path, lineno) from None
    if not math.isfinite(value):
        raise LabelError(f"{field!r} is not a finite number", path, lineno)
    return value


@dataclass(frozen=True)
class SplitCheck:
    """The images worth loading, and those skipped with the reason why."""

    images: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]


def check_split(
    images: Sequence[Path], num_classes: int, split: str = "split", skip_unreadable: bool = True
) -> SplitCheck:
    """Parse every label file and open every image header before training starts."""
    if not images:
        raise DataError(f"{split}: no images")
    usable, skipped = [], []
    for image in images:
        read_labels(label_path(image), num_classes)
        try:
            verify_image(image)
        except ImageError as e:
            if not skip_unreadable:
                raise
            skipped.append((image, e.reason))
        else:
            usable.append(image)
    if not usable:
        raise DataError(f"{split}: none of its {len(images)} images is readable")
    return SplitCheck(tuple(usable), tuple(skipped))


JPEG_END = b"\xff\xd9"  # the end-of-image marker


def verify_image(path: Path) -> None:
    """Check the header and the file's integrity without a full decode where PIL can.

    PIL's ``verify`` walks a PNG's chunks, but not a JPEG's entropy-coded data, so a JPEG
    cut short (a half-finished download) would pass and fail only when decoded in an epoch.
    A JPEG that does not end with its end-of-image marker is therefore decoded once, here
    (a few writers append data after the marker; those images stay).
    """
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if fmt == "JPEG" and not _ends_with(path, JPEG_END):
            with Image.open(path) as im:
                im.load()
    except IMAGE_ERRORS as e:
        raise ImageError(f"cannot read image ({e})", path) from e


def _ends_with(path: Path, tail: bytes) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - len(tail), 0))
        return f.read() == tail
