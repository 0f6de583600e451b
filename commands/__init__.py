"""The `main.py` sub-commands, one module each, and the parser that dispatches to them.

Every module exposes ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``, and imports torch only inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

# Sub-commands in the order a user meets them.
COMMANDS = [
    "info", "train", "eval", "analyze", "prune", "sparse", "finetune", "compare", "pipeline",
]

DESCRIPTION = "Slim Res2Net-YOLOv3 detectors: build, train, sparsify, prune, fine-tune and compare."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"commands.{name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def check_img_size(size: int | None) -> None:
    """``--img-size``, when given, must be a positive multiple of 32 (the largest stride)."""
    from common.errors import UserError

    if size is not None and (size < 32 or size % 32):
        raise UserError(f"--img-size must be a positive multiple of 32, got {size}")
