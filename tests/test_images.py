"""Pictures as phones and other tools write them (``yolodata.image``): EXIF orientation,
16-bit greyscale, every Pillow mode; read the same way by detect, eval and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detection import detect_image, open_image
from yolodata import YoloDataset
from yolodata.image import open_rgb

RED = (220, 20, 20)
SQUARE = (8, 40, 24, 56)  # x1, y1, x2, y2 in the viewer's frame of a 96 x 64 picture


def viewer_picture() -> Image.Image:
    """Grey, 96 wide and 64 high, a red square low on the left: what a viewer shows."""
    im = Image.new("RGB", (96, 64), (128, 128, 128))
    im.paste(RED, SQUARE)
    return im


def phone_jpeg(path):
    """The picture as a phone held upright writes it: the sensor's frame (turned 90° the
    other way, 64 wide and 96 high) and EXIF orientation 6 (turn 90° clockwise to view)."""
    sensor = viewer_picture().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sensor.save(path, quality=95, exif=exif)
    return path


def red_finder(images: torch.Tensor) -> torch.Tensor:
    """A 'detector' that boxes the red pixels of its input: ``[1, 1, 6]`` cx, cy, w, h,
    objectness, class 0 probability, in input pixels."""
    r, g = images[0, 0], images[0, 1]
    ys, xs = torch.nonzero((r > 0.6) & (g < 0.3), as_tuple=True)
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    row = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0, 1.0])
    return row.reshape(1, 1, 6)


def test_an_exif_6_photo_is_detected_in_the_viewers_frame(tmp_path):
    path = phone_jpeg(tmp_path / "phone.jpg")
    rgb = open_image(path)
    assert rgb.size == (96, 64)
    diff = np.abs(np.asarray(rgb, np.int16) - np.asarray(viewer_picture(), np.int16))
    assert diff.mean() < 3
    det = detect_image(red_finder, rgb, 128, 0.25, 0.45)
    assert det.shape[0] == 1
    assert det[0, :4].tolist() == pytest.approx(SQUARE, abs=2.0)


def test_training_reads_the_photo_in_the_same_frame(tmp_path):
    path = phone_jpeg(tmp_path / "phone.jpg")
    pixels, hw = YoloDataset([path], 1, img_size=96, cache_images=False)._decode(0)
    assert hw == (64, 96)
    assert np.array_equal(pixels, np.asarray(open_rgb(path)))


def test_a_16_bit_png_equals_its_8_bit_version(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 48).round().astype(np.uint16).reshape(48, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    eight = (ramp / 257).round().astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "eight.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # what Pillow makes of it
    deep = np.asarray(open_rgb(tmp_path / "deep.png"))
    assert np.array_equal(deep, np.asarray(open_rgb(tmp_path / "eight.png")))
    assert deep.max() == 255 and deep.min() == 0 and deep.mean() == pytest.approx(127.5, abs=1)
    train = YoloDataset([tmp_path / "deep.png"], 1, img_size=64, cache_images=False)
    assert np.array_equal(train._decode(0)[0], deep)


def modes(tmp_path) -> dict[str, object]:
    """One file per Pillow mode, each the same colours as far as the mode can hold them."""
    base = Image.new("RGB", (32, 32), (40, 90, 200))
    base.paste((250, 240, 10), (4, 4, 20, 20))
    files = {}
    for mode, ext in [("P", "png"), ("L", "png"), ("LA", "png"), ("RGBA", "png"),
                      ("CMYK", "jpg"), ("1", "png"), ("I;16", "png"), ("PA", "png")]:
        path = tmp_path / f"{mode.replace(';', '_')}.{ext}"
        if mode == "I;16":
            Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257).save(path)
        elif mode == "PA":
            base.convert("P").save(path, transparency=0)
        else:
            base.convert(mode).save(path)
        files[mode] = path
    return files


def test_every_mode_reads_the_same_in_detect_and_training(tmp_path):
    for mode, path in modes(tmp_path).items():
        rgb = open_image(path)
        assert rgb.mode == "RGB" and rgb.size == (32, 32), mode
        pixels = YoloDataset([path], 1, img_size=32, cache_images=False)._decode(0)[0]
        assert np.array_equal(pixels, np.asarray(rgb)), mode
        if mode in ("L", "LA", "I;16"):  # greyscale: 8 bits of the same grey
            expected = np.asarray(Image.open(tmp_path / "L.png"))
            assert np.abs(np.asarray(rgb)[..., 0].astype(int) - expected).max() <= 1, mode
