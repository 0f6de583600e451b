"""Typed errors for bad user input.

Library code raises these; only ``main.py`` turns them into one line on stderr and exit code 2.
"""

from common.errors import UserError

__all__ = ["CfgError", "UserError", "WeightsError"]


class CfgError(UserError):
    """A ``.cfg`` problem, reported as ``file:line: what is wrong``."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path, self.line, self.reason = path, line, message
        where = f"{path or '<cfg>'}:{line}" if line is not None else (path or "<cfg>")
        super().__init__(f"{where}: {message}")


class WeightsError(UserError):
    """A ``.weights`` file that does not fit its cfg (truncated, too long, wrong layout)."""
