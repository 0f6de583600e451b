"""COCO JSON and Pascal VOC XML annotations -> a YOLO-format data set.

Both readers reduce their format to ``Annotations`` (images with pixel boxes, class names,
what was left out); one writer turns that into ``OUT/images/<split>/`` (links or copies),
``OUT/labels/<split>/*.txt`` and ``OUT/data.yaml``. Converting another split into the same
``OUT`` adds it to the data yaml (the names must agree).

Format facts followed (the user-facing summary: docs/data.md, "Your annotations"):

* COCO ``instances_*.json``: ``bbox`` is ``[x, y, w, h]`` in pixels from the top-left corner;
  category ids are not contiguous and map to 0..N-1 in id order; ``iscrowd=1`` objects are
  ignored in COCO matching, so they are left out of the labels (and counted).
* VOC ``Annotations/<id>.xml``: ``bndbox`` xmin/ymin/xmax/ymax in 1-based pixels, converted
  as Darknet's ``voc_label.py`` does (centre ``(min + max) / 2 - 1``, size ``max - min``);
  ``difficult=1`` objects are ignored in VOC matching: left out and counted.

An image without objects gets an empty label file (a background image, which YOLO training
uses as a negative). Boxes are clipped to the image; one with no area left is dropped and
counted as degenerate.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.io import atomic_write_text, read_text
from yolodata.errors import DataError

VOC_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
             "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
             "sofa", "train", "tvmonitor")
Box = tuple[int, float, float, float, float]  # class, x1, y1, x2, y2 in pixels (0-based edges)


@dataclass(frozen=True)
class AnnotatedImage:
    source: Path  # the image file
    name: str  # its path under images/<split>/ (COCO file names may hold sub-folders)
    width: int
    height: int
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class Annotations:
    """One split of a data set, read from any format; ``ignored`` counts the crowd or
    difficult objects left out (``ignored_kind`` names which), ``missing`` the listed images
    whose file is absent (left out too)."""

    names: tuple[str, ...]
    images: tuple[AnnotatedImage, ...]
    ignored: int
    ignored_kind: str
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConvertSummary:
    images: int
    background: int
    objects: int
    degenerate: int
    ignored: int
    ignored_kind: str
    missing: tuple[str, ...]
    data_yaml: Path

    def describe(self, split: str) -> str:
        line = (f"{split}: {self.images} images ({self.background} without objects), "
                f"{self.objects} objects -> {self.data_yaml}; left out {self.ignored} "
                f"{self.ignored_kind} objects")
        if self.degenerate:
            line += f" and {self.degenerate} boxes with no area inside the image"
        if self.missing:
            line += f"; {len(self.missing)} listed images missing, e.g. {self.missing[0]}"
        return line


def read_coco(annotations: str | Path, images_dir: str | Path) -> Annotations:
    """A COCO ``instances`` JSON with its images folder (``file_name`` is relative to it)."""
    annotations, images_dir = Path(annotations), Path(images_dir)
    try:
        doc = json.loads(read_text(annotations, "COCO annotations"))
        categories = sorted(doc["categories"], key=lambda c: c["id"])
        class_of = {c["id"]: k for k, c in enumerate(categories)}
        objects: dict[int, list[dict]] = {}
        for a in doc["annotations"]:
            objects.setdefault(a["image_id"], []).append(a)
        entries = doc["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{annotations}: not a COCO instances file ({type(e).__name__}: "
                        f"{e})") from None
    images, ignored, missing = [], 0, []
    for entry in entries:
        path = images_dir / entry["file_name"]
        if not path.is_file():
            missing.append(str(path))
            continue
        boxes, crowd = _coco_boxes(objects.get(entry["id"], []), class_of, annotations)
        ignored += crowd
        images.append(AnnotatedImage(path, entry["file_name"], int(entry["width"]),
                                     int(entry["height"]), boxes))
    names = tuple(str(c["name"]) for c in categories)
    return Annotations(names, tuple(images), ignored, "iscrowd", tuple(missing))


def _coco_boxes(objects: list[dict], class_of: dict[int, int],
                source: Path) -> tuple[tuple[Box, ...], int]:
    boxes, crowd = [], 0
    for a in objects:
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        if a["category_id"] not in class_of:
            raise DataError(f"{source}: annotation {a.get('id')} has category_id "
                            f"{a['category_id']}, not among the categories")
        x, y, w, h = (float(v) for v in a["bbox"])
        boxes.append((class_of[a["category_id"]], x, y, x + w, y + h))
    return tuple(boxes), crowd


def read_voc(root: str | Path, split: str, names: Sequence[str] = VOC_NAMES) -> Annotations:
    """A VOC year folder (``VOCdevkit/VOC2007``): ``ImageSets/Main/<split>.txt`` lists the
    ids, ``Annotations/<id>.xml`` and ``JPEGImages/<id>.jpg`` hold the rest."""
    root = Path(root)
    ids = read_text(root / "ImageSets" / "Main" / f"{split}.txt", f"VOC {split} list").split()
    class_of = {name: k for k, name in enumerate(names)}
    images, ignored, missing = [], 0, []
    for image_id in ids:
        xml_path = root / "Annotations" / f"{image_id}.xml"
        image, difficult = _voc_image(xml_path, root, class_of)
        if not image.source.is_file():
            missing.append(str(image.source))
            continue
        images.append(image)
        ignored += difficult
    return Annotations(tuple(names), tuple(images), ignored, "difficult", tuple(missing))


def _voc_image(xml_path: Path, root: Path, class_of: dict[str, int]
               ) -> tuple[AnnotatedImage, int]:
    try:
        tree = ET.fromstring(read_text(xml_path, "VOC annotation"))
        file_name = tree.findtext("filename") or f"{xml_path.stem}.jpg"
        width, height = (int(tree.find("size").findtext(k)) for k in ("width", "height"))
        boxes, difficult = [], 0
        for obj in tree.iter("object"):
            name = obj.findtext("name", "").strip()
            if name not in class_of:
                raise DataError(f"{xml_path}: class {name!r} is not among the {len(class_of)} "
                                "names (give --names)")
            if int(obj.findtext("difficult", "0")):
                difficult += 1
                continue
            b = obj.find("bndbox")
            x1, y1, x2, y2 = (float(b.findtext(k)) - 1 for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append((class_of[name], x1, y1, x2, y2))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{xml_path}: not a VOC annotation ({e})") from None
    image = AnnotatedImage(root / "JPEGImages" / file_name, file_name, width, height,
                           tuple(boxes))
    return image, difficult


def label_lines(image: AnnotatedImage) -> tuple[list[str], int]:
    """YOLO lines ``class cx cy w h`` (normalised) and how many boxes had no area."""
    lines, degenerate = [], 0
    w, h = image.width, image.height
    for cls, x1, y1, x2, y2 in image.boxes:
        x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
        y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
        if x2 <= x1 or y2 <= y1:
            degenerate += 1
            continue
        lines.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return lines, degenerate


def write_split(annotations: Annotations, out: str | Path, split: str,
                copy: bool = False) -> ConvertSummary:
    """Write one split into ``out`` (replacing that split if it is there) and add it to
    ``out/data.yaml``. The split's folders appear whole or not at all."""
    out = Path(out)
    if not annotations.images:
        raise DataError(f"{split}: no images to convert"
                        + (f" ({len(annotations.missing)} listed, none found, e.g. "
                           f"{annotations.missing[0]})" if annotations.missing else ""))
    doc = _data_yaml(out, annotations.names)
    staging = out / f".partial-{split}-{uuid.uuid4().hex[:8]}"
    try:
        objects, degenerate, background = _fill(staging, annotations, split, copy)
        for kind in ("images", "labels"):
            _replace(staging / kind / split, out / kind / split)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    key = "train" if "train" in split else "val"
    entries = [e for e in _as_list(doc.get(key)) if e != f"images/{split}"]
    doc[key] = [*entries, f"images/{split}"] if entries else f"images/{split}"
    atomic_write_text(out / "data.yaml", yaml.safe_dump(doc, sort_keys=False))
    return ConvertSummary(len(annotations.images), background, objects, degenerate,
                          annotations.ignored, annotations.ignored_kind, annotations.missing,
                          out / "data.yaml")


