"""Every `main.py` command's argument wiring, in the fast tier: `--help` works, a command
line reaches that command's `run` with the typed options recorded, and a missing required
option is exit 2 with one error line, not a traceback."""

from __future__ import annotations

import importlib

import pytest

import main
from commands import COMMANDS, parse_args

# the least each command needs on its command line (files need not exist: nothing runs)
MINIMAL = {
    "info": ["--cfg", "x.cfg"],
    "convert": ["--from", "coco", "--split", "val2017", "--out", "data/coco"],
    "partial": ["--cfg", "x.cfg", "--weights", "x.weights", "--cutoff", "74", "--out", "x.74"],
    "train": [],
    "eval": ["--cfg", "x.cfg", "--weights", "x.weights"],
    "analyze": ["--cfg", "x.cfg"],
    "prune": ["--cfg", "x.cfg", "--weights", "x.weights", "--out", "runs/p"],
    "sparse": [],
    "finetune": ["--weights", "x.weights"],
    "compare": ["--model", "a=x.cfg,x.weights"],
    "export": ["--cfg", "x.cfg", "--weights", "x.weights"],
    "detect": ["--cfg", "x.cfg", "--weights", "x.weights", "--source", "x.png"],
    "pipeline": [],
}


def test_every_command_is_covered_here():
    assert set(MINIMAL) == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_describes_the_command(name, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: main.py {name} ")
    assert importlib.import_module(f"commands.{name}").DESCRIPTION.splitlines()[0] in text


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_line_reaches_its_commands_run(name, monkeypatch):
    seen = []
    monkeypatch.setattr(f"commands.{name}.run", lambda args: seen.append(args) or 7)
    assert main.main([name, *MINIMAL[name]]) == 7
    (args,) = seen
    assert args.command == name
    options = args._parser._option_string_actions
    assert args.given == {options[a].dest for a in MINIMAL[name] if a.startswith("--")}


@pytest.mark.parametrize("name", [n for n in COMMANDS if MINIMAL[n]])
def test_a_missing_required_option_is_one_error_line(name, capsys):
    try:  # the first option left out: argparse's usage error, or the command's own check
        code = main.main([name, *MINIMAL[name][2:]])
    except SystemExit as e:
        code = e.code
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(("error: ", f"main.py {name}: error: ")), last
