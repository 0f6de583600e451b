"""`main.py train` / `main.py eval` end to end on a few 64 px demo images."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT, kill_when

import main

DEMO = ROOT / "cfgs" / "demo.cfg"

pytestmark = pytest.mark.e2e  # every test runs main.main


def train_argv(demo_data, *extra):
    return ["train", "--cfg", str(DEMO), "--data", str(demo_data), "--epochs", "1",
            "--img-size", "64", "--batch-size", "4", "--workers", "0", "--no-progress", *extra]


def test_train_writes_a_run_refuses_to_overwrite_it_and_eval_reads_it(demo_data, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    assert main.main(train_argv(demo_data, "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert "mAP@.5" in printed and "images/s" in printed
    for name in ("last.weights", "best.weights", "last.pt", "results.json", "results.csv",
                 "model.cfg", "run.json"):
        assert (out / name).is_file(), name
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    assert main.main(train_argv(demo_data, "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a training run; pass --resume" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing lost

    assert main.main(["eval", "--cfg", str(out / "model.cfg"), "--weights",
                      str(out / "best.weights"), "--data", str(demo_data), "--img-size", "64",
                      "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"map50", "map", "per_class"}
    assert set(result["per_class"]) == {"circle", "square", "triangle", "cross"}
    trained = json.loads((out / "results.json").read_text())["epochs"][-1]
    assert result["map50"] == pytest.approx(trained["map50"], abs=1e-9)

    assert main.main(["eval", "--cfg", str(out / "model.cfg"), "--weights",
                      str(out / "best.weights"), "--data", str(demo_data), "--img-size", "64",
                      "--workers", "0"]) == 0
    table = capsys.readouterr().out
    assert "AP@.5:.95" in table and "circle" in table


def test_resume_of_a_finished_run_extends_nothing_and_default_out_increments(
        demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main.main(train_argv(demo_data)) == 0
    assert main.main(train_argv(demo_data)) == 0
    assert (tmp_path / "runs" / "train" / "last.pt").is_file()
    assert (tmp_path / "runs" / "train2" / "last.pt").is_file()
    capsys.readouterr()
    assert main.main(["train", "--resume", "--workers", "0", "--no-progress"]) == 0
    assert "resuming runs/train2 after epoch 1" in capsys.readouterr().out


@pytest.mark.parametrize("label, message", [
    ("7 0.5 0.5 0.1 0.1", r"000000\.txt:1: class id 7 outside names"),
    ("0 0.5 0.5 0.1", r"000000\.txt:1: expected 5 fields"),
    ("0 1.5 0.5 0.1 0.1", r"000000\.txt:1: cx=1\.5 outside \[0, 1\]"),
])
def test_bad_labels_stop_with_one_line_naming_file_and_line(demo_data, tmp_path, capsys,
                                                            label, message):
    import re
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(demo_data.parent, root)
    (root / "labels" / "train" / "000000.txt").write_text(label + "\n")
    text = (root / "demo.yaml").read_text().replace(str(demo_data.parent), str(root))
    (root / "demo.yaml").write_text(text)
    out = tmp_path / "out"
    assert main.main(train_argv(root / "demo.yaml", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not (out / "last.pt").exists()


def test_bad_flags_are_user_errors(demo_data, tmp_path, capsys):
    assert main.main(train_argv(demo_data, "--out", str(tmp_path / "a"), "--img-size",
                                "100")) == 2
    assert "img_size must be a multiple of 32, got 100" in capsys.readouterr().err
    assert main.main(["eval", "--cfg", str(DEMO), "--weights", str(tmp_path / "missing"),
                      "--data", str(demo_data)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main.main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_same_seed_same_run_other_seed_other_run(demo_data, tmp_path):
    """--seed covers the random init too: two fresh runs with one seed write the same
    weights, and another seed starts elsewhere."""
    weights = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        out = tmp_path / name
        assert main.main(train_argv(demo_data, "--out", str(out), "--seed", seed)) == 0
        weights[name] = (out / "last.weights").read_bytes()
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def rows(out):
    return json.loads((out / "results.json").read_text())["epochs"]


def same_run(a, b):
    """Two run folders hold the same weights and the same results (timings aside)."""
    for name in ("last.weights", "best.weights"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    drop = ("images_per_s", "train_s", "eval_s")
    assert ([{k: v for k, v in r.items() if k not in drop} for r in rows(a)]
            == [{k: v for k, v in r.items() if k not in drop} for r in rows(b)])


def kill_after_checkpoint(monkeypatch, epoch):
    """Stop the run right after epoch ``epoch``'s checkpoint is on disk, before the
    weights and results of that epoch (what a kill -9 there leaves)."""
    import engine.writer

    real = engine.writer.save_checkpoint

    def save_then_die(path, state):
        real(path, state)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine.writer, "save_checkpoint", save_then_die)


@pytest.mark.e2e
@pytest.mark.parametrize("epoch", [1, 2])
def test_killed_between_checkpoint_and_weights_resumes_to_the_same_bytes(
        demo_data, tmp_path, monkeypatch, capsys, epoch):
    """The checkpoint is the commit point: written first, so a kill after it leaves the
    epoch's weights and results stale (or, in epoch 1, missing), and --resume rewrites them
    and ends exactly where an uninterrupted run does."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main.main(train_argv(demo_data, "--epochs", "3", "--out", str(straight))) == 0
    with monkeypatch.context() as m:
        kill_after_checkpoint(m, epoch)
        assert main.main(train_argv(demo_data, "--epochs", "3", "--out", str(killed))) == 130
    from engine.checkpoint import load_checkpoint

    assert load_checkpoint(killed / "last.pt")["epoch"] == epoch
    if epoch == 1:
        assert not (killed / "last.weights").exists()
    else:
        assert len(rows(killed)) == epoch - 1  # the results still of the epoch before
    capsys.readouterr()
    assert main.main(train_argv(demo_data, "--epochs", "3", "--out", str(killed),
                                "--resume")) == 0
    assert f"after epoch {epoch}" in capsys.readouterr().out
    same_run(straight, killed)


