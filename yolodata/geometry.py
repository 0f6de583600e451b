"""The letterbox transform, shared by the loader and by evaluation (box formats: common.boxes).

Coordinates are continuous pixels: pixel ``i`` spans ``[i, i + 1)``, so an image of width
``W`` spans ``[0, W]`` and scaling by a factor maps box edges exactly.
"""

from dataclasses import dataclass

import torch

# Letterbox padding: uint8 128, i.e. 128 / 255 = 0.502 in [0, 1] units -- the 8-bit grey
# nearest Darknet's 0.5, so that augmented and plain samples pad with the same value.
GREY = (128, 128, 128)


@dataclass(frozen=True)
class Letterbox:
    """Where an ``orig_hw`` image lands in a square ``img_size`` canvas.

    The image is resized so its longer side is ``img_size`` (aspect kept, each side rounded
    to whole pixels) and pasted at integer offset ``pad = (left, top)``; the rest is grey.
    Because the offsets are integers, the paste is exact and the transform is invertible.
    """

    img_size: int
    orig_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad: tuple[int, int]

    @classmethod
    def fit(cls, orig_hw: tuple[int, int], img_size: int) -> "Letterbox":
        h0, w0 = orig_hw
        if h0 < 1 or w0 < 1 or img_size < 1:
            raise ValueError(f"letterbox needs positive sizes, got {orig_hw=} {img_size=}")
        ratio = img_size / max(h0, w0)
        h, w = max(1, round(h0 * ratio)), max(1, round(w0 * ratio))
        return cls(img_size, (h0, w0), (h, w), ((img_size - w) // 2, (img_size - h) // 2))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Per-axis factors original -> resized (they differ slightly after rounding)."""
        return self.resized_hw[1] / self.orig_hw[1], self.resized_hw[0] / self.orig_hw[0]

    def to_letterbox(self, xyxy: torch.Tensor) -> torch.Tensor:
        """Original-image pixel boxes ``[..., 4]`` -> canvas pixel boxes."""
        sx, sy = self.scale_xy
        scale = xyxy.new_tensor([sx, sy, sx, sy])
        shift = xyxy.new_tensor([self.pad[0], self.pad[1]] * 2)
        return xyxy * scale + shift

    def to_original(self, xyxy: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """Canvas pixel boxes (e.g. detections) -> original-image pixel boxes."""
        sx, sy = self.scale_xy
        scale = xyxy.new_tensor([sx, sy, sx, sy])
        shift = xyxy.new_tensor([self.pad[0], self.pad[1]] * 2)
        boxes = (xyxy - shift) / scale
        if clip:
            h0, w0 = self.orig_hw
            boxes = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w0, h0, w0, h0]))
        return boxes
