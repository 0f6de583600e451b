"""``YoloDataset``: images + YOLO labels -> letterboxed tensors, and the batch collate.

Images are decoded to RGB and resized so the longer side is ``img_size``. Decoding a PNG
cost more than all the augmentation, so small datasets keep those uint8 arrays in RAM
(``cache_images``; by default when they fit ``CACHE_BUDGET_BYTES``), and ``DataLoader``
workers forked afterwards share them. Everything after that is one PIL call and a handful of
whole-tensor torch ops per image.
"""

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from yolodata.augment import AugmentConfig, hflip, hsv_jitter, random_affine
from yolodata.errors import ImageError
from yolodata.geometry import GREY, Letterbox
from yolodata.image import IMAGE_ERRORS, to_rgb, viewed_size
from yolodata.labels import label_path, read_labels

# Cache decoded images when they fit in this many bytes (upper bound: n * S * S * 3). With
# the cache, un-augmented loading ran ~4x faster and augmented 1.2-2x on 2 cores.
CACHE_BUDGET_BYTES = 1 << 30


class Sample(NamedTuple):
    """One item of ``YoloDataset``.

    image:   float32 ``[3, S, S]``, RGB in [0, 1], letterboxed with grey (128 / 255) padding.
    targets: float32 ``[N, 5]`` rows ``(class, cx, cy, w, h)``, normalised to the S x S canvas.
    path:    the image file, as a string.
    orig_hw: ``(height, width)`` of the file; ``Letterbox.fit(orig_hw, S)`` maps boxes back
             (valid for un-augmented samples).
    """

    image: torch.Tensor
    targets: torch.Tensor
    path: str
    orig_hw: tuple[int, int]


class Unreadable(NamedTuple):
    """What ``YoloDataset[i]`` gives for an image that cannot be decoded; ``collate`` leaves
    it out of the batch and lists it in ``Batch.skipped``."""

    path: str
    reason: str


class Batch(NamedTuple):
    """``collate`` output.

    images:  float32 ``[B, 3, S, S]``.
    targets: float32 ``[M, 6]`` rows ``(batch_index, class, cx, cy, w, h)`` -- the YOLOv3
             layout, all objects of the batch in one tensor.
    paths:   ``B`` strings.
    orig_hw: ``B`` ``(height, width)`` tuples.
    skipped: ``(path, reason)`` of the images of this batch that could not be decoded (not
             among the ``B``).
    """

    images: torch.Tensor
    targets: torch.Tensor
    paths: tuple[str, ...]
    orig_hw: tuple[tuple[int, int], ...]
    skipped: tuple[tuple[str, str], ...] = ()


def collate(batch: Sequence[Sample | Unreadable]) -> Batch:
    samples = [s for s in batch if isinstance(s, Sample)]
    targets = [
        torch.cat((torch.full((len(s.targets), 1), float(i)), s.targets), 1)
        for i, s in enumerate(samples)
    ]
    return Batch(
        torch.stack([s.image for s in samples]) if samples else torch.zeros(0, 3, 0, 0),
        torch.cat(targets).reshape(-1, 6) if samples else torch.zeros(0, 6),
        tuple(s.path for s in samples),
        tuple(s.orig_hw for s in samples),
        tuple((s.path, s.reason) for s in batch if isinstance(s, Unreadable)),
    )


