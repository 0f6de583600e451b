"""Typed errors for dataset problems the user can fix.

All are ``UserError`` subclasses so ``main.py`` reports them as one line on stderr; each
message names the offending file (and line, for label files).
"""

from pathlib import Path

from common.errors import UserError


class DataError(UserError):
    """A dataset description problem: missing split, empty split, bad yaml or ``.data`` key."""


class LabelError(DataError):
    """A bad line in a YOLO label file, reported as ``file:line: what is wrong``."""

    def __init__(self, message: str, path: Path | str, line: int):
        self.path, self.line, self.reason = Path(path), line, message
        super().__init__(f"{path}:{line}: {message}")


class ImageError(DataError):
    """An image file that PIL cannot open or decode."""

    def __init__(self, message: str, path: Path | str):
        self.path, self.reason = Path(path), message
        super().__init__(f"{path}: {message}")
