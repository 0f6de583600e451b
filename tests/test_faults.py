"""Faults made on purpose (issue 21): two runs on one folder, poisoned caches, odd images and
file names, budgets above the model, a diverged run resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

import main
from common import lock

TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from common import lock
lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def run(argv, capsys):
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def hold_in_other_process(folder, seconds=300.0) -> subprocess.Popen:
    """A process that holds ``folder``'s lock for ``seconds`` (as a running command would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT)), str(folder),
                             str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


PRUNE = ["prune", "--cfg", TINY, "--random-gammas", "0", "--ratio", "0.3"]


@pytest.mark.e2e
def test_second_run_on_one_out_refuses_until_the_first_is_gone(tmp_path, capsys):
    out = tmp_path / "out"
    holder = hold_in_other_process(out)
    try:
        for argv in (PRUNE, ["train", "--cfg", TINY], ["pipeline", "--cfg", TINY]):
            code, _, err = run([*argv, "--out", out], capsys)
            assert code == 2
            assert err.count("\n") == 1 and f"pid {holder.pid}" in err, err
        assert not (out / "pruned.cfg").exists() and not (out / "pipeline.json").exists()
    finally:
        holder.kill()  # kill -9: the kernel drops the lock, the lock file stays
        holder.wait()
    assert (out / lock.LOCK_NAME).exists()  # left by the killed holder
    code, _, err = run([*PRUNE, "--out", out], capsys)
    assert code == 0, err
    assert (out / "pruned.cfg").exists()


@pytest.mark.e2e
def test_wait_runs_once_the_holder_ends(tmp_path, capsys):
    out = tmp_path / "out"
    holder = hold_in_other_process(out, seconds=1.0)
    code, _, err = run([*PRUNE, "--out", out, "--wait"], capsys)
    holder.wait()
    assert code == 0, err
    assert f"waiting for pid {holder.pid}" in err
    assert (out / "pruned.cfg").exists()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    folder = tmp_path / "x"
    with lock.locked(folder):
        with lock.locked(folder):  # pipeline -> its stages, in-process
            assert lock.holds(folder)
        assert lock.holds(folder)
        assert lock.holder_pid(folder) == os.getpid()
    assert not lock.holds(folder)
    holder = hold_in_other_process(folder, seconds=0.0)  # takes it: we let it go
    holder.wait()


def test_numbered_run_skips_a_folder_another_run_holds(tmp_path):
    from engine.writer import new_run_dir

    base = tmp_path / "train"
    holder = hold_in_other_process(base)  # a run chose runs/train, has written nothing yet
    try:
        chosen = new_run_dir(base, numbered=True)
        assert chosen == tmp_path / "train2" and lock.holds(chosen)
    finally:
        holder.kill()
        holder.wait()
    lock.release(chosen)


def test_stale_temp_of_a_dead_writer_removed_at_once_under_the_lock(tmp_path):
    from common.io import atomic_write_text

    target = tmp_path / "x" / "f.txt"
    target.parent.mkdir()
    stale = target.parent / ".f.txt.0123abcd.tmp"  # a writer killed a second ago
    stale.write_text("half")
    atomic_write_text(target, "a")
    assert stale.exists()  # without the lock: too young to be sure
    with lock.locked(target.parent):
        atomic_write_text(target, "b")
    assert not stale.exists()


def test_lock_file_goes_with_a_normal_end(tmp_path):
    with lock.locked(tmp_path / "x"):
        assert (tmp_path / "x" / lock.LOCK_NAME).exists()
    assert not (tmp_path / "x").exists()  # made by the lock, empty: removed


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory):
    from yolodata import ensure_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return ensure_demo_dataset(root=root, n_train=8, n_val=4, img_size=64, seed=1)


