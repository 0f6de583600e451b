"""`main.py analyze` and `main.py prune`: output, files, and bad input (one line, exit 2)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, YOLO_HEAD, randomize_bn

import main
from darknet import Darknet

TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
OTHER = ROOT / "tests" / "cfgs" / "tiny-darknet.cfg"

pytestmark = pytest.mark.e2e  # every test runs main.main (one a main.py subprocess)

NOTHING_TO_PRUNE = """
[net]
width=16
height=16
channels=3
[convolutional]
filters=8
size=1
activation=leaky
""" + YOLO_HEAD


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "in" / "tiny.weights"
    path.parent.mkdir()
    torch.manual_seed(0)
    randomize_bn(Darknet(TINY)).save_weights(path)
    return path


def run(argv, capsys):
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_prints_groups_in_words(capsys):
    code, out, _ = run(["analyze", "--cfg", TINY], capsys)
    assert code == 0
    assert "layer 3 [convolutional] (layers.3.bn) [0:32]" in out
    assert "layer 4 [res2net] conv3 (layers.4.bn3) [0:32]" in out
    assert "prunable with --scope all (residual chain" in out
    assert "not prunable: produced by layer 8 [convolutional]" in out
    assert "layer 2: [res2net] one width for groups G_0..G_3 and every K_i" in out


def test_analyze_json(capsys):
    code, out, _ = run(["analyze", "--cfg", TINY, "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["prunable"]["all"] > data["prunable"]["inner"]
    assert sum(g["size"] for g in data["groups"]) == data["coupled_channels"]


def test_prune_writes_files_prints_table_and_keeps_inputs(tmp_path, weights, capsys):
    before = digest(weights), digest(TINY)
    out_dir = tmp_path / "out"
    code, out, _ = run(["prune", "--cfg", TINY, "--weights", weights, "--ratio", "0.5",
                        "--out", out_dir, "--round-to", "2"], capsys)
    assert code == 0
    assert "res2net" in out and "params:" in out and "GFLOPs @64:" in out
    assert (digest(weights), digest(TINY)) == before
    report = json.loads((out_dir / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    assert report["gflops_after"] < report["gflops_before"]
    assert report["settings"]["ratio"] == 0.5 and report["settings"]["round_to"] == 2
    model = Darknet(out_dir / "pruned.cfg")
    model.load_weights(out_dir / "pruned.weights")
    assert sum(p.numel() for p in model.parameters()) == report["params_after"]


def test_prune_says_when_the_floor_kicks_in(tmp_path, capsys):
    code, out, _ = run(["prune", "--cfg", TINY, "--random-gammas", "1", "--ratio", "0.95",
                        "--out", tmp_path, "--min-keep", "3"], capsys)
    assert code == 0
    assert "floor: layers." in out and "(--min-keep 3)" in out


@pytest.mark.parametrize("ratio", ["1", "-0.2", "1.5"])
def test_bad_ratio(tmp_path, weights, capsys, ratio):
    code, _, err = run(["prune", "--cfg", TINY, "--weights", weights, "--ratio", ratio,
                        "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.startswith("error: --ratio must be in [0, 1)")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_weights_of_another_cfg(tmp_path, weights, capsys):
    before = digest(weights)
    code, _, err = run(["prune", "--cfg", OTHER, "--weights", weights, "--ratio", "0.5",
                        "--out", tmp_path / "o"], capsys)
    assert code == 2 and "weights for another cfg?" in err
    assert len(err.strip().splitlines()) == 1
    assert digest(weights) == before and not (tmp_path / "o").exists()


def test_nothing_to_prune(tmp_path, capsys):
    cfg = tmp_path / "plain.cfg"
    cfg.write_text(NOTHING_TO_PRUNE)
    code, _, err = run(["prune", "--cfg", cfg, "--random-gammas", "0", "--ratio", "0.5",
                        "--out", tmp_path / "o"], capsys)
    assert code == 2 and "nothing to prune" in err
    assert len(err.strip().splitlines()) == 1


def test_out_would_overwrite_the_inputs(tmp_path, weights, capsys):
    cfg = weights.parent / "pruned.cfg"
    shutil.copy(TINY, cfg)
    same = weights.parent / "pruned.weights"
    shutil.copy(weights, same)
    before = digest(cfg), digest(same)
    code, _, err = run(["prune", "--cfg", cfg, "--weights", same, "--ratio", "0.5",
                        "--out", weights.parent], capsys)
    assert code == 2 and "would overwrite the input" in err
    assert (digest(cfg), digest(same)) == before
    assert not (weights.parent / "prune_report.json").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--min-keep", "0", "--min-keep must be"), ("--round-to", "0", "--round-to must be"),
    ("--flops-exponent", "1.5", "--flops-exponent must be in [0, 1], got 1.5")])
def test_bad_floor_rounding_and_exponent(tmp_path, capsys, flag, value, message):
    code, _, err = run(["prune", "--cfg", TINY, "--random-gammas", "0", "--ratio", "0.5",
                        "--out", tmp_path, flag, value], capsys)
    assert code == 2 and message in err


def test_exit_code_from_the_shell(tmp_path):
    r = subprocess.run([sys.executable, "main.py", "prune", "--cfg", str(TINY),
                        "--random-gammas", "0", "--ratio", "2", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --ratio must be in [0, 1), got 2"


# ---------------------------------------------------------------- layer pruning

def test_analyze_lists_the_removable_blocks_without_scores(capsys):
    code, out, _ = run(["analyze", "--cfg", TINY], capsys)
    assert code == 0
    assert "Removable blocks (prune --layers): 3; pass --weights to see their scores:" in out
    assert "    layer 4 [res2net] layers 4 (layers.4.bn3)\n" in out
    code, out, _ = run(["analyze", "--cfg", TINY, "--json"], capsys)
    blocks = json.loads(out)["blocks"]
    assert [(b["layer"], b["bn"], b["score"], b["order"]) for b in blocks] == [
        (2, "layers.2.bn3", None, None), (4, "layers.4.bn3", None, None),
        (5, "layers.5.bn3", None, None)]


def test_prune_layers_removes_what_analyze_ranks_first(tmp_path, weights, capsys):
    code, out, _ = run(["analyze", "--cfg", TINY, "--weights", weights, "--json"], capsys)
    ranked = sorted(json.loads(out)["blocks"], key=lambda b: b["order"])
    code, out, _ = run(["prune", "--cfg", TINY, "--weights", weights, "--layers", "2",
                        "--ratio", "0.3", "--out", tmp_path / "o"], capsys)
    assert code == 0 and "removed 2 of 3 removable blocks" in out
    report = json.loads((tmp_path / "o" / "prune_report.json").read_text())
    assert report["removable_blocks"] == 3
    assert [{k: b[k] for k in ("layer", "layers", "bn", "score")}
            for b in report["removed_blocks"]] == sorted(
        ({k: b[k] for k in ("layer", "layers", "bn", "score")} for b in ranked[:2]),
        key=lambda b: b["layer"])
    dense = Darknet(TINY)
    gone = tuple(f"layers.{j}." for b in report["removed_blocks"] for j in b["layers"])
    bns = {n for n, m in dense.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert set(report["kept"]) == {n for n in bns if not n.startswith(gone)}
    slim = Darknet(tmp_path / "o" / "pruned.cfg")
    slim.load_weights(tmp_path / "o" / "pruned.weights")
    assert len(slim.cfg.layers) == len(dense.cfg.layers) - 2
    assert sum(p.numel() for p in slim.parameters()) == report["params_after"]


def test_prune_layers_alone(tmp_path, capsys):
    code, out, _ = run(["prune", "--cfg", TINY, "--random-gammas", "0", "--layers", "1",
                        "--out", tmp_path], capsys)
    report = json.loads((tmp_path / "prune_report.json").read_text())
    assert code == 0 and report["settings"]["ratio"] == 0 and report["removed_channels"] == 0
    assert len(report["removed_blocks"]) == 1


@pytest.mark.parametrize("argv,message", [
    ([], "error: give --ratio (channels), --layers (blocks), both, or a budget "
         "(--target-gflops, --target-params, --target-latency)"),
    (["--layers", "4"], "error: --layers 4 is more than the 3 removable blocks of "),
    (["--layers", "-1", "--ratio", "0.5"],
     "error: --layers must be a whole number >= 0 or auto, got -1"),
    (["--layers", "auto", "--ratio", "0.5"], "error: --layers auto needs a budget"),
    (["--target-gflops", "0.5x", "--ratio", "0.5"],
     "error: --ratio and --target-gflops exclude each other: the budget search chooses the "
     "ratio"),
    (["--target-params", "0.3x", "--target-gflops", "0.3x"],
     "error: give one budget, got --target-gflops and --target-params"),
    (["--target-params", "10"], "error: --target-params 10 (10 params) is out of reach: the "
                                "least this cut reaches is "),
    (["--target-gflops", "half"], "error: --target-gflops must be a positive number or a "
                                  "fraction of dense such as 0.3x, got 'half'")])
def test_bad_layers_and_budgets(tmp_path, capsys, argv, message):
    code, _, err = run(["prune", "--cfg", TINY, "--random-gammas", "0", *argv,
                        "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_prune_to_a_budget_prints_its_steps_and_records_them(tmp_path, capsys):
    code, out, _ = run(["prune", "--cfg", TINY, "--random-gammas", "0", "--target-gflops",
                        "0.5x", "--out", tmp_path], capsys)
    report = json.loads((tmp_path / "prune_report.json").read_text())
    search = report["search"]
    assert code == 0 and search["met"] and search["budget"] == "0.5x"
    assert report["gflops_after"] <= 0.5 * report["gflops_before"]
    assert report["settings"]["ratio"] == search["ratio"] > 0
    assert report["settings"]["target_gflops"] == "0.5x"
    assert f"budget --target-gflops 0.5x: at most {0.5 * report['gflops_before']:.4g} GFLOPs" \
        in out
    assert out.count("    step ") == len(search["steps"]) >= 3
    assert f"chose --layers 0 --ratio {search['ratio']:.2f}" in out


def test_prune_layers_auto_prints_one_line_per_block_count(tmp_path, capsys):
    code, out, _ = run(["prune", "--cfg", TINY, "--random-gammas", "0", "--target-params",
                        "0.4x", "--layers", "auto", "--out", tmp_path], capsys)
    report = json.loads((tmp_path / "prune_report.json").read_text())
    tried = sorted({s["layers"] for s in report["search"]["steps"]})
    assert code == 0 and len(tried) > 1
    assert all(f"    --layers {n}: " in out for n in tried)
    assert report["settings"]["layers"] == report["search"]["layers"] == \
        len(report["removed_blocks"])