@pytest.mark.e2e
def test_a_folder_without_checkpoint_is_a_fresh_start_unless_it_holds_weights(
        demo_data, tmp_path, monkeypatch, capsys):
    import engine.writer

    out = tmp_path / "run"
    argv = train_argv(demo_data, "--out", str(out))
    with monkeypatch.context() as m:  # killed in epoch 1: only model.cfg and run.json
        m.setattr(engine.writer, "save_checkpoint", lambda path, state: sys.exit(9))
        with pytest.raises(SystemExit):
            main.main(argv)
    assert {p.name for p in out.iterdir()} == {"model.cfg", "run.json"}
    assert main.main([*argv, "--resume"]) == 2
    assert "no epoch of that run completed; start it again without --resume" in \
        capsys.readouterr().err
    assert main.main(argv) == 0 and (out / "last.pt").is_file()

    (out / "last.pt").unlink()  # weights without their checkpoint: neither is guessed
    for extra, message in (((), "holds run files but no last.pt"),
                           (("--resume",), "holds run files but no checkpoint")):
        assert main.main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


@pytest.mark.e2e
def test_resume_honours_lr_and_epochs_from_the_resumed_iteration(demo_data, tmp_path, capsys):
    from engine.checkpoint import load_checkpoint
    from engine.optim import LRSchedule

    out = tmp_path / "run"
    assert main.main(train_argv(demo_data, "--out", str(out))) == 0  # 1 epoch, 2 iterations
    assert main.main(train_argv(demo_data, "--out", str(out), "--resume", "--epochs", "3",
                                "--lr", "0.001")) == 0
    assert "resumed with epochs, lr0 changed" in capsys.readouterr().out
    # the lr logged after epochs 2 and 3: a 3-epoch cosine with peak 0.001, at iterations 4, 6
    schedule = LRSchedule(total=6, warmup=2, lrf=0.05)
    assert [r["lr"] for r in rows(out)][1:] == pytest.approx([0.001 * schedule(4),
                                                              0.001 * schedule(6)])
    assert rows(out)[0]["lr"] == pytest.approx(0.006 * LRSchedule(2, 2, 0.05)(2))
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["config"]["epochs"], state["config"]["lr0"]) == (3, 3, 0.001)

    assert main.main(train_argv(demo_data, "--out", str(out), "--resume", "--epochs",
                                "3")) == 0  # the new settings are the run's now
    assert "nothing to train" in capsys.readouterr().out
    assert main.main(train_argv(demo_data, "--out", str(out), "--resume", "--epochs",
                                "2")) == 2
    assert "epochs 2 is fewer than the 3 the checkpoint has completed" in \
        capsys.readouterr().err


