"""One PruneSettings value: defaults, checks, the CLI flags made from it, the report's record."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import fields, replace

import pytest
from helpers import ROOT, TINY_CFGS

from commands import build_parser
from prune import MinKeep, PruneError, PruneSettings, Scope
from prune.budget import Budget, Metric
from prune.settings import Ranking, add_arguments, flag_of


def prune_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_the_cli_defaults_are_the_library_defaults():
    from commands.pipeline import DEMO_PRUNE

    args = build_parser().parse_args(["prune", "--cfg", "x.cfg", "--random-gammas", "0",
                                      "--ratio", "0.5", "--out", "o"])
    assert PruneSettings.from_args(args) == PruneSettings(ratio=0.5)
    pipeline = build_parser().parse_args(["pipeline"])  # its own defaults, chosen on the demo
    assert PruneSettings.from_args(pipeline) == PruneSettings(**DEMO_PRUNE)


def test_every_field_has_a_prune_flag():
    options = build_parser()._subparsers._group_actions[0].choices["prune"]._option_string_actions
    assert {flag_of(f.name) for f in fields(PruneSettings)} <= set(options)


def test_argv_gives_back_the_same_settings():
    chosen = PruneSettings(ratio=0.3, layers=2, flops_exponent=0.0, scope="inner", min_keep=8,
                           round_to=4, fold=False, ranking="latency", latency_exponent=0.5,
                           target_params="0.25x")
    argv = chosen.argv(f.name for f in fields(PruneSettings))
    assert "--no-fold" in argv and argv[:2] == ["--ratio", "0.3"]
    assert PruneSettings.from_args(prune_parser().parse_args(argv)) == chosen
    assert PruneSettings().argv(["fold"]) == []


def test_text_and_numbers_settle_into_their_types():
    s = PruneSettings(ratio=0, scope="inner", min_keep="0.1", round_to=2)
    assert s.scope is Scope.INNER and s.min_keep == MinKeep(0.1) and s.ratio == 0.0
    assert PruneSettings(min_keep=1).min_keep == MinKeep(1)
    assert s.as_dict() == {"ratio": 0.0, "layers": 0, "flops_exponent": 0.1, "ranking": "gamma",
                           "latency_exponent": 1.0, "target_gflops": None,
                           "target_params": None, "target_latency": None, "scope": "inner",
                           "min_keep": "0.1", "round_to": 2, "fold": True,
                           "block_ranking": "gamma"}
    budgeted = PruneSettings(target_gflops="0.3x", layers="auto", ranking="latency")
    assert budgeted.budget == Budget(Metric.GFLOPS, 0.3, relative=True)
    assert budgeted.as_dict()["target_gflops"] == "0.3x" and budgeted.layers == "auto"
    assert budgeted.ranking is Ranking.LATENCY
    assert PruneSettings(layers="3").layers == 3
    assert PruneSettings(target_latency="12.5").budget == Budget("latency", 12.5, False)


@pytest.mark.parametrize("change,message", [
    (dict(ratio=1.0), "--ratio must be in [0, 1), got 1"),
    (dict(ratio=-0.1), "--ratio must be in [0, 1), got -0.1"),
    (dict(ratio=float("nan")), "--ratio must be in [0, 1), got nan"),
    (dict(flops_exponent=1.5), "--flops-exponent must be in [0, 1], got 1.5"),
    (dict(round_to=0), "--round-to must be a whole number >= 1 or auto, got 0"),
    (dict(round_to=2.5), "--round-to must be a whole number >= 1 or auto, got 2.5"),
    (dict(round_to="eight"), "--round-to must be a whole number >= 1 or auto, got eight"),
    (dict(min_keep="0"), "--min-keep must be a fraction in (0, 1) or a whole count >= 1, got 0"),
    (dict(scope="outer"), "--scope must be one of inner, all, got 'outer'"),
    (dict(ranking="flops"), "--ranking must be one of gamma, latency, got 'flops'"),
    (dict(layers="some"), "--layers must be a whole number >= 0 or auto, got some"),
    (dict(target_gflops="0x"), "--target-gflops must be a positive number or a fraction of "
                               "dense such as 0.3x, got 0x"),
    (dict(target_params="-5"), "--target-params must be a positive number or a fraction of "
                               "dense such as 0.3x, got -5"),
    (dict(target_latency="fast"), "--target-latency must be a positive number or a fraction "
                                  "of dense such as 0.3x, got 'fast'"),
    (dict(target_gflops="0.3x", target_params="0.2x"),
     "give one budget, got --target-gflops and --target-params"),
    (dict(layers="auto"), "--layers auto needs a budget (--target-gflops, --target-params or "
                          "--target-latency) to choose the number of blocks for"),
])
def test_bad_values_are_refused_with_one_message(change, message):
    with pytest.raises(PruneError) as e:
        replace(PruneSettings(), **change)
    assert str(e.value) == message


def test_floor_as_a_fraction_rounds_up():
    assert MinKeep(0.1).of(64) == 7 and MinKeep(0.1).of(3) == 1
    assert MinKeep(8).of(64) == 8 and MinKeep(8).of(5) == 5


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "abc", "1e9x"])
def test_bad_min_keep(text):
    with pytest.raises(PruneError, match="--min-keep must be"):
        MinKeep.parse(text)


def test_settings_and_the_help_of_prune_and_pipeline_import_no_torch():
    code = """
