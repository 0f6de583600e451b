"""Paths as text a person can read, whatever bytes their names hold.

A file name from a Windows archive or an old Linux disk may not be UTF-8 (``caf\\xe9.png``,
Latin-1). Python decodes it with ``surrogateescape`` so the file can still be opened, but the
resulting ``str`` cannot be encoded as UTF-8: printing it (to a terminal whose errors are
strict), writing it into a UTF-8 text file or a JSON report raises ``UnicodeEncodeError``.
Every message, report and JSON field that names a path goes through :func:`shown`, which
writes each undecodable byte as ``\\xNN`` (what ``repr`` of the bytes would show), so the name
stays recognisable and the output valid UTF-8; the file itself is still read and written
under its real name.
"""

from __future__ import annotations

import os


def shown(path: str | os.PathLike) -> str:
    """``path`` as printable UTF-8 text: undecodable bytes of its name as ``\\xNN``."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """Any text (a message that quotes paths) with their undecodable bytes as ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text
