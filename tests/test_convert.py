"""`main.py convert`: a COCO JSON and a VOC folder describing the same boxes give the labels
(and the mAP) of the YOLO txt files written for them by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import main
from evaluation import coco_map
from yolodata import label_path, load_spec, read_labels

NAMES = ("kitten", "dog")
COCO_IDS = (17, 3)  # not contiguous, not in name order: dog (id 3) is class 0
# Per image: (width, height, [(name, x1, y1, x2, y2, ignored)]) in 0-based pixel edges;
# ignored objects are iscrowd in COCO and difficult in VOC.
IMAGES = {
    "a": (64, 48, [("kitten", 4, 6, 30, 40, False), ("dog", 33, 2, 63, 20, False)]),
    "b": (48, 64, [("dog", 0, 10, 20, 63, False), ("kitten", 10, 10, 40, 30, True)]),
    "c": (64, 64, []),  # a background image
    "d": (40, 40, [("kitten", 5, 5, 15, 15, True)]),  # only an ignored object: background too
}


def yolo_class(name: str) -> int:
    """COCO classes follow the category ids' order: dog (id 3) before kitten (id 17)."""
    return sorted(COCO_IDS).index(COCO_IDS[NAMES.index(name)])


@pytest.fixture
def sources(tmp_path):
    """The same scene as JPEG files, a COCO JSON, a VOC folder and hand-written YOLO labels."""
    voc = tmp_path / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i, "name": n} for n, i in zip(NAMES, COCO_IDS, strict=True)]}
    oracle = tmp_path / "yolo"
    for k, (stem, (w, h, objects)) in enumerate(IMAGES.items()):
        Image.new("RGB", (w, h), (40 * k, 80, 120)).save(voc / "JPEGImages" / f"{stem}.jpg")
        coco["images"].append({"id": 100 + k, "file_name": f"{stem}.jpg", "width": w,
                               "height": h})
        xml_objects = []
        for name, x1, y1, x2, y2, ignored in objects:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": 100 + k,
                "category_id": COCO_IDS[NAMES.index(name)], "bbox": [x1, y1, x2 - x1, y2 - y1],
                "iscrowd": int(ignored), "area": (x2 - x1) * (y2 - y1)})
            xml_objects.append(
                f"<object><name>{name}</name><difficult>{int(ignored)}</difficult><bndbox>"
                f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2 + 1}</xmax>"
                f"<ymax>{y2 + 1}</ymax></bndbox></object>")
        (voc / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}"
            f"</height><depth>3</depth></size>{''.join(xml_objects)}</annotation>")
        label = oracle / "labels" / "val" / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(
            f"{yolo_class(n)} {(a + c) / 2 / w} {(b + d) / 2 / h} {(c - a) / w} {(d - b) / h}\n"
            for n, a, b, c, d, ignored in objects if not ignored))
        (oracle / "images" / "val").mkdir(parents=True, exist_ok=True)
        (oracle / "images" / "val" / f"{stem}.jpg").symlink_to(voc / "JPEGImages" / f"{stem}.jpg")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(IMAGES) + "\n")
    (tmp_path / "instances_val.json").write_text(json.dumps(coco))
    (oracle / "data.yaml").write_text(f"val: images/val\nnames: {list(sorted_names())}\n")
    return tmp_path


def sorted_names() -> list[str]:
    return [NAMES[COCO_IDS.index(i)] for i in sorted(COCO_IDS)]


def convert(sources, fmt: str, out, split="val", *extra) -> int:
    if fmt == "coco":
        args = ["--annotations", str(sources / "instances_val.json"), "--images",
                str(sources / "VOC2007" / "JPEGImages")]
    else:
        args = ["--root", str(sources / "VOC2007"), "--names", ",".join(sorted_names())]
    return main.main(["convert", "--from", fmt, "--split", split, "--out", str(out), *args,
                      *extra])


def labels_of(data_yaml) -> dict[str, np.ndarray]:
    spec = load_spec(data_yaml)
    return {p.stem: read_labels(label_path(p), spec.num_classes) for p in spec.val}


@pytest.mark.parametrize("fmt,ignored", [("coco", "iscrowd"), ("voc", "difficult")])
def test_converted_labels_equal_the_hand_written_yolo_labels(sources, tmp_path, capsys, fmt,
                                                             ignored):
    assert convert(sources, fmt, tmp_path / fmt) == 0
    summary = capsys.readouterr().out
    assert "4 images (2 without objects), 3 objects" in summary
    assert f"left out 2 {ignored} objects" in summary
    spec = load_spec(tmp_path / fmt / "data.yaml")
    assert spec.names == tuple(sorted_names()) and spec.train == ()
    got, want = labels_of(tmp_path / fmt / "data.yaml"), labels_of(sources / "yolo" / "data.yaml")
    assert sorted(got) == sorted(want) == sorted(IMAGES)
    for stem in IMAGES:
        np.testing.assert_allclose(got[stem], want[stem], atol=1e-6)
    assert label_path(spec.val[0]).exists()  # background images get an (empty) file too