import sys
import prune.settings
assert "torch" not in sys.modules, "prune.settings"
from commands import build_parser
for command in ("prune", "pipeline"):
    try:
        build_parser().parse_args([command, "--help"])
    except SystemExit:
        pass
    assert "torch" not in sys.modules and "numpy" not in sys.modules, command
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--flops-exponent E" in proc.stdout and "(default: 0.1)" in proc.stdout


def test_the_report_records_the_settings():
    from darknet import Darknet
    from prune import prune_model
    from prune.importance import randomize_gammas

    chosen = PruneSettings(ratio=0.4, min_keep=2, round_to=2, fold=False)
    _, report = prune_model(randomize_gammas(Darknet(TINY_CFGS[1]), 0), chosen)
    assert report.settings is chosen
    recorded = report.as_dict()
    assert recorded["settings"] == chosen.as_dict() and recorded["img_size"] == 64
    assert len(recorded["layers"]) == len(report.layers)  # the rows, not the --layers count
    assert json.loads(json.dumps(recorded))["settings"] == chosen.as_dict()


def test_round_to_auto_is_8_on_full_size_cfgs_and_1_on_the_demo():
    from darknet import Darknet, parse_cfg
    from prune import prune_model
    from prune.importance import randomize_gammas
    from prune.pipeline import with_round_to
    from prune.settings import auto_round_to

    assert PruneSettings().round_to == "auto" and PruneSettings(round_to="4").round_to == 4
    assert auto_round_to([8, 32, 32, 64, 256]) == 1 and auto_round_to([32, 64, 64, 512]) == 8
    for name, want in (("demo.cfg", 1), ("res2net-yolov3.cfg", 8),
                       ("res2net-yolov3-triangle.cfg", 8), ("yolov3.cfg", 8)):
        assert with_round_to(PruneSettings(), parse_cfg(ROOT / "cfgs" / name)).round_to == want
    _, report = prune_model(randomize_gammas(Darknet(TINY_CFGS[1]), 0), PruneSettings(0.5))
    assert report.settings.round_to == 1 and report.as_dict()["settings"]["round_to"] == 1

    import numpy as np

    from prune import analyze, select_channels
    for name, want in (("demo.cfg", 1), ("res2net-yolov3.cfg", 8)):  # select settles it alike
        structure = analyze(parse_cfg(ROOT / "cfgs" / name)).structure("all")
        scores = np.random.default_rng(0).random(structure.num_classes)
        auto, fixed = (select_channels(structure, scores, PruneSettings(0.5, round_to=r))
                       for r in ("auto", want))
        assert np.array_equal(auto.keep, fixed.keep)
