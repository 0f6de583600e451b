"""Where this project keeps what it computes once per machine: the demo dataset, latency tables.

``$RES2NET_YOLO_CACHE`` if set, else ``~/.cache/res2net-yolo``. Nothing there is an input a
user wrote; deleting the folder only costs the time to rebuild it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RES2NET_YOLO_CACHE"


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV)
    return Path(base).expanduser() if base else Path.home() / ".cache" / "res2net-yolo"
