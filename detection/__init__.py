"""Run a detector on image files: boxes in original-image pixels, drawn and written out."""

from detection.detect import (
    detect_image,
    detections_as_json,
    find_images,
    images_below,
    open_image,
)
from detection.draw import draw_detections, save_picture

__all__ = ["detect_image", "detections_as_json", "draw_detections", "find_images",
           "images_below", "open_image", "save_picture"]