def _fill(staging: Path, annotations: Annotations, split: str,
          copy: bool) -> tuple[int, int, int]:
    objects = degenerate = background = 0
    for image in annotations.images:
        target = staging / "images" / split / image.name
        label = (staging / "labels" / split / image.name).with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copy2(image.source, target)
        else:
            os.symlink(image.source.resolve(), target)
        lines, dropped = label_lines(image)
        label.write_text("".join(line + "\n" for line in lines))
        objects, degenerate = objects + len(lines), degenerate + dropped
        background += not lines
    return objects, degenerate, background


def _replace(new: Path, old: Path) -> None:
    """Put the folder ``new`` where ``old`` is, the old one removed only after the rename."""
    old.parent.mkdir(parents=True, exist_ok=True)
    trash = old.with_name(f".old-{old.name}-{uuid.uuid4().hex[:8]}")
    if old.exists() or old.is_symlink():
        old.rename(trash)
    new.rename(old)
    shutil.rmtree(trash, ignore_errors=True)


def _data_yaml(out: Path, names: tuple[str, ...]) -> dict:
    """The data yaml ``out`` already has (its names must be ``names``), or a new one."""
    path = out / "data.yaml"
    if not path.exists():
        return {"path": ".", "names": list(names)}
    doc = yaml.safe_load(read_text(path, "data yaml")) or {}
    have = doc.get("names")
    have = [have[i] for i in sorted(have)] if isinstance(have, dict) else have
    if list(have or []) != list(names):
        raise DataError(f"{path} has names {have} but these annotations have {list(names)}; "
                        "convert into another --out")
    return doc


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
