"""`main.py train` / `main.py eval` end to end on a few 64 px demo images."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

import main
from yolodata import ensure_demo_dataset

DEMO = ROOT / "cfgs" / "demo.cfg"

pytestmark = pytest.mark.e2e  # every test runs main.main


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return ensure_demo_dataset(root=root, n_train=8, n_val=4, img_size=64, seed=2)


def train_argv(data_yaml, *extra):
    return ["train", "--cfg", str(DEMO), "--data", str(data_yaml), "--epochs", "1",
            "--img-size", "64", "--batch-size", "4", "--workers", "0", "--no-progress", *extra]


def test_train_writes_a_run_refuses_to_overwrite_it_and_eval_reads_it(data_yaml, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    assert main.main(train_argv(data_yaml, "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert "mAP@.5" in printed and "images/s" in printed
    for name in ("last.weights", "best.weights", "last.pt", "results.json", "results.csv",
                 "model.cfg", "run.json"):
        assert (out / name).is_file(), name
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    assert main.main(train_argv(data_yaml, "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a training run; pass --resume" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing lost

    assert main.main(["eval", "--cfg", str(out / "model.cfg"), "--weights",
                      str(out / "best.weights"), "--data", str(data_yaml), "--img-size", "64",
                      "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"map50", "map", "per_class"}
    assert set(result["per_class"]) == {"circle", "square", "triangle", "cross"}
    trained = json.loads((out / "results.json").read_text())["epochs"][-1]
    assert result["map50"] == pytest.approx(trained["map50"], abs=1e-9)

    assert main.main(["eval", "--cfg", str(out / "model.cfg"), "--weights",
                      str(out / "best.weights"), "--data", str(data_yaml), "--img-size", "64",
                      "--workers", "0"]) == 0
    table = capsys.readouterr().out
    assert "AP@.5:.95" in table and "circle" in table


def test_resume_of_a_finished_run_extends_nothing_and_default_out_increments(
        data_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main.main(train_argv(data_yaml)) == 0
    assert main.main(train_argv(data_yaml)) == 0
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
def test_bad_labels_stop_with_one_line_naming_file_and_line(data_yaml, tmp_path, capsys,
                                                            label, message):
    import re
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(data_yaml.parent, root)
    (root / "labels" / "train" / "000000.txt").write_text(label + "\n")
    text = (root / "demo.yaml").read_text().replace(str(data_yaml.parent), str(root))
    (root / "demo.yaml").write_text(text)
    out = tmp_path / "out"
    assert main.main(train_argv(root / "demo.yaml", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not (out / "last.pt").exists()


def test_bad_flags_are_user_errors(data_yaml, tmp_path, capsys):
    assert main.main(train_argv(data_yaml, "--out", str(tmp_path / "a"), "--img-size",
                                "100")) == 2
    assert "img_size must be a multiple of 32, got 100" in capsys.readouterr().err
    assert main.main(["eval", "--cfg", str(DEMO), "--weights", str(tmp_path / "missing"),
                      "--data", str(data_yaml)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main.main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_same_seed_same_run_other_seed_other_run(data_yaml, tmp_path):
    """--seed covers the random init too: two fresh runs with one seed write the same
    weights, and another seed starts elsewhere."""
    weights = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        out = tmp_path / name
        assert main.main(train_argv(data_yaml, "--out", str(out), "--seed", seed)) == 0
        weights[name] = (out / "last.weights").read_bytes()
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]
