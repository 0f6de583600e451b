"""Training-time augmentation: random scale/translate, HSV jitter, horizontal flip.

Only scale and translation are used (no rotation or shear), so an axis-aligned box maps to
an axis-aligned box exactly and the labels stay tight. Geometry runs on uint8 pixels with
PIL (one C call), colour on the float tensor, as a few whole-image ops. Random numbers come
from torch's global generator, which ``DataLoader`` seeds differently in every worker.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from yolodata.geometry import GREY, Letterbox


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths, in the units Ultralytics users know (``hsv_h`` is a fraction of the hue
    circle, ``hsv_s``/``hsv_v`` are relative gains, ``scale`` a +/- zoom factor, ``translate``
    a fraction of the image side). A box is dropped when less than ``min_visible`` of it stays
    in the image or a side becomes shorter than ``min_box_px``."""

    flip_lr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    scale: float = 0.25
    translate: float = 0.1
    min_box_px: float = 2.0
    min_visible: float = 0.25

    def __post_init__(self):
        for name in ("flip_lr", "hsv_h", "hsv_s", "hsv_v", "scale", "min_visible"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"AugmentConfig.{name} must be in [0, 1], got {getattr(self, name)}"
                )
        if self.scale == 1:
            raise ValueError("AugmentConfig.scale must be < 1 (a zoom of 1 - scale must stay > 0)")
        if self.translate < 0 or self.min_box_px < 0:
            raise ValueError(f"AugmentConfig translate/min_box_px must be >= 0, got {self}")


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def random_affine(
    pixels: np.ndarray, boxes: torch.Tensor, lb: Letterbox, cfg: AugmentConfig
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Letterbox ``pixels`` (uint8 HWC, already resized to ``lb.resized_hw``) with a random
    zoom about the canvas centre and a random shift.

    ``boxes`` are xyxy pixels of the resized image. Returns the uint8 canvas, the boxes in
    canvas pixels clipped to it, and a mask of the boxes still visible enough to keep.
    """
    s = _uniform(1 - cfg.scale, 1 + cfg.scale)
    size = lb.img_size
    shift = [
        s * (pad - size / 2) + size / 2 + _uniform(-cfg.translate, cfg.translate) * size
        for pad in lb.pad
    ]  # canvas = s * resized + shift, per axis
    # PIL wants the inverse map, in the same continuous-pixel convention as our boxes.
    inverse = (1 / s, 0.0, -shift[0] / s, 0.0, 1 / s, -shift[1] / s)
    canvas = Image.fromarray(pixels).transform(
        (size, size), Image.Transform.AFFINE, inverse, Image.Resampling.BILINEAR, fillcolor=GREY
    )
    moved = boxes * s + boxes.new_tensor(shift * 2)
    clipped = moved.clamp(0, size)
    return np.array(canvas), clipped, _visible(moved, clipped, cfg)


def _visible(moved: torch.Tensor, clipped: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    def area(b: torch.Tensor) -> torch.Tensor:
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    wide = (clipped[:, 2] - clipped[:, 0] >= cfg.min_box_px) & (
        clipped[:, 3] - clipped[:, 1] >= cfg.min_box_px
    )
    return wide & (area(clipped) >= cfg.min_visible * area(moved))


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror a ``[C, H, W]`` image and its xyxy pixel boxes left-right."""
    width = image.shape[-1]
    x0, y0, x1, y1 = boxes.unbind(-1)
    return image.flip(-1), torch.stack((width - x1, y0, width - x0, y1), -1)


def hsv_jitter(image: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Random hue shift (up to ``hsv_h`` of the circle) and saturation/value gains
    (``1 +/- hsv_s``, ``1 +/- hsv_v``) of a ``[3, H, W]`` image in [0, 1]."""
    image = rotate_hue(image, _uniform(-cfg.hsv_h, cfg.hsv_h))
    image = scale_saturation(image, _uniform(1 - cfg.hsv_s, 1 + cfg.hsv_s))
    return scale_value(image, _uniform(1 - cfg.hsv_v, 1 + cfg.hsv_v))


def rotate_hue(image: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate colours about the grey axis by ``turns`` of a circle.

    A 3x3 matrix instead of an RGB -> HSV -> RGB round trip, which cost 5x more per image.
    Greys stay put, a third of a turn maps red to green exactly, and for the small angles
    used in training the HSV hue moves by about ``turns``.
    """
    if turns == 0:
        return image
    angle = 2 * math.pi * turns
    cos, sin = math.cos(angle), math.sin(angle)
    a, b = (1 - cos) / 3, sin / math.sqrt(3)
    m = image.new_tensor(
        [[cos + a, a - b, a + b], [a + b, cos + a, a - b], [a - b, a + b, cos + a]]
    )
    return torch.einsum("ij,jhw->ihw", m, image).clamp_(0, 1)


def scale_saturation(image: torch.Tensor, gain: float) -> torch.Tensor:
    """HSV saturation times ``gain`` (clipped at 1), hue and value kept.

    At fixed hue and value each channel is ``V * (1 - S * k)``, so scaling S scales each
    channel's distance below the maximum channel V.
    """
    v, m = image.amax(0), image.amin(0)
    limit = v / (v - m).clamp(min=1e-12)  # the gain that brings S to exactly 1
    g = limit.clamp(max=gain)
    return v - g * (v - image)


def scale_value(image: torch.Tensor, gain: float) -> torch.Tensor:
    """HSV value times ``gain`` (clipped at 1): all channels scale together."""
    v = image.amax(0)
    return image * (1 / v.clamp(min=1e-12)).clamp(max=gain)
