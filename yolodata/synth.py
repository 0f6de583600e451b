"""Synthetic detection scenes: flat-coloured shapes on textured backgrounds.

A scene is data (background pixels + a list of shapes) and rendering is a pure function of
it, so tests can render one shape alone on the same background and check that the pixels it
changes span exactly its labelled box. Every random draw comes from the ``rng`` passed in,
which makes a scene a function of its seed only.

Object sizes are drawn from three regimes (small / medium / large, as fractions of the image
side) so that all three YOLOv3 scales (stride 8, 16, 32) see objects that suit them.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

NAMES = ("circle", "square", "triangle", "cross")

# (low, high) of an object's longer side as a fraction of the image side, and the chance of
# each regime. The smallest, 10 px at 160 (8 px at the 128 px training size), is about where
# a circle, square, triangle and cross stop being told apart: below it an object can still
# be found but not classified, and mAP measures the renderer rather than the detector.
SIZE_REGIMES = ((0.0625, 0.12), (0.12, 0.28), (0.28, 0.60))
REGIME_WEIGHTS = (0.4, 0.35, 0.25)
MIN_SIDE_PX = 8
MAX_OBJECTS = 6
# A new box is rejected when it would cover more than this fraction of a smaller box.
MAX_COVER = 0.2
MIN_CONTRAST = 110.0  # RGB distance between an object and the mean background under it


@dataclass(frozen=True)
class Shape:
    """One object: class index, RGB colour and inclusive pixel box ``x0, y0, x1, y1``.

    ``orient`` only matters for triangles (which way the apex points, 0..3).
    """

    cls: int
    color: tuple[int, int, int]
    box: tuple[int, int, int, int]
    orient: int = 0

    def label(self, img_size: int) -> tuple[int, float, float, float, float]:
        """YOLO label ``(class, cx, cy, w, h)``; pixel ``i`` spans ``[i, i + 1)``."""
        x0, y0, x1, y1 = self.box
        return (
            self.cls,
            (x0 + x1 + 1) / 2 / img_size,
            (y0 + y1 + 1) / 2 / img_size,
            (x1 - x0 + 1) / img_size,
            (y1 - y0 + 1) / img_size,
        )


@dataclass(frozen=True)
class Scene:
    background: np.ndarray  # uint8 [S, S, 3]
    shapes: tuple[Shape, ...]


def sample_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Linear colour gradient + a low-frequency ripple + pixel noise, as uint8 HWC.

    This dominates generation time, so it is built channel-first from separable 1-D ramps in
    float32 with Python-float scalars (a NumPy float64 scalar would promote every array), and
    the noise is uniform (cheaper to draw than Gaussian; its shape does not matter here).
    """
    c0, c1 = rng.uniform(0, 255, (2, 3, 1, 1)).astype(np.float32)
    angle = float(rng.uniform(0, 2 * np.pi))
    freq, phase = rng.uniform(1, 6, 2).tolist(), rng.uniform(0, 2 * np.pi, 2).tolist()
    amplitude, sigma = float(rng.uniform(0, 25)), float(rng.uniform(3, 14))
    r = (np.arange(size, dtype=np.float32) + 0.5) / size
    t = (math.cos(angle) * r[None, :] + math.sin(angle) * r[:, None]) / math.sqrt(2) + 0.5
    wave_y = np.sin(2 * math.pi * freq[1] * r + phase[1])
    wave_x = np.sin(2 * math.pi * freq[0] * r + phase[0])
    img = t * (c1 - c0) + (c0 + amplitude * np.outer(wave_y, wave_x))
    noise = rng.random((3, size, size), dtype=np.float32) - 0.5
    img += (sigma * math.sqrt(12)) * noise  # uniform noise with standard deviation sigma
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))


def _sample_box(rng: np.random.Generator, size: int) -> tuple[int, int, int, int]:
    low, high = SIZE_REGIMES[rng.choice(len(SIZE_REGIMES), p=REGIME_WEIGHTS)]
    side = np.exp(rng.uniform(np.log(low), np.log(high))) * size
    aspect = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    w = max(MIN_SIDE_PX, min(size, round(side * min(1.0, aspect))))
    h = max(MIN_SIDE_PX, min(size, round(side * min(1.0, 1 / aspect))))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    return x0, y0, x0 + w - 1, y0 + h - 1


def _covers_too_much(box: tuple[int, ...], others: list[tuple[int, ...]]) -> bool:
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0]) + 1
        ih = min(box[3], o[3]) - max(box[1], o[1]) + 1
        if iw > 0 and ih > 0:
            smaller = min(_area(box), _area(o))
            if iw * ih > MAX_COVER * smaller:
                return True
    return False


def _area(box: tuple[int, ...]) -> int:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def _contrasting_color(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour far enough from ``under`` (mean RGB) to be visible; best of 16 draws."""
    candidates = rng.integers(0, 256, (16, 3))
    dist = np.linalg.norm(candidates - under, axis=1)
    ok = np.flatnonzero(dist >= MIN_CONTRAST)
    pick = ok[0] if ok.size else int(np.argmax(dist))
    return tuple(int(v) for v in candidates[pick])


def sample_scene(rng: np.random.Generator, size: int) -> Scene:
    """1..MAX_OBJECTS shapes with limited overlap; a box that cannot be placed is dropped."""
    background = sample_background(rng, size)
    boxes: list[tuple[int, int, int, int]] = []
    shapes = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _try in range(20):
            box = _sample_box(rng, size)
            if not _covers_too_much(box, boxes):
                break
        else:
            continue
        under = background[box[1] : box[3] + 1, box[0] : box[2] + 1].reshape(-1, 3).mean(0)
        cls, orient = int(rng.integers(len(NAMES))), int(rng.integers(4))
        boxes.append(box)
        shapes.append(Shape(cls, _contrasting_color(rng, under), box, orient))
    return Scene(background, tuple(shapes))


def _triangle(box: tuple[int, int, int, int], orient: int) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return [
        [(xm, y0), (x1, y1), (x0, y1)],  # apex up
        [(x0, y0), (x1, y0), (xm, y1)],  # apex down
        [(x0, ym), (x1, y0), (x1, y1)],  # apex left
        [(x0, y0), (x1, ym), (x0, y1)],  # apex right
    ][orient]


def _draw(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    x0, y0, x1, y1 = shape.box
    if NAMES[shape.cls] == "circle":
        draw.ellipse(shape.box, fill=shape.color)
    elif NAMES[shape.cls] == "square":
        draw.rectangle(shape.box, fill=shape.color)
    elif NAMES[shape.cls] == "triangle":
        draw.polygon(_triangle(shape.box, shape.orient), fill=shape.color)
    else:  # cross: two bars a third of the box thick, centred
        tw, th = max(1, (x1 - x0 + 1) // 3), max(1, (y1 - y0 + 1) // 3)
        cx0, cy0 = x0 + (x1 - x0 + 1 - tw) // 2, y0 + (y1 - y0 + 1 - th) // 2
        draw.rectangle((cx0, y0, cx0 + tw - 1, y1), fill=shape.color)
        draw.rectangle((x0, cy0, x1, cy0 + th - 1), fill=shape.color)


def render(scene: Scene) -> Image.Image:
    """Paint the shapes, in order, onto a copy of the background."""
    img = Image.fromarray(scene.background, "RGB")
    draw = ImageDraw.Draw(img)
    for shape in scene.shapes:
        _draw(draw, shape)
    return img
