"""yolodata: demo generation, dataset descriptions, strict labels, letterbox and augmentation.

Oracles: the demo's labels are checked against the pixels each shape changes when drawn
alone; letterbox boxes are mapped there and back; augmented boxes are checked against where
a painted rectangle actually lands; HSV gains against ``colorsys``.
"""

import colorsys
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import yolodata.demo as demo
from common.errors import UserError
from yolodata import (
    DEMO_NAMES,
    AugmentConfig,
    DataError,
    ImageError,
    LabelError,
    Letterbox,
    YoloDataset,
    check_split,
    collate,
    cxcywh_to_xyxy,
    ensure_demo_dataset,
    label_path,
    load_spec,
    read_labels,
)
from yolodata.augment import rotate_hue, scale_saturation, scale_value
from yolodata.synth import Scene, render

GREY = 128 / 255
NO_AUG = dict(flip_lr=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, scale=0.0, translate=0.0)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "demo.yaml"  # demo.yaml holds the absolute root
    }


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    return ensure_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_train=8, n_val=4)


# ---------------------------------------------------------------- demo generation


def test_demo_layout_and_yaml(small_demo):
    root = small_demo.parent
    doc = yaml.safe_load(small_demo.read_text())
    assert doc == {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": ["circle", "square", "triangle", "cross"],
    }
    assert len(list((root / "images" / "train").glob("*.png"))) == 8
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 4
    with Image.open(root / "images" / "train" / "000000.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (160, 160))


def test_demo_same_seed_same_bytes_other_seed_differs(tmp_path, small_demo):
    again = ensure_demo_dataset(tmp_path / "a", n_train=8, n_val=4).parent
    other = ensure_demo_dataset(tmp_path / "b", n_train=8, n_val=4, seed=1).parent
    reference = tree_bytes(small_demo.parent)
    assert tree_bytes(again) == reference
    differs = tree_bytes(other)
    assert differs.keys() == reference.keys()
    images = [k for k in reference if k.endswith(".png")]
    assert all(differs[k] != reference[k] for k in images)


def test_demo_output_does_not_depend_on_worker_count(tmp_path):
    # 72 images is above the threshold where generation uses a process pool.
    one = ensure_demo_dataset(tmp_path / "one", n_train=64, n_val=8, img_size=64, workers=1)
    two = ensure_demo_dataset(tmp_path / "two", n_train=64, n_val=8, img_size=64, workers=2)
    assert tree_bytes(one.parent) == tree_bytes(two.parent)


def test_demo_cache_is_reused(tmp_path, monkeypatch):
    data = ensure_demo_dataset(tmp_path / "d", n_train=3, n_val=2)
    stamp = (data.parent / "manifest.json").stat().st_mtime_ns

    def fail(*args):
        raise AssertionError("regenerated a complete cache")

    monkeypatch.setattr(demo, "_generate", fail)
    assert ensure_demo_dataset(tmp_path / "d", n_train=3, n_val=2) == data
    assert (data.parent / "manifest.json").stat().st_mtime_ns == stamp


def test_demo_regenerates_when_parameters_differ_or_files_are_missing(tmp_path):
    root = tmp_path / "d"
    ensure_demo_dataset(root, n_train=3, n_val=2)
    ensure_demo_dataset(root, n_train=5, n_val=2)
    assert json.loads((root / "manifest.json").read_text())["n_train"] == 5
    assert len(os.listdir(root / "images" / "train")) == 5
    (root / "images" / "train" / "000004.png").unlink()
    ensure_demo_dataset(root, n_train=5, n_val=2)
    assert (root / "images" / "train" / "000004.png").is_file()


def test_interrupted_generation_leaves_nothing_that_passes_as_cached(tmp_path, monkeypatch):
    calls = []

    def dies_on_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args)

    real = demo._write_sample
    monkeypatch.setattr(demo, "_write_sample", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(tmp_path / "d", n_train=4, n_val=2)
    assert os.listdir(tmp_path) == []


def test_partials_of_dead_generations_are_removed(tmp_path):
    dead = tmp_path / ".d.partial-999999999-abcd1234"  # no such pid
    mine = tmp_path / f".d.partial-{os.getpid()}-abcd1234"  # alive: may still be writing
    dead.mkdir()
    mine.mkdir()
    ensure_demo_dataset(tmp_path / "d", n_train=2, n_val=1)
    assert not dead.exists() and mine.exists()


def test_default_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(demo.CACHE_ENV, str(tmp_path))
    assert demo.default_root() == tmp_path / "demo"
    monkeypatch.delenv(demo.CACHE_ENV)
    assert demo.default_root() == Path.home() / ".cache" / "res2net-yolo" / "demo"


def test_demo_files_are_the_rendered_scenes(small_demo):
    root = small_demo.parent
    for split, n in (("train", 8), ("val", 4)):
        for i in range(n):
            scene = demo.demo_scene(i, split)
            with Image.open(root / "images" / split / f"{i:06d}.png") as im:
                assert np.array_equal(np.asarray(im), np.asarray(render(scene)))
            labels = read_labels(root / "labels" / split / f"{i:06d}.txt", len(DEMO_NAMES))
            expected = [shape.label(160) for shape in scene.shapes]
            np.testing.assert_allclose(labels, np.array(expected, np.float32), atol=1e-6)


@pytest.mark.parametrize("index", range(12))
def test_demo_labels_are_tight_boxes_of_the_drawn_pixels(index):
    scene = demo.demo_scene(index)
    assert 1 <= len(scene.shapes) <= 6
    background = np.asarray(render(Scene(scene.background, ())))
    for shape in scene.shapes:
        drawn = np.asarray(render(Scene(scene.background, (shape,))))
        ys, xs = np.nonzero((drawn != background).any(-1))
        _, cx, cy, w, h = shape.label(160)
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * 160
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        # The object is visible: its colour stands out from the background it covers.
        changed = np.abs(drawn.astype(int) - background).sum(-1)[ys, xs]
        assert np.median(changed) > 60


def test_demo_covers_all_three_yolo_scales():
    sides = [
        max(shape.label(160)[3:]) * 160 for i in range(40) for shape in demo.demo_scene(i).shapes
    ]
    assert min(sides) >= 6 and max(sides) <= 0.6 * 160 + 1
    small = sum(s < 16 for s in sides)
    medium = sum(16 <= s < 40 for s in sides)
    large = sum(s >= 40 for s in sides)
    assert min(small, medium, large) >= 0.1 * len(sides), (small, medium, large)


def test_demo_classes_all_used():
    classes = {shape.cls for i in range(20) for shape in demo.demo_scene(i).shapes}
    assert classes == {0, 1, 2, 3}


# ---------------------------------------------------------------- dataset descriptions


def make_split(root: Path, split: str, n: int, size=(40, 30)) -> list[Path]:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / "images" / split / f"im{i}.png"
        Image.new("RGB", size, (10 * i, 20, 30)).save(path)
        (root / "labels" / split / f"im{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.25 0.5\n")
        paths.append(path)
    return paths


def test_yaml_with_folders_and_list_names(small_demo):
    spec = load_spec(small_demo)
    root = small_demo.parent
    assert spec.names == DEMO_NAMES and spec.num_classes == 4
    assert spec.train == tuple(sorted((root / "images" / "train").glob("*.png")))
    assert len(spec.val) == 4 and spec.source == small_demo


def test_yaml_relative_path_txt_list_and_dict_names(tmp_path):
    train = make_split(tmp_path / "ds", "train", 3)
    val = make_split(tmp_path / "ds", "val", 2)
    (tmp_path / "ds" / "val.txt").write_text("images/val/im1.png\n\n./images/val/im0.png\n")
    data = tmp_path / "cfg" / "d.yaml"
    data.parent.mkdir()
    data.write_text("path: ../ds\ntrain: images/train\nval: val.txt\nnames: {0: a, 1: b}\n")
    spec = load_spec(data)
    assert spec.names == ("a", "b")
    assert spec.train == tuple(train)
    assert spec.val == (val[1], val[0])


@pytest.mark.parametrize(
    "body, message",
    [
        ("train: images/train\nval: images/train\n", "missing key.*names"),
        ("train: images/train\nval: images/train\nnames: {0: a, 2: b}\n", "ids must be 0..1"),
        ("train: images/train\nval: images/train\nnames: [a]\nnc: 3\n", "nc=3 but names has 1"),
        ("train: nowhere\nval: images/train\nnames: [a]\n", "train: .*nowhere does not exist"),
        ("train: empty\nval: images/train\nnames: [a]\n", "train: no images"),
        ("train: [images/train\n", "invalid yaml"),
    ],
)
def test_yaml_errors_name_the_problem(tmp_path, body, message):
    make_split(tmp_path, "train", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "d.yaml").write_text(body)
    with pytest.raises(DataError, match=message):
        load_spec(tmp_path / "d.yaml")


def test_darknet_data_file(tmp_path):
    train = make_split(tmp_path, "train", 2)
    val = make_split(tmp_path, "val", 1)
    (tmp_path / "train.txt").write_text("".join(f"{p}\n" for p in train))
    (tmp_path / "obj.names").write_text("person\ncar\n\n")
    (tmp_path / "obj.data").write_text(
        "# darknet\nclasses = 2\ntrain = train.txt\nvalid = images/val\n"
        "names = obj.names\nbackup = backup/\n"
    )
    spec = load_spec(tmp_path / "obj.data")
    assert spec.names == ("person", "car")
    assert spec.train == tuple(train) and spec.val == tuple(val)
    (tmp_path / "obj.data").write_text(
        "classes=3\ntrain=train.txt\nvalid=train.txt\nnames=obj.names\n"
    )
    with pytest.raises(DataError, match=r"classes=3 but .*obj.names has 2"):
        load_spec(tmp_path / "obj.data")


def test_demo_keyword_resolves_to_the_cached_demo(monkeypatch, small_demo):
    monkeypatch.setattr(demo, "ensure_demo_dataset", lambda: small_demo)
    assert load_spec("demo") == load_spec(small_demo)


def test_unknown_description_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UserError, match="expected a .yaml"):
        load_spec(tmp_path / "x.json")


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "image, expected",
    [
        ("/d/images/train/x.png", "/d/labels/train/x.txt"),
        ("/a/images/b/images/c/x.jpg", "/a/images/b/labels/c/x.txt"),
        ("/d/imgs/x.jpeg", "/d/imgs/x.txt"),
        ("/d/images.png", "/d/images.txt"),
    ],
)
def test_label_path(image, expected):
    assert label_path(Path(image)) == Path(expected)


