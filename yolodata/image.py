"""One way to turn an image file into the 8-bit RGB picture every command works on.

detect, eval and training all read pictures through :func:`open_rgb` (or :func:`viewed_size`
and :func:`to_rgb` on an open file), so a file gives the same pixels everywhere:

* **Orientation as viewers show it.** A phone writes the sensor's frame and an EXIF
  orientation tag (6: turn 90° clockwise to view). Viewers, OpenCV's ``imread`` and labelling
  tools apply it, so boxes drawn on the picture a person sees are in that frame:
  ``PIL.ImageOps.exif_transpose`` applies it here too (``FRAME`` names it in reports).
* **Every bit depth scaled, not clipped.** A 16-bit greyscale PNG opens as mode ``I;16`` or
  ``I`` (0..65535); Pillow's ``convert`` would clip it at 255 (a white picture). Its values are
  scaled to 0..255 (÷257, rounded), as for a 16-bit colour PNG, which Pillow already reduces
  to its high bytes. Float images (``F``) in 0..1 are scaled by 255.
* **Every mode to RGB.** Palette (``P``, with or without transparency), ``L``, ``LA``,
  ``RGBA``, ``CMYK``, ``YCbCr``, ``1``: colour converted by Pillow; transparency dropped (the
  colour under it kept), as a detector trained on RGB expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from yolodata.errors import ImageError

# What PIL raises for a file it cannot decode (UnidentifiedImageError is an OSError).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
FRAME = "as viewers show the image: EXIF orientation applied"
ORIENTATION = 0x0112  # the EXIF tag
TRANSPOSED = {5, 6, 7, 8}  # orientations that swap width and height


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ORIENTATION, 1))
    except (TypeError, ValueError):  # a broken tag: leave the picture as stored
        return 1


def viewed_size(im: Image.Image) -> tuple[int, int]:
    """``(height, width)`` of the open image as a viewer shows it."""
    if _orientation(im) in TRANSPOSED:
        return im.width, im.height
    return im.height, im.width


def to_rgb(im: Image.Image, draft: tuple[int, int] | None = None) -> Image.Image:
    """The open image as viewed, 8-bit RGB (see the module docstring). ``draft``: the
    ``(width, height)`` wanted after orientation; a JPEG is then decoded at the smallest
    scale not below it (``Image.draft``)."""
    if draft is not None:
        w, h = draft
        im.draft("RGB", (h, w) if _orientation(im) in TRANSPOSED else (w, h))
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        im = Image.fromarray(_to_uint8(np.asarray(im)), "L")
    elif im.mode in ("P", "PA") or (im.mode == "LA"):
        im = im.convert("RGBA")
    return im if im.mode == "RGB" else im.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit (or wider integer) greyscale to 8 bits by ÷257; float 0..1 by ×255."""
    if values.dtype.kind == "f":
        scaled = values * (255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0)
    else:
        scaled = values.astype(np.float64) / 257.0
    return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def open_rgb(path: str | Path) -> Image.Image:
    """The file as viewed, 8-bit RGB; :class:`ImageError` naming it when it cannot be read."""
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except IMAGE_ERRORS as e:
        raise ImageError(f"cannot read image ({e})", path) from e
