"""Faults made on purpose (issue 13): failed and interrupted writes, read-only and full
disks, text that is not UTF-8, late cfg mistakes, truncated images, file modes, stale
temporary files, and the small flag checks. Each test fails when its behaviour is missing."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, respect_file_modes
from PIL import Image

import common.io
import main
from common.errors import FileSystemError, TextFileError, UserError
from common.io import atomic_open, atomic_write_text, ensure_writable_dir, remove_stale_temps
from darknet import CfgError, Darknet, infer_shapes, parse_cfg, parse_cfg_text
from darknet.shapes import MAX_CONV_WEIGHTS
from yolodata import DataError, load_spec

TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
DEMO_CFG = ROOT / "cfgs" / "demo.cfg"
ENOSPC = os.strerror(errno.ENOSPC)


def run(argv, capsys):
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def never(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran, though the command should have stopped before it")
    return fail


class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, ENOSPC)
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def fill_disk(monkeypatch, room: int = 0, names=None):
    """Make common.io's writes of files named in ``names`` (all: None) hit a full disk."""
    real = common.io._open_fd

    def open_fd(fd, mode):
        f = real(fd, mode)
        target = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if names is None or any(target.startswith(f".{n}.") for n in names):
            return _FullDisk(f, room)
        return f

    monkeypatch.setattr(common.io, "_open_fd", open_fd)


# ------------------------------------------------------------------ 3. prune's files together

def prune_argv(out, ratio):
    return ["prune", "--cfg", TINY, "--random-gammas", "0", "--ratio", ratio, "--out", out]


def pair_loads(out: Path) -> None:
    Darknet(out / "pruned.cfg").load_weights(out / "pruned.weights")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.e2e  # runs main.main
def test_prune_whose_second_write_fails_leaves_the_old_pair_intact(tmp_path, monkeypatch,
                                                                    capsys):
    out = tmp_path / "prune"
    assert run(prune_argv(out, 0.3), capsys)[0] == 0
    before = snapshot(out)

    def no_room(model, f, header=None):
        f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr("prune.pipeline.write_weights", no_room)  # the second of three
    code, _, err = run(prune_argv(out, 0.6), capsys)
    assert code == 2
    assert one_error_line(err) == f"error: {out / 'pruned.weights'}: cannot write: {ENOSPC}"
    assert snapshot(out) == before  # nothing replaced, no temporary file left
    pair_loads(out)


