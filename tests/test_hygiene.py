"""Rules the test suite keeps: a test module imports shared helpers from ``helpers.py``,
never ``conftest`` (pytest loads it itself, and importing it makes a second copy) nor another
test module (whose tests would then run twice, and whose edits break unrelated files)."""

from __future__ import annotations

import ast

from helpers import ROOT

TESTS = ROOT / "tests"


def imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_test_module_imports_conftest_or_another_test_module():
    bad = {}
    for path in sorted(TESTS.glob("*.py")):
        wrong = {m for m in imported_modules(path)
                 if m.split(".")[-1] == "conftest" or m.split(".")[-1].startswith("test_")
                 or m.startswith("tests.")}
        if wrong:
            bad[path.name] = sorted(wrong)
    assert not bad, f"import these from helpers.py instead: {bad}"
