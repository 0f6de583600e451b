"""One run per output folder: an advisory lock on ``--out`` for the length of a command.

Two ``main.py train --out X`` (or pipeline, sparse, finetune, prune) started together would
write the same files at the same time. Each command that writes a folder holds an exclusive
``flock`` on ``X/.lock`` while it runs: a second command refuses in one line naming the first's
pid (written into the lock file), or with ``wait=True`` waits for it. The kernel drops the lock
when its process ends, however it ends (kill -9 too), so a dead run never blocks the folder:
its lock file stays (with its pid), the lock does not. A run that ends normally removes the
file while still holding it; a waiter that then wins the lock of the removed file sees the
name gone and locks the file now there instead, so two runs never hold one folder.

The lock is re-entrant within one process (``pipeline`` runs its stages in-process, and a
library caller may run several commands in one folder): ``flock`` locks belong to an open
file, so a second ``open`` in the same process would conflict with the first.

Under ``torchrun`` only rank 0 locks (it alone writes). Without ``flock`` (Windows) nothing
is locked. While a process holds a folder's lock, :func:`holds` says so, and the stale
temporary files of a dead writer there can be removed at once (``common.io``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from common.errors import FileSystemError, UserError, os_error_cause

try:
    import fcntl
except ImportError:  # no flock (Windows): folders are not locked
    fcntl = None

LOCK_NAME = ".lock"
_held: dict[Path, list] = {}  # folder -> [fd, depth, created] of the locks this process holds


class FolderBusy(UserError):
    """Another process holds the lock of a folder this command would write."""


def _key(folder: Path) -> Path:
    return Path(os.path.realpath(folder))


def holds(folder: str | Path) -> bool:
    """True when this process holds ``folder``'s lock."""
    return _key(Path(folder)) in _held


def holder_pid(folder: str | Path) -> int | None:
    """The pid written in ``folder``'s lock file (the last process that held it), if any."""
    with contextlib.suppress(OSError, ValueError):
        return int((Path(folder) / LOCK_NAME).read_text(encoding="ascii").split()[0])
    return None


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def acquire(folder: str | Path, wait: bool = False, what: str = "--out",
            on_wait: Callable[[str], object] | None = None) -> bool:
    """Take ``folder``'s lock (creating the folder), or one more hold on it when this process
    has it already; True when a :func:`release` is owed (False: nothing is locked here).
    Busy: raise :class:`FolderBusy`, or with ``wait`` call ``on_wait(message)`` once and
    block until the holder is gone."""
    folder = Path(folder)
    if fcntl is None or not _is_rank0():
        return False
    key = _key(folder)
    if key in _held:
        _held[key][1] += 1
        return True
    from common.io import ensure_writable_dir  # common.io asks this module about locks

    created = not folder.is_dir()
    ensure_writable_dir(folder, what)  # its one-line refusals: a file, read-only, full
    while True:
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise FileSystemError(folder, f"cannot lock {what} folder: {os_error_cause(e)}") from e
        try:
            _lock(fd, folder, wait, what, on_wait)
            if _is_current(fd, folder):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed that file as we waited: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = [fd, 1, created]
    return True


def _is_current(fd: int, folder: Path) -> bool:
    """True when ``fd`` is still the file named ``folder/.lock`` (not one removed meanwhile)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(folder / LOCK_NAME))
    except OSError:
        return False


def _lock(fd: int, folder: Path, wait: bool, what: str,
          on_wait: Callable[[str], object] | None) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    pid = holder_pid(folder)
    by = f"pid {pid}" if pid is not None else "another process"
    if not wait:
        raise FolderBusy(f"{what} {folder} is in use by another run ({by}); wait for it to "
                         "finish (or pass --wait), or choose another folder")
    if on_wait is not None:
        on_wait(f"waiting for {by} to finish with {folder}")
    fcntl.flock(fd, fcntl.LOCK_EX)


def release(folder: str | Path) -> None:
    """Give back one :func:`acquire` of ``folder``. The last one removes the lock file, and
    the folder if ``acquire`` created it and it is empty."""
    key = _key(Path(folder))
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        with contextlib.suppress(OSError):  # still locked: a waiter re-checks the name
            os.unlink(key / LOCK_NAME)
        os.close(entry[0])  # closing the file drops the flock
        if entry[2]:  # a refused command leaves no empty folder it made
            with contextlib.suppress(OSError):
                key.rmdir()


@contextlib.contextmanager
def locked(folder: str | Path, wait: bool = False, what: str = "--out",
           on_wait: Callable[[str], object] | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block (see :func:`acquire`)."""
    folder = Path(folder)
    taken = acquire(folder, wait, what, on_wait)
    try:
        yield folder
    finally:
        if taken:
            release(folder)