@pytest.mark.slow  # trains three short epochs
@pytest.mark.e2e
def test_diverged_run_resumed_with_a_lower_lr_trains_on(data_yaml, tmp_path, capsys):
    """--lr 1e9 explodes the weights in one step with a finite loss; the NaN only shows at
    the next step, so that epoch must not become the checkpoint the advice resumes from."""
    from engine.checkpoint import load_checkpoint

    out = tmp_path / "run"
    base = ["train", "--cfg", ROOT / "cfgs" / "demo.cfg", "--data", data_yaml, "--img-size",
            "64", "--batch-size", "8", "--workers", "0", "--no-progress", "--out", out]
    assert run([*base, "--epochs", "1"], capsys)[0] == 0
    code, _, err = run(["train", "--resume", "--out", out, "--epochs", "3", "--lr", "1e9",
                        "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "after epoch 2" in err and f"{out / 'last.pt'} (epoch 1) is intact" in err, err
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    code, out_text, err = run(["train", "--resume", "--out", out, "--epochs", "2", "--lr",
                               "0.001", "--no-progress"], capsys)
    assert code == 0, err
    assert "done: 1 epoch(s)" in out_text
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


@pytest.mark.e2e
def test_a_budget_at_or_above_the_dense_model_is_refused_naming_both(tmp_path, capsys):
    from darknet import Darknet
    from darknet.cost import network_cost

    dense = network_cost(Darknet(TINY).cfg, 64, 64).gflops
    prune = ["prune", "--cfg", TINY, "--random-gammas", "0", "--out", tmp_path / "p"]
    for budget, words in [("1.5x", "--target-gflops 1.5x is not below the dense model's "
                                   "figure (1x)"),
                          ("1x", "--target-gflops 1x is not below"),
                          (f"{dense * 2:g}", f"is not below the dense model's {dense:.4g} "
                                             "GFLOPs")]:
        code, _, err = run([*prune, "--target-gflops", budget], capsys)
        assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "p").exists()
    code, out, err = run(["pipeline", "--cfg", TINY, "--target-gflops", "1.5x", "--layers", "0",
                          "--out", tmp_path / "pipe"], capsys)
    assert code == 2 and "is not below the dense model's figure (1x)" in err
    assert "[dense]" not in out


@pytest.mark.e2e
def test_a_file_name_that_is_not_utf8_is_processed(tmp_path):
    """``caf\\xe9.png`` (Latin-1, from a Windows archive) beside an unreadable ``bad\\xe9.jpg``,
    detect run as a user would, on a terminal whose encoding errors are strict."""
    from PIL import Image

    from darknet import Darknet

    source = tmp_path / "in"
    source.mkdir()
    name = os.fsdecode(b"caf\xe9.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(source / name)
    (source / os.fsdecode(b"bad\xe9.jpg")).write_bytes(b"not a picture")
    weights = tmp_path / "demo.weights"
    Darknet(ROOT / "cfgs" / "demo.cfg").save_weights(weights)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "detect", "--cfg", str(ROOT / "cfgs" / "demo.cfg"),
         "--weights", str(weights), "--source", str(source), "--out", str(out),
         "--img-size", "64"], capture_output=True, env=env)
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()  # valid UTF-8, both
    assert proc.returncode == 2, stderr  # the unreadable one: named, the others processed
    assert "Traceback" not in stderr and stderr.count("\n") == 1
    assert "bad\\xe9.jpg: cannot read image" in stderr
    assert "caf\\xe9.png: " in stdout
    assert (out / name).is_file()  # the picture under the real name
    report = (out / "detections.json").read_text(encoding="utf-8")
    assert '"path": ' in report and "caf\\\\xe9.png" in report
    assert json.loads(report)["frame"].endswith("EXIF orientation applied")


@pytest.mark.e2e
def test_detect_says_what_it_does_not_read(tmp_path, capsys):
    """A URL is refused as one (its // intact); images in sub-folders are counted."""
    from PIL import Image

    from darknet import Darknet

    cfg = ROOT / "cfgs" / "demo.cfg"
    weights = tmp_path / "demo.weights"
    Darknet(cfg).save_weights(weights)
    detect = ["detect", "--cfg", cfg, "--weights", weights, "--img-size", "64"]
    code, _, err = run([*detect, "--source", "https://example.com/a.jpg", "--out",
                        tmp_path / "o1"], capsys)
    assert code == 2 and "--source https://example.com/a.jpg: a URL" in err
    assert "nothing is downloaded" in err and err.count("\n") == 1
    source = tmp_path / "pictures"
    (source / "day2").mkdir(parents=True)
    for path in (source / "a.png", source / "day2" / "b.png", source / "day2" / "c.jpg"):
        Image.new("RGB", (40, 30)).save(path)
    code, out, err = run([*detect, "--source", source, "--out", tmp_path / "o2"], capsys)
    assert code == 0, err
    assert f"note: 2 image(s) in sub-folders of {source} are not processed" in out
    assert "wrote 1 picture " in out


