"""`main.py analyze --sensitivity` and `main.py prune --data/--recalibrate/--block-ranking
sensitivity`: the files, what the report records, and bad flag combinations (one line)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import ROOT, randomize_bn

import main
from darknet import Darknet

DEMO = ROOT / "cfgs" / "demo.cfg"  # 4 classes, like the demo dataset; 7 removable blocks

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data(make_demo_data):
    return make_demo_data(seed=3, n_train=12)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "demo.weights"
    torch.manual_seed(0)
    randomize_bn(Darknet(DEMO)).save_weights(path)
    return path


def run(argv, capsys):
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sensitivity_file_ranks_the_blocks_prune_removes(tmp_path, data, weights, capsys):
    code, out, _ = run(["analyze", "--cfg", DEMO, "--weights", weights, "--sensitivity",
                        "--data", data, "--images", 12, "--out", tmp_path / "s"], capsys)
    assert code == 0 and "sensitivity 7/7" in out
    sens = json.loads((tmp_path / "s" / "sensitivity.json").read_text())
    assert (tmp_path / "s" / "sensitivity.png").exists()
    assert sens["images"] == 12 and len(sens["blocks"]) == 7
    least = sorted(sens["blocks"], key=lambda b: b["sensitivity"])[:2]

    code, out, _ = run(["prune", "--cfg", DEMO, "--weights", weights, "--layers", 2,
                        "--block-ranking", "sensitivity", "--sensitivity",
                        tmp_path / "s" / "sensitivity.json", "--data", data, "--recalibrate", 9,
                        "--out", tmp_path / "p"], capsys)
    assert code == 0 and "least loss increase measured" in out
    report = json.loads((tmp_path / "p" / "prune_report.json").read_text())
    assert sorted(b["layer"] for b in report["removed_blocks"]) == sorted(
        b["layer"] for b in least)
    assert report["recalibration"] == {"data": str(data), "split": "train", "images": 9}
    assert report["sensitivity"] == str(tmp_path / "s" / "sensitivity.json")
    assert report["settings"]["block_ranking"] == "sensitivity"

    code, out, _ = run(["prune", "--cfg", DEMO, "--weights", weights, "--layers", 2,
                        "--block-ranking", "sensitivity", "--data", data, "--recalibrate", 12,
                        "--out", tmp_path / "m"], capsys)  # measured here, on the same images
    assert code == 0 and "sensitivity 7/7" in out
    measured = json.loads((tmp_path / "m" / "prune_report.json").read_text())
    assert measured["removed_blocks"] == report["removed_blocks"]
    assert measured["sensitivity"] == "measured"


def test_recalibration_changes_only_the_running_statistics(tmp_path, data, weights, capsys):
    for name, extra in (("plain", []), ("recal", ["--data", data])):
        code, _, _ = run(["prune", "--cfg", DEMO, "--weights", weights, "--layers", 1,
                          "--ratio", 0.3, *extra, "--out", tmp_path / name], capsys)
        assert code == 0
    plain, recal = (Darknet(tmp_path / n / "pruned.cfg") for n in ("plain", "recal"))
    plain.load_weights(tmp_path / "plain" / "pruned.weights")
    recal.load_weights(tmp_path / "recal" / "pruned.weights")
    for (name, a), (_, b) in zip(plain.state_dict().items(), recal.state_dict().items(),
                                 strict=True):
        if name.endswith(("running_mean", "running_var")):
            assert not torch.equal(a, b), name
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(a, b), name
    report = json.loads((tmp_path / "recal" / "prune_report.json").read_text())
    assert report["recalibration"]["images"] == 12  # the default 256, of a 12-image split


@pytest.mark.parametrize("argv,message", [
    (["--ratio", "0.3", "--recalibrate", "5"], "--recalibrate needs --data"),
    (["--layers", "1", "--block-ranking", "sensitivity"],
     "--block-ranking sensitivity needs --sensitivity FILE"),
    (["--layers", "1", "--sensitivity", "x.json"],
     "--sensitivity FILE is read by --block-ranking sensitivity only"),
    (["--layers", "1", "--block-ranking", "sensitivity", "--sensitivity", "{cfg}"],
     "not JSON"),
])
def test_bad_data_flags(tmp_path, weights, capsys, argv, message):
    argv = [a.format(cfg=DEMO) for a in argv]
    code, _, err = run(["prune", "--cfg", DEMO, "--weights", weights, *argv,
                        "--out", tmp_path], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "pruned.cfg").exists()


def test_analyze_sensitivity_needs_weights_and_data(capsys):
    code, _, err = run(["analyze", "--cfg", DEMO, "--sensitivity"], capsys)
    assert code == 2 and "--sensitivity needs --weights" in err