@pytest.mark.e2e
def test_resume_of_a_finished_run_with_more_epochs_trains_them(demo_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main.main(train_argv(demo_data, "--out", str(out), "--epochs", "2")) == 0
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header.count("best") == 1 and len(header) == len(set(header))
    capsys.readouterr()
    assert main.main(["train", "--resume", "--out", str(out), "--epochs", "3",
                      "--no-progress", "--workers", "0"]) == 0
    assert "done: 1 epoch(s)" in capsys.readouterr().out
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3]


@pytest.mark.e2e
def test_resume_refuses_another_command_and_changed_flags_and_replays_the_rest(
        demo_data, tmp_path, capsys):
    sparse, tuned = tmp_path / "sparse", tmp_path / "finetune"
    sparse_argv = ["sparse", *train_argv(demo_data)[1:], "--penalty", "l1", "--s", "0.02",
                   "--out", str(sparse)]
    assert main.main(sparse_argv) == 0
    teacher = ["--teacher-cfg", str(DEMO), "--teacher-weights", str(sparse / "last.weights")]
    assert main.main(["finetune", *train_argv(demo_data, "--weights",
                      str(sparse / "last.weights"), "--out", str(tuned), *teacher)[1:]]) == 0
    capsys.readouterr()
    for argv, message in [
        (["train", "--resume", "--out", str(sparse)],
         "holds a `main.py sparse` run; continue it with `main.py sparse --resume`"),
        (["sparse", "--resume", "--out", str(tuned)], "holds a `main.py finetune` run"),
        (["sparse", "--resume", "--out", str(sparse), "--batch-size", "2"],
         "--batch-size is 2 here and 4 in that run; on resume only --device, --workers, "
         "--no-progress, --wait, --lr, --epochs may change"),
        (["sparse", "--resume", "--out", str(sparse), "--s", "0.01"],
         "--s is 0.01 here and 0.02 in that run")]:
        assert main.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    # the same flags again (as the pipeline passes them) are fine; the penalty carries on
    assert main.main([*sparse_argv, "--resume", "--epochs", "2"]) == 0
    assert [r["sparsity_s"] for r in rows(sparse)] == [0.02, 0.02]
    # finetune --resume without the teacher flags still distils: they are the run's
    assert main.main(["finetune", "--resume", "--out", str(tuned), "--epochs", "2",
                      "--no-progress"]) == 0
    assert all(r["loss_distill"] > 0 for r in rows(tuned))


@pytest.mark.e2e
def test_kill_9_after_the_first_checkpoint_then_resume_ends_with_the_same_bytes(
        demo_data, tmp_path):
    """Killed wherever it happens to be once epoch 1 is committed (writing files, or in
    epoch 2), the run resumes to exactly what an uninterrupted run writes."""
    from engine.checkpoint import load_checkpoint

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    argv = train_argv(demo_data, "--epochs", "3")
    assert main.main([*argv, "--out", str(straight)]) == 0
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv, "--out", str(killed)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(killed / "last.pt", proc)
    assert load_checkpoint(killed / "last.pt")["epoch"] < 3
    assert main.main([*argv, "--out", str(killed), "--resume"]) == 0
    same_run(straight, killed)
