"""One image through a detector: letterbox, forward, NMS, boxes back to the image's pixels.

The model is a backend (``shipping.backends``): images ``[B, 3, S, S]`` to
``[B, N, 5 + classes]`` eval detections, in PyTorch or in the runtime of an exported file.
The input is made as ``main.py eval`` makes it (``yolodata.letterbox_image``), and the
boxes are mapped back with the same ``Letterbox``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from common.errors import UserError
from evaluation import postprocess
from yolodata import letterbox_image
from yolodata.image import open_rgb
from yolodata.spec import IMAGE_SUFFIXES

Detector = Callable[[torch.Tensor], torch.Tensor]


def find_images(source: str | Path) -> list[Path]:
    """``source`` itself, or the image files (by suffix) directly inside it, sorted (those in
    its sub-folders: :func:`images_below`). A URL is refused: nothing is downloaded."""
    if isinstance(source, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source):
        raise UserError(f"--source {source}: a URL; detect reads local files only (nothing "
                        "is downloaded): download it first and pass the file")
    source = Path(source)
    if source.is_dir():
        images = sorted(p for p in source.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UserError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    return [source]


def images_below(source: str | Path) -> int:
    """How many image files the sub-folders of folder ``source`` hold (not processed)."""
    source = Path(source)
    if not source.is_dir():
        return 0
    return sum(1 for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
               and p.parent != source and p.is_file())


def open_image(path: Path) -> Image.Image:
    """The file as viewed, 8-bit RGB (``yolodata.image``, as training and eval read it);
    ImageError naming it when it cannot be read."""
    return open_rgb(path)


@torch.no_grad()
def detect_image(model: Detector, rgb: Image.Image, img_size: int, conf_thres: float,
                 iou_thres: float, max_det: int = 300) -> torch.Tensor:
    """``[K, 6]`` detections ``x1, y1, x2, y2, score, class`` in ``rgb``'s pixels, best first.

    One class per box (its best), as a user looking at the picture expects.
    """
    image, lb = letterbox_image(rgb, img_size)
    pred = model(image.unsqueeze(0))
    det = postprocess(pred.float().cpu(), conf_thres, iou_thres, max_det,
                      multi_label=False)[0]
    return torch.cat((lb.to_original(det[:, :4]), det[:, 4:]), 1)


def detections_as_json(detections: torch.Tensor, names: Sequence[str]) -> list[dict]:
    """``detect_image`` rows as JSON objects: class, name, score, box (pixels, 0.01 px)."""
    return [{"class": int(c), "name": names[int(c)], "score": round(s, 5),
             "box": [round(v, 2) for v in (x1, y1, x2, y2)]}
            for x1, y1, x2, y2, s, c in detections.tolist()]
