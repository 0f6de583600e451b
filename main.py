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
    from common.paths import printable

    _survive_any_file_name()
    args = parse_args(argv)
    try:
        return args._run(args) or 0
    except UserError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a file-system failure no command turned into a UserError
        print(f"error: {printable(os_error_message(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _survive_any_file_name() -> None:
    """A path whose name is not UTF-8 (common.paths) printed anywhere must not end the run:
    such characters come out as backslash escapes instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())