def test_read_labels_accepts_valid_lines_and_missing_files(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("1 0.5 0.5 0.2 0.3\n\n3.0 1.0 0 1 1e-3\n")
    np.testing.assert_array_equal(
        read_labels(path, 4),
        np.array([[1, 0.5, 0.5, 0.2, 0.3], [3, 1, 0, 1, 1e-3]], np.float32),
    )
    assert read_labels(tmp_path / "none.txt", 4).shape == (0, 5)


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.5 0.5 0.1", "expected 5 fields 'class cx cy w h', got 4"),
        ("0 0.5 0.5 0.1 0.1 7", "expected 5 fields .*, got 6"),
        ("0 0.5 abc 0.1 0.1", "'abc' is not a number"),
        ("0 0.5 nan 0.1 0.1", "'nan' is not a finite number"),
        ("1.5 0.5 0.5 0.1 0.1", "class id '1.5' is not an integer"),
        ("4 0.5 0.5 0.1 0.1", r"class id 4 outside names \(4 names: ids 0..3\)"),
        ("-1 0.5 0.5 0.1 0.1", "class id -1 outside names"),
        ("0 1.2 0.5 0.1 0.1", r"cx=1.2 outside \[0, 1\]"),
        ("0 0.5 -0.1 0.1 0.1", "cy=-0.1 outside"),
        ("0 0.5 0.5 1.5 0.1", "w=1.5 outside"),
        ("0 0.5 0.5 0.1 0", "h=0 must be > 0"),
    ],
)
def test_bad_label_line_raises_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "labels" / "train" / "x.txt"
    path.parent.mkdir(parents=True)
    path.write_text(f"0 0.5 0.5 0.1 0.1\n\n{line}\n")
    with pytest.raises(LabelError, match=re.escape(f"{path}:3: ") + message) as info:
        read_labels(path, 4)
    assert isinstance(info.value, UserError) and (info.value.path, info.value.line) == (path, 3)


