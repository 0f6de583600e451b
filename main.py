#!/usr/bin/env python3
"""Slim Res2Net-YOLOv3 detectors: build, train, sparsify, prune, fine-tune and compare.

Every sub-command lives in ``commands/<name>.py`` (see ``commands/__init__.py``). This file
only dispatches and turns user errors and file-system failures (OSError: a read-only folder,
a full disk) into one line on stderr with exit code 2.
"""

import sys

from commands import parse_args


def main(argv: list[str] | None = None) -> int:
    from common.errors import UserError, os_error_message

    args = parse_args(argv)
    try:
        return args._run(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file-system failure no command turned into a UserError
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
