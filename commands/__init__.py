"""The `main.py` sub-commands, one module each, and the parser that dispatches to them.

Every module exposes ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``, and imports torch only inside ``run`` so that ``--help`` stays fast.
``parse_args`` gives every command ``args.given``: the options the user typed, as opposed to
those left at their defaults (``--resume`` needs to know which is which).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-commands in the order a user meets them.
COMMANDS = [
    "info", "convert", "partial", "train", "eval", "analyze", "prune", "sparse", "finetune",
    "compare", "export", "detect", "pipeline",
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
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def check_img_size(size: int | None) -> None:
    """``--img-size``, when given, must be a positive multiple of 32 (the largest stride)."""
    from common.errors import UserError

    if size is not None and (size < 32 or size % 32):
        raise UserError(f"--img-size must be a positive multiple of 32, got {size}")


CALIBRATION_BATCH = 32  # images per batch of BN recalibration and sensitivity analysis


def calibration_batches(data: str, num_classes: int, img_size: int, images: int):
    """A loader over ``images`` images of ``data``'s train split (a seeded draw, letterboxed to
    ``img_size``, not augmented; ``engine.data.sample_split``): what BN recalibration and
    sensitivity analysis run on. Iterating it again gives the same batches."""
    from common.errors import UserError
    from engine.data import EpochLoader, sample_split
    from yolodata import load_spec

    spec = load_spec(data)
    if spec.num_classes != num_classes:
        raise UserError(f"{spec.source}: {spec.num_classes} class names but the cfg has "
                        f"classes={num_classes}")
    dataset = sample_split(spec, "train", images, img_size)
    return EpochLoader(dataset, CALIBRATION_BATCH, shuffle=False, workers=0)


def parse_args(argv: list[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``build_parser().parse_args(argv)``, plus ``args.given``: the dests of the options
    the command line sets (``--lr 0.1`` and ``--lr=0.1`` alike, abbreviations too)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = (parser or build_parser()).parse_args(argv)
    # argparse leaves an attribute that is already set alone unless its option is on the
    # command line, and no option typed there yields None (append and count start from it).
    probe = argparse.Namespace(**dict.fromkeys(vars(args)))
    args._parser.parse_args(argv[1:], probe)  # argv[0] is the command: main.py has no options
    args.given = frozenset(k for k, v in vars(probe).items() if v is not None)
    return args
