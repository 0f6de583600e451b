"""One PruneSettings value: defaults, checks, the CLI flags made from it, the report's record."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import fields, replace

import pytest
from conftest import ROOT, TINY_CFGS

from commands import build_parser
from prune import MinKeep, PruneError, PruneSettings, Scope
from prune.settings import add_arguments, flag_of


def prune_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_the_cli_defaults_are_the_library_defaults():
    args = build_parser().parse_args(["prune", "--cfg", "x.cfg", "--random-gammas", "0",
                                      "--ratio", "0.5", "--out", "o"])
    assert PruneSettings.from_args(args) == PruneSettings(ratio=0.5)
    pipeline = build_parser().parse_args(["pipeline"])
    assert PruneSettings.from_args(pipeline) == PruneSettings()


def test_every_field_has_a_prune_flag():
    options = build_parser()._subparsers._group_actions[0].choices["prune"]._option_string_actions
    assert {flag_of(f.name) for f in fields(PruneSettings)} <= set(options)


def test_argv_gives_back_the_same_settings():
    chosen = PruneSettings(ratio=0.3, layers=2, flops_exponent=0.0, scope="inner", min_keep=8,
                           round_to=4, fold=False)
    argv = chosen.argv(f.name for f in fields(PruneSettings))
    assert "--no-fold" in argv and argv[:2] == ["--ratio", "0.3"]
    assert PruneSettings.from_args(prune_parser().parse_args(argv)) == chosen
    assert PruneSettings().argv(["fold"]) == []


def test_text_and_numbers_settle_into_their_types():
    s = PruneSettings(ratio=0, scope="inner", min_keep="0.1", round_to=2)
    assert s.scope is Scope.INNER and s.min_keep == MinKeep(0.1) and s.ratio == 0.0
    assert PruneSettings(min_keep=1).min_keep == MinKeep(1)
    assert s.as_dict() == {"ratio": 0.0, "layers": 0, "flops_exponent": 0.1, "scope": "inner",
                           "min_keep": "0.1", "round_to": 2, "fold": True}


@pytest.mark.parametrize("change,message", [
    (dict(ratio=1.0), "--ratio must be in [0, 1), got 1"),
    (dict(ratio=-0.1), "--ratio must be in [0, 1), got -0.1"),
    (dict(ratio=float("nan")), "--ratio must be in [0, 1), got nan"),
    (dict(flops_exponent=1.5), "--flops-exponent must be in [0, 1], got 1.5"),
    (dict(round_to=0), "--round-to must be a whole number >= 1, got 0"),
    (dict(round_to=2.5), "--round-to must be a whole number >= 1, got 2.5"),
    (dict(min_keep="0"), "--min-keep must be a fraction in (0, 1) or a whole count >= 1, got 0"),
    (dict(scope="outer"), "--scope must be one of inner, all, got 'outer'"),
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