def test_converted_sets_give_the_hand_written_sets_map(sources, tmp_path):
    """One fixed set of detections scored against each set's ground truth."""
    for fmt in ("coco", "voc"):
        assert convert(sources, fmt, tmp_path / fmt) == 0
    maps = [_map_of_fixed_detections(path) for path in (
        sources / "yolo" / "data.yaml", tmp_path / "coco" / "data.yaml",
        tmp_path / "voc" / "data.yaml")]
    assert 0 < maps[0] < 1
    assert maps[1] == pytest.approx(maps[0], abs=1e-9) and maps[2] == pytest.approx(maps[0],
                                                                                   abs=1e-9)


def _map_of_fixed_detections(data_yaml) -> float:
    detections = {"a": [(4, 6, 30, 40, 0.9, 1), (33, 2, 55, 22, 0.8, 0), (0, 0, 9, 9, 0.7, 0)],
                  "b": [(1, 10, 21, 60, 0.6, 0), (10, 10, 40, 30, 0.95, 1)],
                  "c": [], "d": [(5, 5, 15, 15, 0.5, 1)]}
    spec = load_spec(data_yaml)
    dets, gts, sizes = [], [], []
    for image in spec.val:
        w, h = IMAGES[image.stem][:2]
        rows = read_labels(label_path(image), spec.num_classes)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        gt = np.stack([rows[:, 0], cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        gts.append(torch.tensor(gt, dtype=torch.float64).reshape(-1, 5))
        dets.append(torch.tensor(detections[image.stem], dtype=torch.float64).reshape(-1, 6))
        sizes.append((h, w))
    return coco_map(dets, gts, sizes, spec.names).map50


def test_another_split_is_added_and_other_names_are_refused(sources, tmp_path, capsys):
    (sources / "VOC2007" / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    out = tmp_path / "voc"
    assert convert(sources, "voc", out) == 0
    assert convert(sources, "voc", out, "train") == 0
    spec = load_spec(out / "data.yaml")
    assert sorted(p.stem for p in spec.train) == ["a", "b"] and len(spec.val) == 4
    assert convert(sources, "voc", out) == 0  # again: the split is replaced, not doubled
    assert len(load_spec(out / "data.yaml").val) == 4
    assert convert(sources, "voc", out, "train", "--as", "train2012") == 0  # a second train
    assert sorted(p.stem for p in load_spec(out / "data.yaml").train) == ["a", "a", "b", "b"]
    capsys.readouterr()
    assert main.main(["convert", "--from", "voc", "--root", str(sources / "VOC2007"),
                      "--split", "val", "--out", str(out), "--names", "kitten,dog,bird"]) == 2
    assert "has names ['dog', 'kitten'] but these annotations have" in capsys.readouterr().err


def test_unknown_voc_class_and_bad_coco_json_are_one_line_errors(sources, tmp_path, capsys):
    assert main.main(["convert", "--from", "voc", "--root", str(sources / "VOC2007"),
                      "--split", "val", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class 'kitten' is not among the 20 names" in err
    (tmp_path / "bad.json").write_text('{"images": []}')
    assert main.main(["convert", "--from", "coco", "--annotations", str(tmp_path / "bad.json"),
                      "--images", str(tmp_path), "--split", "val", "--out",
                      str(tmp_path / "o")]) == 2
    assert "not a COCO instances file" in capsys.readouterr().err
    assert not (tmp_path / "o" / "data.yaml").exists()


@pytest.mark.e2e
def test_eval_reads_a_converted_val_only_set_with_the_darknet_metric(sources, tmp_path, capsys):
    from helpers import ROOT

    from darknet import Darknet

    assert convert(sources, "coco", tmp_path / "coco") == 0
    cfg = tmp_path / "two.cfg"
    cfg.write_text((ROOT / "cfgs" / "demo.cfg").read_text()
                   .replace("classes=4", "classes=2").replace("filters=27", "filters=21"))
    torch.manual_seed(0)
    Darknet(cfg).save_weights(tmp_path / "two.weights")
    capsys.readouterr()
    argv = ["eval", "--cfg", str(cfg), "--weights", str(tmp_path / "two.weights"), "--data",
            str(tmp_path / "coco" / "data.yaml"), "--img-size", "64", "--metric", "darknet"]
    assert main.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["darknet_map50"] <= 1 and result["images"] == 4
    assert main.main(argv) == 0
    out = capsys.readouterr().out
    assert "class_id = 1, name = kitten" in out and "mean average precision (mAP@0.50)" in out
