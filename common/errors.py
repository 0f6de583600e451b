"""The errors every layer of the project raises for bad user input and file-system trouble.

Library code raises :class:`UserError` (or a subclass naming the kind of input); only
``main.py`` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os


class UserError(Exception):
    """Bad input the user can fix (a file, a value, a flag). The message is one line."""


class FileSystemError(UserError):
    """A file or folder that cannot be written (read-only, full disk, not a folder)."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path, self.cause = path, cause
        super().__init__(f"{path}: {cause}")


class TextFileError(UserError):
    """A text input that cannot be read or is not UTF-8, named with its line and byte."""


def os_error_cause(error: BaseException) -> str | None:
    """The OSError behind ``error`` (itself, or what it wraps), in words; None if none.

    ``torch.save`` onto a full disk raises ``RuntimeError: ... unexpected pos`` with the
    ``OSError(ENOSPC)`` only in its context: this finds it.
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e.strerror or str(e) or type(e).__name__
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def os_error_message(error: OSError) -> str:
    """One line for an OSError nothing else caught: ``<path>: <cause>``."""
    cause = os_error_cause(error)
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    return ": ".join([*(os.fsdecode(p) for p in paths), cause]) if paths else cause