def test_check_split_and_dataset_raise_on_bad_labels(tmp_path):
    images = make_split(tmp_path, "train", 3)
    label_path(images[1]).write_text("0 0.5 0.5 0.1 0.1\n9 0.5 0.5 0.1 0.1\n")
    where = re.escape(f"{label_path(images[1])}:2: ")
    with pytest.raises(LabelError, match=where + "class id 9 outside names"):
        check_split(images, 2)
    with pytest.raises(LabelError, match=where):
        YoloDataset(images, 2)


def test_check_split_skips_unreadable_images_and_counts_them(tmp_path):
    images = make_split(tmp_path, "train", 3)
    images[0].write_bytes(b"not a png")
    label_path(images[2]).unlink()  # no objects, still usable
    result = check_split(images, 2, "train")
    assert result.images == (images[1], images[2])
    assert [path for path, _ in result.skipped] == [images[0]]
    assert "cannot read image" in result.skipped[0][1]
    with pytest.raises(ImageError, match=re.escape(str(images[0]))):
        check_split(images, 2, skip_unreadable=False)
    images[1].write_bytes(b"")
    images[2].write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="train: none of its 3 images is readable"):
        check_split(images, 2, "train")
    with pytest.raises(DataError, match="val: no images"):
        check_split([], 2, "val")