@pytest.mark.e2e  # runs main.main
def test_prune_killed_between_its_renames_leaves_no_cfg_beside_other_weights(tmp_path,
                                                                            monkeypatch,
                                                                            capsys):
    out = tmp_path / "prune"
    assert run(prune_argv(out, 0.3), capsys)[0] == 0
    old_weights = (out / "pruned.weights").read_bytes()
    real_replace, calls = os.replace, []

    def killed_before_the_last(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process dies here
        real_replace(src, dst)

    monkeypatch.setattr(common.io.os, "replace", killed_before_the_last)
    code, _, err = run(prune_argv(out, 0.6), capsys)
    assert code == 130 and calls == ["prune_report.json", "prune_report.png", "pruned.weights",
                                     "pruned.cfg"]
    assert (out / "pruned.weights").read_bytes() != old_weights  # the new set, half-renamed,
    assert not (out / "pruned.cfg").exists()  # so no cfg: never the old one beside them
    monkeypatch.undo()
    assert run(prune_argv(out, 0.6), capsys)[0] == 0  # running prune again completes the set
    pair_loads(out)


# ------------------------------------------------------------------ 5. read-only / full disk

@pytest.mark.e2e  # runs main.main
def test_out_under_a_regular_file_fails_in_one_line_before_any_work(tmp_path, demo_data,
                                                                    monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    monkeypatch.setattr("prune.prune_model", never("pruning"))
    monkeypatch.setattr("engine.trainer.Trainer.fit", never("training"))
    monkeypatch.setattr("engine.evaluator.evaluate_batches", never("evaluation"))
    monkeypatch.setattr("shipping.formats.export_onnx", never("exporting"))
    monkeypatch.setattr("detection.detect_image", never("detection"))
    weights = tmp_path / "demo.weights"
    Darknet(DEMO_CFG).save_weights(weights)
    picture = tmp_path / "picture.png"
    Image.new("RGB", (64, 48)).save(picture)
    commands = [
        prune_argv(out, 0.3),
        ["export", "--cfg", DEMO_CFG, "--weights", weights, "--out", out],
        ["detect", "--cfg", DEMO_CFG, "--weights", weights, "--source", picture, "--out", out],
        ["train", "--data", demo_data, "--img-size", "64", "--epochs", "1", "--out", out],
        ["pipeline", "--data", demo_data, "--img-size", "64", "--out", out],
        ["compare", "--model", f"a={DEMO_CFG},{weights}", "--data", demo_data,
         "--img-size", "64", "--out", out],
    ]
    for argv in commands:
        code, stdout, err = run(argv, capsys)
        assert code == 2, argv[0]
        assert one_error_line(err).startswith(f"error: {out}: ")
        assert f"({blocker} is a file)" in err, argv[0]
        assert "[dense]" not in stdout
    assert blocker.read_text() == "not a folder"


@pytest.mark.e2e  # runs main.py
def test_read_only_out_fails_in_one_line(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:  # as root too (CI runs as root): the command runs without the right to ignore modes
        proc = subprocess.run([sys.executable, str(ROOT / "main.py"),
                               *map(str, prune_argv(out, 0.3))],
                              capture_output=True, text=True, preexec_fn=respect_file_modes)
    finally:
        out.chmod(0o700)
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc.stderr).startswith(
        f"error: {out}: cannot write to --out folder: ")
    assert not list(out.iterdir())


@pytest.mark.e2e  # runs main.main
def test_full_disk_fails_in_one_line_before_any_work(tmp_path, demo_data, monkeypatch, capsys):
    fill_disk(monkeypatch)
    monkeypatch.setattr("prune.prune_model", never("pruning"))
    monkeypatch.setattr("engine.trainer.Trainer.fit", never("training"))
    for argv in (prune_argv(tmp_path / "p", 0.3),
                 ["train", "--data", demo_data, "--img-size", "64", "--out", tmp_path / "t"]):
        code, _, err = run(argv, capsys)
        assert code == 2
        assert one_error_line(err) == (f"error: {argv[-1]}: cannot write to --out folder: "
                                       f"{ENOSPC}")
    assert not list(tmp_path.rglob("*.tmp"))


def test_torch_save_onto_a_full_disk_names_the_file_and_the_cause(tmp_path, monkeypatch):
    from engine.checkpoint import save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"x": torch.zeros(4)})
    before = path.read_bytes()
    fill_disk(monkeypatch, room=1000, names=["last.pt"])
    with pytest.raises(FileSystemError) as info:  # torch says "RuntimeError: unexpected pos"
        save_checkpoint(path, {"x": torch.zeros(10_000)})
    assert str(info.value) == f"{path}: cannot write: {ENOSPC}"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.e2e  # runs main.main
