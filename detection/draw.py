"""Detections drawn on the picture with Pillow: one colour per class, ``name score`` tags."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from common.io import atomic_open

# Distinct, saturated colours; classes beyond them cycle.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


def draw_detections(rgb: Image.Image, detections: torch.Tensor,
                    names: Sequence[str]) -> Image.Image:
    """A copy of ``rgb`` with each ``[x1, y1, x2, y2, score, class]`` row drawn on it."""
    picture = rgb.copy()
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(10, min(picture.size) // 40))
    line = max(1, min(picture.size) // 200)
    for x1, y1, x2, y2, score, cls in detections.tolist():
        colour = PALETTE[int(cls) % len(PALETTE)]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        tag = f"{names[int(cls)]} {score:.2f}"
        anchor = "lb" if draw.textbbox((x1, y1), tag, font=font, anchor="lb")[1] >= 0 else "lt"
        left, top, right, bottom = draw.textbbox((x1, y1), tag, font=font, anchor=anchor)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
        draw.text((x1, y1), tag, fill="white", font=font, anchor=anchor)  # above, or inside
    return picture


def save_picture(picture: Image.Image, path: str | Path) -> None:
    """Write atomically, in the format the file name's suffix names (PNG when unknown)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_open(path, "wb") as f:
        picture.save(f, format=fmt)