@pytest.mark.e2e
def test_an_unusable_cache_folder_names_the_variable_that_moves_it(tmp_path, monkeypatch,
                                                                   capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("RES2NET_YOLO_CACHE", str(blocker))
    code, _, err = run(["train", "--epochs", "1", "--out", tmp_path / "run"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert str(blocker) in err and "set RES2NET_YOLO_CACHE to put the cache elsewhere" in err


@pytest.mark.e2e
def test_detect_into_a_used_out_is_refused_and_the_default_is_numbered(tmp_path, monkeypatch,
                                                                        capsys):
    from PIL import Image

    from darknet import Darknet

    cfg = ROOT / "cfgs" / "demo.cfg"
    weights = tmp_path / "demo.weights"
    Darknet(cfg).save_weights(weights)
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    detect = ["detect", "--cfg", cfg, "--weights", weights, "--img-size", "64",
              "--source", tmp_path / "a.png"]
    out = tmp_path / "used"
    assert run([*detect, "--out", out], capsys)[0] == 0
    before = (out / "detections.json").read_bytes()
    code, _, err = run([*detect, "--out", out], capsys)
    assert code == 2 and "holds files" in err and err.count("\n") == 1
    assert (out / "detections.json").read_bytes() == before
    monkeypatch.chdir(tmp_path)
    for folder in ("runs/detect", "runs/detect2"):
        code, text, _ = run(detect, capsys)
        assert code == 0 and f"{folder}/detections.json" in text


class FailAtSync:
    """``common.io``'s n-th file sync raises, as a kill or a full disk while that file of a
    set is written would stop it."""

    def __init__(self, monkeypatch, n):
        from common import io

        self.count, real = 0, io._TempFile.sync

        def sync(temp):
            self.count += temp.path.name != "write-probe"  # ensure_writable_dir's
            if self.count == n:
                raise KeyboardInterrupt("killed")
            real(temp)
        monkeypatch.setattr(io._TempFile, "sync", sync)


def digests(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


@pytest.mark.e2e
def test_a_kill_between_the_export_pair_leaves_the_old_pair_whole(tmp_path, monkeypatch,
                                                                  capsys):
    import torch
    from helpers import randomize_bn

    from darknet import Darknet

    out = tmp_path / "export"
    argv = ["export", "--cfg", TINY, "--format", "darknet", "--out", out, "--weights"]
    for seed in (0, 1):
        torch.manual_seed(seed)
        randomize_bn(Darknet(TINY), seed).save_weights(tmp_path / f"w{seed}.weights")
    assert run([*argv, tmp_path / "w0.weights"], capsys)[0] == 0
    old = digests(out)
    assert {"tiny-res2net.cfg", "tiny-res2net.weights"} <= set(old)
    with monkeypatch.context() as m:
        FailAtSync(m, 2)  # the .weights complete, the .cfg being written
        assert run([*argv, tmp_path / "w1.weights"], capsys)[0] == 130  # interrupted
    assert digests(out) == old
    assert run([*argv, tmp_path / "w1.weights"], capsys)[0] == 0
    assert digests(out)["tiny-res2net.weights"] != old["tiny-res2net.weights"]


@pytest.mark.e2e
def test_a_kill_between_the_compare_files_leaves_the_old_set_whole(tmp_path, monkeypatch):
    from comparison.compare import Row, write_report

    def rows(map50):
        return [Row(**{f: (name if f in ("name", "runtime") else map50 if f.startswith("map")
                           else 1.0) for f in Row.__dataclass_fields__})
                for name in ("dense", "slim")]
    out = tmp_path / "cmp"
    write_report(rows(0.5), 64, "torch", out)
    old = digests(out)
    assert {"compare.md", "compare.json", "compare.png"} <= set(old)
    for n in (2, 3):  # the chart written, then the json too: the table not yet
        with monkeypatch.context() as m:
            FailAtSync(m, n)
            with pytest.raises(KeyboardInterrupt):
                write_report(rows(0.9), 64, "torch", out)
        assert digests(out) == old
