"""Typed errors for bad user input.

Library code raises these; only ``main.py`` turns them into one line on stderr and exit code 2.
"""


class UserError(Exception):
    """Bad input the user can fix (a file, a value, a flag). The message is one line."""


class CfgError(UserError):
    """A ``.cfg`` problem, reported as ``file:line: what is wrong``."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path, self.line, self.reason = path, line, message
        where = f"{path or '<cfg>'}:{line}" if line is not None else (path or "<cfg>")
        super().__init__(f"{where}: {message}")


class WeightsError(UserError):
    """A ``.weights`` file that does not fit its cfg (truncated, too long, wrong layout)."""
