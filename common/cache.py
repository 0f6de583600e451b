"""Where this project keeps what it computes once per machine: the demo dataset, latency tables.

``$RES2NET_YOLO_CACHE`` if set, else ``~/.cache/res2net-yolo``. Nothing there is an input a
user wrote; deleting the folder only costs the time to rebuild it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RES2NET_YOLO_CACHE"


def cache_folder(path: Path) -> Path:
    """``path`` (a folder under :func:`cache_root`) created and writable, or one line that
    names the variable that moves the cache: the usual fix for a read-only home or a cache
    path that is a file."""
    from common.errors import FileSystemError
    from common.io import ensure_writable_dir

    try:
        return ensure_writable_dir(path, "cache")
    except FileSystemError as e:
        raise FileSystemError(path, f"{e.cause}; set {CACHE_ENV} to put the cache "
                                    "elsewhere (e.g. RES2NET_YOLO_CACHE=/tmp/cache)") from None


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV)
    return Path(base).expanduser() if base else Path.home() / ".cache" / "res2net-yolo"
