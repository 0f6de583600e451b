"""Package-level names that load their module on first use (PEP 562).

A package's ``__init__`` lists where each public name lives; ``from engine import evaluate``
then works without ``import engine`` importing torch for every ``engine.x`` user (and the
commands' ``--help``, which import no torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_names(package: str, home: Mapping[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: ``home`` maps a name to its module,
    relative to the package."""

    def __getattr__(name: str):
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home[name]}"), name)

    def __dir__() -> list[str]:
        return sorted({*home, *vars(importlib.import_module(package))})

    return __getattr__, __dir__
