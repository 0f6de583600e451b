#!/usr/bin/env python3
"""Copy the docs' two pipeline pictures from a pipeline run into docs/.

    python main.py pipeline                    # writes runs/pipeline
    python docs/pictures.py                    # docs/compare.png, docs/prune_report.png
    python docs/pictures.py runs/p30           # from another run

Both pictures are checked before either is copied, so docs/ never mixes two runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PICTURES = {"compare/compare.png": "compare.png", "prune/prune_report.png": "prune_report.png"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default="runs/pipeline",
                   help="the pipeline's --out (default: runs/pipeline)")
    p.add_argument("--to", default=str(DOCS), help="destination folder (default: docs/)")
    args = p.parse_args(argv)
    run, dest = Path(args.run), Path(args.to)
    missing = [str(run / src) for src in PICTURES if not (run / src).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found; run `python main.py pipeline "
              f"--out {run}` first", file=sys.stderr)
        return 2
    for src, dst in PICTURES.items():
        shutil.copyfile(run / src, dest / dst)
        print(f"{run / src} -> {dest / dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