class YoloDataset(Dataset):
    """Images and their labels, letterboxed to ``img_size``; see ``Sample`` for the layout.

    All label files are parsed in the constructor, so a bad line raises ``LabelError``
    before training starts. ``labels[i]`` keeps image ``i``'s rows ``(class, cx, cy, w, h)``
    normalised to the original image (the ground truth evaluation wants).

    ``augment=True`` applies, in order: random zoom/shift while letterboxing (boxes clipped,
    mostly-hidden or tiny ones dropped), HSV jitter, random left-right flip; strengths in
    ``hyp``. ``cache_images=None`` caches when the set fits ``CACHE_BUDGET_BYTES``.

    Unreadable images (``yolodata.labels``' policy: skip and count): one that fails to decode
    while the cache is filled is left out of the dataset; one that fails later gives an
    ``Unreadable`` item, which ``collate`` leaves out of its batch. ``skipped`` maps each
    to the reason, in this process; ``engine.data.EpochLoader`` adds what its worker
    processes found, so the next epoch's workers do not decode those files again.
    """

    def __init__(
        self,
        images: Sequence[Path | str],
        num_classes: int,
        img_size: int = 160,
        augment: bool = False,
        cache_images: bool | None = None,
        hyp: AugmentConfig | None = None,
    ):
        if img_size < 1:
            raise ValueError(f"img_size must be positive, got {img_size}")
        self.images = tuple(Path(p) for p in images)
        self.img_size, self.augment = img_size, augment
        self.hyp = hyp or AugmentConfig()
        self.labels = tuple(
            torch.from_numpy(read_labels(label_path(p), num_classes)) for p in self.images
        )
        self.skipped: dict[str, str] = {}
        if cache_images is None:
            cache_images = len(self) * img_size * img_size * 3 <= CACHE_BUDGET_BYTES
        self._cache = self._fill_cache() if cache_images else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample | Unreadable:
        path = str(self.images[index])
        decoded = (self._cache[index] if self._cache is not None
                   else None if path in self.skipped else self._try_decode(index))
        if decoded is None:
            return Unreadable(path, self.skipped[path])
        pixels, orig_hw = decoded
        lb = Letterbox.fit(orig_hw, self.img_size)
        labels = self.labels[index]
        h, w = lb.resized_hw
        boxes = cxcywh_to_xyxy(labels[:, 1:]) * labels.new_tensor([w, h, w, h])  # resized px
        cls = labels[:, :1]
        if self.augment:
            image, boxes, cls = self._augment(pixels, boxes, cls, lb)
        else:
            image, boxes = _to_tensor(_paste(pixels, lb)), boxes + boxes.new_tensor(lb.pad * 2)
        boxes = boxes.clamp(0, self.img_size)
        targets = torch.cat((cls, xyxy_to_cxcywh(boxes) / self.img_size), 1)
        return Sample(image, targets, path, orig_hw)

    def _augment(
        self, pixels: np.ndarray, boxes: torch.Tensor, cls: torch.Tensor, lb: Letterbox
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hyp = self.hyp
        canvas, boxes, keep = random_affine(pixels, boxes, lb, hyp)
        image, boxes, cls = _to_tensor(canvas), boxes[keep], cls[keep]
        if hyp.hsv_h or hyp.hsv_s or hyp.hsv_v:
            image = hsv_jitter(image, hyp)
        if torch.rand(()).item() < hyp.flip_lr:
            image, boxes = hflip(image, boxes)
        return image, boxes, cls

    def _fill_cache(self) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """Every image decoded; those that fail are left out of the dataset."""
        # PIL releases the GIL while decoding, so threads use every core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            decoded = list(pool.map(self._try_decode, range(len(self))))
        keep = [i for i, d in enumerate(decoded) if d is not None]
        self.images = tuple(self.images[i] for i in keep)
        self.labels = tuple(self.labels[i] for i in keep)
        return [decoded[i] for i in keep]

    def _try_decode(self, index: int) -> tuple[np.ndarray, tuple[int, int]] | None:
        try:
            return self._decode(index)
        except ImageError as e:
            self.skipped[str(self.images[index])] = e.reason
            return None

    def _decode(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """RGB uint8 ``[h, w, 3]`` resized to the letterbox size, and the picture's ``(h, w)``
        as viewed (``yolodata.image``: the frame its labels are drawn in)."""
        path = self.images[index]
        try:
            with Image.open(path) as im:
                orig_hw = viewed_size(im)
                lb = Letterbox.fit(orig_hw, self.img_size)
                h, w = lb.resized_hw
                # JPEG: decode at reduced scale when it can
                return _resized(to_rgb(im, draft=(w, h)), lb), orig_hw
        except IMAGE_ERRORS as e:
            raise ImageError(f"cannot read image ({e})", path) from e


def letterbox_image(rgb: Image.Image, img_size: int) -> tuple[torch.Tensor, Letterbox]:
    """An RGB image as the loader's un-augmented input ``[3, S, S]``, and its letterbox."""
    lb = Letterbox.fit((rgb.height, rgb.width), img_size)
    return _to_tensor(_paste(_resized(rgb, lb), lb)), lb


def _resized(rgb: Image.Image, lb: Letterbox) -> np.ndarray:
    h, w = lb.resized_hw
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
    return np.array(rgb)  # a writable copy, as torch wants


def _paste(pixels: np.ndarray, lb: Letterbox) -> np.ndarray:
    canvas = np.empty((lb.img_size, lb.img_size, 3), np.uint8)
    canvas[:] = GREY
    (h, w), (left, top) = lb.resized_hw, lb.pad
    canvas[top : top + h, left : left + w] = pixels
    return canvas


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float32 CHW in [0, 1]."""
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)
