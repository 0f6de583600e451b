"""The README's first screen: within its limit, every command in it (and in docs/) parses
with the real `main.py` parser, and its Python example runs."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import ROOT

from commands import parse_args

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FIRST_LINES = [
    "pip install -r requirements.txt && python main.py pipeline",
    "pip install -r requirements-dev.txt && python -m pytest --durations=15",
]


def code_blocks(path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", path.read_text(), re.MULTILINE | re.DOTALL)


def shell_commands(path) -> list[str]:
    """Each command of the page's bash blocks: continuation lines joined, comments dropped,
    ``a && b`` split."""
    commands = []
    for block in code_blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def main_argv(command: str) -> list[str] | None:
    """The arguments of a `python main.py ...` (or `torchrun ... main.py ...`) command."""
    words = shlex.split(command)
    return words[words.index("main.py") + 1:] if "main.py" in words else None


def test_the_readme_fits_the_first_screen_and_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200
    assert [c for c in shell_commands(README)[:4]] == [
        part.strip() for line in FIRST_LINES for part in line.split("&&")]
    assert code_blocks(README, "bash")[0].count("\n") == 2  # the two, first of all


def test_the_install_commands_name_files_that_exist():
    for command in shell_commands(README):
        if command.startswith("pip install -r"):
            assert (ROOT / command.split()[-1]).is_file(), command


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_main_py_command_parses_and_names_files_that_exist(page):
    commands = [c for c in shell_commands(page) if main_argv(c) is not None]
    if page == README:
        assert len(commands) >= 8  # pipeline, the five steps on your own data, ship it
    for command in commands:
        argv = main_argv(command)
        try:
            args = parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"{page.name}: {command!r} does not parse (exit {e.code})")
        for name in ("cfg", "teacher_cfg"):
            value = getattr(args, name, None)
            if value and value.startswith("cfgs/"):
                assert (ROOT / value).is_file(), command


def python_example(data, out, epochs: int, img_size: int) -> str:
    """The README's Python example with its parameter line set to the given values."""
    (code,) = code_blocks(README, "python")
    line = re.compile(r'^cfg, data, out, epochs, img_size = "cfgs/demo.cfg", "demo", '
                      r'"runs/script", 12, 128$', re.MULTILINE)
    assert line.search(code), "the example's parameter line changed: update this test"
    assert 10 <= len([x for x in code.splitlines() if x and not x.startswith("from ")]) <= 15
    return line.sub(f'cfg, data, out, epochs, img_size = "cfgs/demo.cfg", {str(data)!r}, '
                    f'{str(out)!r}, {epochs}, {img_size}', code)


@pytest.mark.slow
@pytest.mark.e2e
def test_the_python_example_runs_the_whole_workflow(demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the example names cfgs/demo.cfg as the README's reader does
    code = python_example(demo_data, tmp_path / "script", epochs=1, img_size=64)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    numbers = [float(x) for x in printed.splitlines() if re.fullmatch(r"[\d.e-]+", x)]
    assert len(numbers) == 1 and 0 <= numbers[0] <= 1  # evaluate(...).map50
    assert "| dense |" in printed
    lines = printed.splitlines()
    header = [c.strip() for c in next(x for x in lines if x.startswith("| model |")).split("|")]
    slim_row = next(x for x in lines if x.startswith("| slim |")).split("|")
    # the same model, data and size as evaluate's
    assert slim_row[header.index("mAP@.5")].strip() == f"{numbers[0]:.4f}"
    for stage in ("dense", "sparse", "finetune"):
        assert (tmp_path / "script" / stage / "best.weights").is_file()
    assert (tmp_path / "script" / "prune" / "pruned.cfg").is_file()
    assert (tmp_path / "script" / "slim.onnx").stat().st_size > 0