def test_main_turns_any_os_error_into_one_line(monkeypatch, capsys):
    def fails(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/some/file")

    monkeypatch.setattr("commands.info.run", fails)
    code, _, err = run(["info", "--cfg", TINY], capsys)
    assert code == 2 and one_error_line(err) == "error: /some/file: Permission denied"


# ------------------------------------------------------------------ 6. text that is not UTF-8

def test_cfg_with_a_bom_reads_like_the_plain_one(tmp_path):
    bom = tmp_path / "bom.cfg"
    bom.write_bytes(b"\xef\xbb\xbf" + TINY.read_bytes())
    assert parse_cfg(bom) == parse_cfg(TINY)
    assert parse_cfg_text("\ufeff" + TINY.read_text()) == parse_cfg(TINY)


@pytest.mark.e2e  # runs main.main
def test_text_files_that_are_not_utf8_give_one_line_with_file_and_line(tmp_path, capsys):
    cp1252 = tmp_path / "cp1252.cfg"
    cp1252.write_bytes(TINY.read_bytes() + "# caf\u00e9\n".encode("cp1252"))
    line = TINY.read_text().count("\n") + 1
    with pytest.raises(TextFileError, match=rf"cp1252\.cfg:{line}: not UTF-8 text \(byte 0xe9 "
                                            r"at column 6\); a cfg must be UTF-8 text"):
        parse_cfg(cp1252)
    binary = tmp_path / "binary.cfg"
    binary.write_bytes(bytes(range(256)))
    code, _, err = run(["info", "--cfg", binary], capsys)
    assert code == 2
    assert one_error_line(err) == (f"error: {binary}:2: not UTF-8 text (byte 0x80 at column "
                                   "118); a cfg must be UTF-8 text")  # after byte 10, "\\n"
    data = tmp_path / "data.yaml"
    data.write_bytes(b"names: [a]\n\x89PNG\r\n")
    with pytest.raises(TextFileError, match=r"data\.yaml:2: not UTF-8 text \(byte 0x89"):
        load_spec(data)


def test_data_yaml_with_a_bom_loads(tmp_path, demo_data):
    copy = tmp_path / "bom.yaml"
    copy.write_bytes(b"\xef\xbb\xbf" + demo_data.read_bytes())
    spec = load_spec(copy)
    assert spec.names == load_spec(demo_data).names and len(spec.train) == 8


# ------------------------------------------------------------------ 7. late cfg mistakes

def test_heads_with_different_classes_are_refused_when_read(tmp_path):
    text = TINY.read_text().splitlines(keepends=True)
    last = max(i for i, t in enumerate(text) if t.startswith("classes="))
    text[last] = "classes=3\n"
    first_head = next(i for i, t in enumerate(text) if t.strip() == "[yolo]") + 1
    last_head = max(i for i, t in enumerate(text) if t.strip() == "[yolo]") + 1
    with pytest.raises(CfgError, match=rf"<cfg>:{last_head}: \[yolo\] classes=3, but the "
                                       rf"\[yolo\] at line {first_head} has classes=2"):
        parse_cfg_text("".join(text))


NO_HEAD = """[net]
width=64
height=64
[convolutional]
filters=8
size=3
activation=leaky
"""


@pytest.mark.e2e  # runs main.main
def test_cfg_without_a_head_is_fine_for_info_and_refused_by_train_and_eval(tmp_path, capsys,
                                                                         demo_data):
    cfg = tmp_path / "backbone.cfg"
    cfg.write_text(NO_HEAD)
    assert run(["info", "--cfg", cfg], capsys)[0] == 0
    for argv in (["train", "--cfg", cfg, "--data", demo_data, "--out", tmp_path / "t"],
                 ["eval", "--cfg", cfg, "--weights", tmp_path / "none.weights"]):
        code, _, err = run(argv, capsys)
        assert code == 2
        assert one_error_line(err) == (f"error: {cfg}: no [yolo] layer: main.py {argv[0]} "
                                       "needs at least one detection head")
    with pytest.raises(CfgError, match="no \\[yolo\\] layer"):
        _ = Darknet(cfg).num_classes


def conv_cfg(filters: int) -> str:
    return (f"[net]\nwidth=2\nheight=2\nchannels=1\n[convolutional]\nfilters={filters}\n"
            "size=1\nactivation=linear\n")


def test_absurd_sizes_are_refused_before_allocation():
    infer_shapes(parse_cfg_text(conv_cfg(MAX_CONV_WEIGHTS)))  # at both bounds: accepted
    with pytest.raises(CfgError, match=r"<cfg>:5: \[convolutional\] filters=268435457 size=1 "
                                       r"on 1 channels gives 268,435,457 weights"):
        infer_shapes(parse_cfg_text(conv_cfg(MAX_CONV_WEIGHTS + 1)))
    text = TINY.read_text().replace("filters=16\n", "filters=400000000\n", 1)
    with pytest.raises(CfgError, match=r"<cfg>:16: \[convolutional\] filters=400000000 size=3 "
                                       r"on 8 channels gives 28,800,000,000 weights"):
        Darknet(parse_cfg_text(text))  # would allocate 115 GB
    wide = TINY.read_text().replace("[net]\nwidth=64\nheight=64", "[net]\nwidth=65536\n"
                                    "height=65536")
    with pytest.raises(CfgError, match=r"output values per image"):
        Darknet(parse_cfg_text(wide))


# ------------------------------------------------------------------ 8. truncated images

def jpeg_split(root: Path, n: int = 6) -> list[Path]:
    """``n`` JPEGs with one-class labels; image 1 cut in half, image 2 with data after
    its end marker (still a good image)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    paths = []
    for i in range(n):
        path = root / "images" / f"im{i}.jpg"
        Image.effect_noise((48, 40), 60 + 10 * i).convert("RGB").save(path, quality=90)
        (root / "labels" / f"im{i}.txt").write_text("0 0.5 0.5 0.25 0.5\n")
        paths.append(path)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    paths[2].write_bytes(paths[2].read_bytes() + b"trailing")
    return paths


def test_header_check_skips_a_truncated_jpeg(tmp_path):
    from yolodata import check_split

    images = jpeg_split(tmp_path)
    result = check_split(images, 1, "train")
    assert result.images == tuple(p for i, p in enumerate(images) if i != 1)
    assert [p for p, _ in result.skipped] == [images[1]]
    assert "truncated" in result.skipped[0][1]


def test_cache_fill_leaves_out_a_truncated_jpeg(tmp_path):
    from yolodata import YoloDataset

    images = jpeg_split(tmp_path)
    ds = YoloDataset(images, 1, img_size=32, cache_images=True)
    assert ds.images == tuple(p for i, p in enumerate(images) if i != 1)
    assert list(ds.skipped) == [str(images[1])] and len(ds.labels) == len(ds) == 5


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_skips_a_truncated_jpeg_in_process_and_in_a_worker(tmp_path, workers):
    from engine.data import EpochLoader
    from yolodata import YoloDataset

    images = jpeg_split(tmp_path)
    ds = YoloDataset(images, 1, img_size=32, cache_images=False)  # too big for the cache
    loader = EpochLoader(ds, batch_size=2, shuffle=False, workers=workers)
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        seen = [p for b in batches for p in b.paths]
        assert sorted(seen) == sorted(str(p) for i, p in enumerate(images) if i != 1)
        assert sum(len(b.images) for b in batches) == 5
        assert list(ds.skipped) == [str(images[1])]  # known in this process, from the worker
        assert "truncated" in ds.skipped[str(images[1])]


def test_loader_drops_a_batch_of_unreadable_images(tmp_path):
    from engine.data import EpochLoader
    from yolodata import YoloDataset

    images = jpeg_split(tmp_path)
    ds = YoloDataset(images[:2], 1, img_size=32, cache_images=False)
    assert [b.paths for b in EpochLoader(ds, batch_size=1, shuffle=False, workers=0)] == [
        (str(images[0]),)]


def data_with_truncated_jpeg(tmp_path: Path, demo_data: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(demo_data.parent, root)
    png = root / "images" / "train" / "000003.png"
    jpg = png.with_suffix(".jpg")
    Image.open(png).save(jpg, quality=90)
    png.unlink()
    jpg.write_bytes(jpg.read_bytes()[:600])
    yaml = root / "demo.yaml"
    yaml.write_text(yaml.read_text().replace(str(demo_data.parent), str(root)))
    return yaml


@pytest.mark.e2e
@pytest.mark.parametrize("header_check", [True, False])
def test_train_skips_a_truncated_jpeg_and_says_so(tmp_path, demo_data, monkeypatch, capsys,
                                                  header_check):
    """header_check=False: a set too big for the RAM cache, loaded by a worker process."""
    data = data_with_truncated_jpeg(tmp_path, demo_data)
    workers = "0"
    if not header_check:
        monkeypatch.setattr("yolodata.labels._ends_with", lambda path, tail: True)
        monkeypatch.setattr("yolodata.dataset.CACHE_BUDGET_BYTES", 0)
        workers = "1"
    code, out, err = run(["train", "--data", data, "--img-size", "64", "--epochs", "1",
                          "--batch-size", "4", "--workers", workers, "--no-progress",
                          "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    summary = [line for line in out.splitlines() if line.startswith("skipped")]
    assert summary and all(line.startswith("skipped 1 unreadable image(s), e.g. ")
                           and "000003.jpg" in line and "truncated" in line
                           for line in summary)
    assert (tmp_path / "run" / "last.pt").is_file()


# ------------------------------------------------------------------ 9. modes, temps, flags

@pytest.mark.e2e  # runs main.main
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode, capsys):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert run(prune_argv(tmp_path / "p", 0.3), capsys)[0] == 0
    finally:
        os.umask(old)
    written = [tmp_path / "a.txt", *(tmp_path / "p").iterdir()]
    assert len(written) == 5  # a.txt, pruned.cfg/.weights, prune_report.json/.png
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {p.name: mode for p in written}


HOLD_A_WRITE = """
import sys, time
from common.io import atomic_open
with atomic_open(sys.argv[1]) as f:
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


def writer_in_the_middle(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_A_WRITE, str(target)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    return proc


def temps_of(target: Path) -> set[Path]:
    return set(target.parent.glob(f".{target.name}.*.tmp"))


def make_old(*paths: Path) -> None:
    past = time.time() - 3600
    for p in paths:
        os.utime(p, (past, past))


def test_stale_temps_of_the_target_are_cleaned_not_those_in_use(tmp_path):
    target = tmp_path / "last.pt"
    killed = writer_in_the_middle(target)
    dead_temp, = temps_of(target)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    live = writer_in_the_middle(target)
    try:
        live_temp, = temps_of(target) - {dead_temp}
        other = tmp_path / ".last.weights.abcd1234.tmp"  # another target's
        other.write_bytes(b"x")
        make_old(dead_temp, live_temp, other)
        young = tmp_path / ".last.pt.0123abcd.tmp"  # unlocked, but too recent to judge
        young.write_bytes(b"x")

        atomic_write_text(target, "complete")
        assert target.read_text() == "complete"
        assert temps_of(target) == {live_temp, young}  # the killed writer's file is gone
        assert other.exists()
    finally:
        live.kill()
        live.wait()
    make_old(young)  # now the other writer is gone too
    assert set(remove_stale_temps(target)) == {live_temp, young}
    assert temps_of(target) == set()


def test_data_given_a_folder_says_what_is_expected(tmp_path, demo_data):
    with pytest.raises(DataError, match=r"is a folder; expected a data \.yaml/\.yml \(path, "
                                        r"train, val, names\), a Darknet \.data file or 'demo' "
                                        r"\(this one holds demo\.yaml\)"):
        load_spec(demo_data.parent)
    with pytest.raises(DataError, match=r"is a folder; expected .* or 'demo'$"):
        load_spec(tmp_path)


@pytest.mark.e2e  # runs main.main
def test_compare_refuses_img_size_0_like_eval(capsys):
    for command in ("compare", "eval"):
        argv = [command, "--img-size", "0"]
        argv += (["--model", "a=missing.cfg,missing.weights"] if command == "compare"
                 else ["--cfg", "missing.cfg", "--weights", "missing.weights"])
        code, _, err = run(argv, capsys)
        assert code == 2
        assert one_error_line(err) == "error: --img-size must be a positive multiple of 32, got 0"


def test_ensure_writable_dir_leaves_nothing_when_not_creating(tmp_path):
    ensure_writable_dir(tmp_path / "a" / "b", create=False)
    assert os.listdir(tmp_path) == []
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
    assert os.listdir(tmp_path / "a" / "b") == []
    with pytest.raises(UserError, match="is not a folder"):
        (tmp_path / "f").write_text("")
        ensure_writable_dir(tmp_path / "f")


def test_atomic_open_keeps_errors_that_are_not_file_system_errors(tmp_path):
    with pytest.raises(ValueError, match="bad value"), atomic_open(tmp_path / "x") as f:
        f.write(b"half")
        raise ValueError("bad value")
    assert os.listdir(tmp_path) == []
