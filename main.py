#!/usr/bin/env python3
"""Slim Res2Net-YOLOv3 detectors: build, train, sparsify, prune, fine-tune and compare.

Every sub-command lives in ``commands/<name>.py`` and exposes ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``. This file only dispatches and turns
user errors into one line on stderr with exit code 2.
"""

import argparse
import importlib
import sys

# Sub-commands in the order a user meets them.
COMMANDS = [
    "info", "train", "eval", "analyze", "prune", "sparse", "finetune", "compare", "pipeline",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description=__doc__.splitlines()[0],
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


def main(argv: list[str] | None = None) -> int:
    from darknet.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args._run(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