# ---------------------------------------------------------------- letterbox and dataset


@settings(max_examples=100, deadline=None)
@given(
    h=st.integers(1, 2000),
    w=st.integers(1, 2000),
    size=st.sampled_from([32, 128, 160, 416]),
    box=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_letterbox_round_trip(h, w, size, box):
    lb = Letterbox.fit((h, w), size)
    (rh, rw), (left, top) = lb.resized_hw, lb.pad
    assert max(rh, rw) == size and left + rw + left in (size, size - 1)
    assert top + rh + top in (size, size - 1)
    x0, x1 = sorted(box[:2])
    y0, y1 = sorted(box[2:])
    xyxy = torch.tensor([[x0 * w, y0 * h, x1 * w, y1 * h]], dtype=torch.float64)
    there = lb.to_letterbox(xyxy)
    assert (there >= torch.tensor([left, top, left, top]) - 1e-9).all()
    torch.testing.assert_close(lb.to_original(there), xyxy)


def test_letterbox_numbers():
    lb = Letterbox.fit((100, 200), 160)
    assert (lb.resized_hw, lb.pad) == ((80, 160), (0, 40))
    box = torch.tensor([0.0, 0.0, 200.0, 100.0])
    torch.testing.assert_close(lb.to_letterbox(box), torch.tensor([0.0, 40.0, 160.0, 120.0]))
    torch.testing.assert_close(
        lb.to_original(torch.tensor([-5.0, 0.0, 170.0, 90.0])),
        torch.tensor([0.0, 0.0, 200.0, 62.5]),
    )


def painted(tmp_path: Path, size_wh=(100, 60), rect=(20, 10, 50, 40)) -> Path:
    """A grey image with one red rectangle (continuous px ``x0 y0 x1 y1``) and its label."""
    pixels = np.full((size_wh[1], size_wh[0], 3), 128, np.uint8)
    x0, y0, x1, y1 = rect
    pixels[y0:y1, x0:x1] = (230, 20, 20)
    path = tmp_path / "images" / "p.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    label_path(path).parent.mkdir(parents=True, exist_ok=True)
    w, h = size_wh
    label = f"2 {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}\n"
    label_path(path).write_text(label)
    return path


def visible_box(image: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero((image - GREY).abs().amax(0) > 0.2, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


def test_plain_sample_letterboxes_image_and_boxes(tmp_path):
    path = painted(tmp_path)
    sample = YoloDataset([path], 3, img_size=50)[0]
    assert sample.image.shape == (3, 50, 50) and sample.orig_hw == (60, 100)
    assert sample.path == str(path)
    lb = Letterbox.fit((60, 100), 50)
    assert lb.pad == (0, 10)
    assert torch.all(sample.image[:, :10] == GREY) and torch.all(sample.image[:, 40:] == GREY)
    assert sample.targets[:, 0].tolist() == [2.0]
    box_px = cxcywh_to_xyxy(sample.targets[:, 1:]) * 50
    torch.testing.assert_close(box_px[0], torch.tensor([10.0, 15.0, 25.0, 30.0]))
    torch.testing.assert_close(box_px[0], visible_box(sample.image))
    torch.testing.assert_close(lb.to_original(box_px)[0], torch.tensor([20.0, 10.0, 50.0, 40.0]))


def test_cached_and_uncached_samples_match(small_demo):
    spec = load_spec(small_demo)
    cached = YoloDataset(spec.train, 4, img_size=128, cache_images=True)
    disk = YoloDataset(spec.train, 4, img_size=128, cache_images=False)
    for a, b in zip(cached, disk, strict=True):
        torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
        torch.testing.assert_close(a.targets, b.targets)


def test_demo_targets_map_back_to_the_label_files(small_demo):
    spec = load_spec(small_demo)
    ds = YoloDataset(spec.val, 4, img_size=128)
    for i, sample in enumerate(ds):
        lb = Letterbox.fit(sample.orig_hw, 128)
        back = lb.to_original(cxcywh_to_xyxy(sample.targets[:, 1:]) * 128)
        truth = cxcywh_to_xyxy(ds.labels[i][:, 1:]) * 160
        torch.testing.assert_close(back, truth, atol=1e-4, rtol=0)
        assert sample.targets[:, 0].tolist() == ds.labels[i][:, 0].tolist()


def test_augment_with_no_jitter_equals_plain_letterbox(tmp_path):
    path = painted(tmp_path)
    plain = YoloDataset([path], 3, img_size=50)[0]
    same = YoloDataset([path], 3, img_size=50, augment=True, hyp=AugmentConfig(**NO_AUG))[0]
    torch.testing.assert_close(same.image, plain.image, atol=1 / 255 + 1e-6, rtol=0)
    torch.testing.assert_close(same.targets, plain.targets)


def test_augment_flip_mirrors_cx(tmp_path, small_demo):
    flip = AugmentConfig(**{**NO_AUG, "flip_lr": 1.0})
    for path in [painted(tmp_path), *load_spec(small_demo).train[:3]]:
        plain = YoloDataset([path], 4, img_size=64)[0]
        flipped = YoloDataset([path], 4, img_size=64, augment=True, hyp=flip)[0]
        expected = plain.targets.clone()
        expected[:, 1] = 1 - expected[:, 1]
        torch.testing.assert_close(flipped.targets, expected)
        torch.testing.assert_close(flipped.image, plain.image.flip(-1), atol=1 / 255 + 1e-6, rtol=0)


def test_augmented_boxes_follow_the_pixels(tmp_path):
    path = painted(tmp_path)  # a 30 x 30 px square, 15 x 15 px once letterboxed to 64
    hyp = AugmentConfig(flip_lr=0.5, hsv_h=0, hsv_s=0, hsv_v=0, scale=0.5, translate=0.7)
    ds = YoloDataset([path], 3, img_size=64, augment=True, hyp=hyp)
    torch.manual_seed(0)
    kept = 0
    for _ in range(80):
        sample = ds[0]
        mask = (sample.image - GREY).abs().amax(0) > 0.2
        if len(sample.targets):
            kept += 1
            box = cxcywh_to_xyxy(sample.targets[0, 1:]) * 64
            # Bilinear edges may blur by a pixel; the box must not be off by more.
            assert (box - visible_box(sample.image)).abs().max() <= 1.0, box
        else:  # dropped: < min_visible of at most 22.5 ** 2 px left, + a blurred edge
            assert mask.sum() <= 0.25 * 22.5**2 + 2 * 22.5
    assert 20 <= kept < 80  # some shifts push the object out, most keep it


def test_color_jitter_changes_colours_but_not_boxes(small_demo):
    path = load_spec(small_demo).train[0]
    hyp = AugmentConfig(**{**NO_AUG, "hsv_h": 0.1, "hsv_s": 0.7, "hsv_v": 0.4})
    plain = YoloDataset([path], 4, img_size=64)[0]
    torch.manual_seed(1)
    jittered = YoloDataset([path], 4, img_size=64, augment=True, hyp=hyp)[0]
    assert (jittered.image - plain.image).abs().mean() > 0.01
    assert jittered.image.min() >= 0 and jittered.image.max() <= 1
    torch.testing.assert_close(jittered.targets, plain.targets)


def rand_rgb(n=500) -> torch.Tensor:
    return torch.rand(3, 1, n, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("gain", [0.3, 1.0, 1.7])
def test_saturation_and_value_gains_match_colorsys(gain):
    rgb = rand_rgb()
    pixels = rgb[:, 0].T.tolist()

    def expect(change):
        out = []
        for p in pixels:
            h, s, v = colorsys.rgb_to_hsv(*p)
            out.append(colorsys.hsv_to_rgb(*change(h, s, v)))
        return torch.tensor(out, dtype=torch.float32).T[:, None]

    torch.testing.assert_close(
        scale_saturation(rgb, gain),
        expect(lambda h, s, v: (h, min(1, s * gain), v)),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(
        scale_value(rgb, gain), expect(lambda h, s, v: (h, s, min(1, v * gain))), atol=1e-5, rtol=0
    )


def test_hue_rotation():
    red_grey = torch.tensor([[1.0, 0.4], [0.0, 0.4], [0.0, 0.4]])[:, None]
    third = rotate_hue(red_grey, 1 / 3)
    torch.testing.assert_close(third[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(third[:, 0, 1], torch.tensor([0.4, 0.4, 0.4]))
    rgb = torch.tensor([[0.9, 0.3, 0.2], [0.2, 0.6, 0.3]]).T[:, None]
    turned = rotate_hue(rgb, 0.02)
    for before, after in zip(rgb[:, 0].T.tolist(), turned[:, 0].T.tolist(), strict=True):
        shift = colorsys.rgb_to_hsv(*after)[0] - colorsys.rgb_to_hsv(*before)[0]
        assert shift == pytest.approx(0.02, abs=0.006)


def test_augment_config_rejects_bad_values():
    with pytest.raises(ValueError, match="flip_lr must be in"):
        AugmentConfig(flip_lr=1.5)
    with pytest.raises(ValueError, match="scale must be < 1"):
        AugmentConfig(scale=1.0)


# ---------------------------------------------------------------- collate and loader


def test_collate_layout(tmp_path):
    images = make_split(tmp_path, "train", 3)
    label_path(images[1]).write_text("")
    label_path(images[2]).write_text("0 0.5 0.5 0.5 0.5\n1 0.25 0.5 0.5 1\n")
    ds = YoloDataset(images, 2, img_size=32)
    samples = [ds[i] for i in range(3)]
    batch = collate(samples)
    assert batch.images.shape == (3, 3, 32, 32)
    assert batch.targets.shape == (3, 6)
    assert batch.targets[:, 0].tolist() == [0.0, 2.0, 2.0]
    torch.testing.assert_close(batch.targets[1:, 1:], samples[2].targets)
    torch.testing.assert_close(batch.images[1], samples[1].image)
    assert batch.paths == tuple(str(p) for p in images)
    assert batch.orig_hw == ((30, 40),) * 3
    empty = collate([samples[1]])
    assert empty.targets.shape == (0, 6)


def test_dataloader_with_workers(small_demo):
    spec = load_spec(small_demo)
    ds = YoloDataset(spec.train, 4, img_size=64, augment=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [len(b.paths) for b in batches] == [4, 4]
    for b in batches:
        assert b.images.dtype == torch.float32 and b.images.shape[1:] == (3, 64, 64)
        assert ((b.targets[:, 2:] >= 0) & (b.targets[:, 2:] <= 1)).all()
