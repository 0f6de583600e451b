"""File I/O every command shares: atomic writes, writable output folders, UTF-8 text.

Atomic writes: a reader never sees a half-written file, a crash never corrupts one. Each
write goes to a temporary file beside its target, ``.<name>.<8 chars>.tmp``, created with mode
0666 so the umask decides the final permissions (as for any file a program creates), and is
renamed over the target once complete. Files that belong together go through
:func:`write_together`.

Stale temporary files: a process killed during a write (kill -9, power loss) leaves its
temporary file behind. The next write of the same target removes those of that target alone,
and only the ones provably not in use: every writer holds an exclusive ``flock`` on its
temporary file until it is renamed, and the kernel drops that lock when the writer dies, so a
temporary file whose lock can be taken has no writer. Two processes writing the same target
at once therefore never remove each other's file; files younger than ``STALE_AFTER_S`` are left
alone too, which covers the instant between a writer's creating its file and locking it (and
file systems where ``flock`` is not shared between machines, for writers that still write),
unless this process holds the folder's lock (``common.lock``): then no other run writes there,
and an unlocked temporary file of any age is a dead writer's.

File-system failures raise :class:`common.errors.FileSystemError` naming the target and the
cause (``No space left on device``), also when the OSError comes wrapped in another error
(``torch.save`` reports a full disk as ``RuntimeError: ... unexpected pos``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from common import lock as folder_lock
from common.errors import FileSystemError, TextFileError, os_error_cause

try:
    import fcntl
except ImportError:  # no flock (Windows): stale temporary files are never removed
    fcntl = None

STALE_AFTER_S = 60.0  # a temporary file untouched this long, with no lock, is abandoned
_TOKEN = r"[a-z0-9_]{8}"  # ours and tempfile.mkstemp's (older versions of this module)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the abandoned temporary files of ``path`` (see the module docstring)."""
    path = Path(path)
    if fcntl is None or not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TOKEN}\.tmp")
    removed = []
    min_age = 0.0 if folder_lock.holds(path.parent) else STALE_AFTER_S
    for candidate in path.parent.iterdir():
        if not pattern.fullmatch(candidate.name):
            continue
        with contextlib.suppress(OSError):
            if time.time() - candidate.stat().st_mtime < min_age:
                continue
            fd = os.open(candidate, os.O_RDONLY)
            try:
                if _try_lock(fd):
                    candidate.unlink()
                    removed.append(candidate)
            finally:
                os.close(fd)
    return removed


def _open_fd(fd: int, mode: str) -> IO:
    """The file object a write goes through (tests wrap it to fill the disk)."""
    return os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")


class _TempFile:
    """A new temporary file beside ``path``, locked while open; ``commit`` renames it over
    ``path``, ``discard`` removes it (unless committed)."""

    def __init__(self, path: Path, mode: str = "wb"):
        self.path, self.committed = path, False
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        while True:
            self.tmp = _temp_name(path)
            try:
                fd = os.open(self.tmp, flags, 0o666)  # the umask applies, as for any new file
                break
            except FileExistsError:
                continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self.file = _open_fd(fd, mode)
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def commit(self) -> None:
        if fcntl is None:  # Windows cannot rename an open file; there is no lock to keep
            self.file.close()
        os.replace(self.tmp, self.path)  # still locked: no cleaner can take it meanwhile
        self.committed = True

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        self.close()
        if not self.committed:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


@contextlib.contextmanager
def _reported_as(path: Path) -> Iterator[None]:
    """Turn an OSError (or an error wrapping one) into a FileSystemError naming ``path``."""
    try:
        yield
    except FileSystemError:
        raise
    except Exception as e:  # an interrupt stays an interrupt
        cause = os_error_cause(e)
        if cause is None:
            raise
        raise FileSystemError(path, f"cannot write: {cause}") from e


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    with _reported_as(path):
        temp = _TempFile(path, mode)
        try:
            yield temp.file
            temp.sync()
            temp.commit()
        finally:
            temp.discard()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


Writer = Callable[[IO], object]


def write_together(files: Sequence[tuple[str | Path, Writer]]) -> None:
    """Write files that belong together so that the last one marks a complete set.

    Each ``(path, write)`` pair gets a temporary file that ``write(binary_file)`` fills;
    only when every one is complete and synced are they renamed into place, the last path
    (the *commit* file) removed first and renamed last. So a failed write (full disk) leaves
    every old file as it was, and a crash during the renames leaves the commit file absent,
    never beside files of another set: where the commit file exists, the set is whole.
    """
    temps: list[_TempFile] = []
    try:
        for path, write in files:
            with _reported_as(Path(path)):
                temps.append(_TempFile(Path(path)))
                write(temps[-1].file)
                temps[-1].sync()
        commit = temps[-1]
        with _reported_as(commit.path):
            commit.path.unlink(missing_ok=True)
            for temp in temps:
                if temp is commit:
                    _sync_dir(commit.path.parent)  # the others' renames land first
                temp.commit()
    finally:
        for temp in temps:
            temp.discard()


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_writable_dir(path: str | Path, what: str = "--out", create: bool = True) -> Path:
    """Prove that files can be written in folder ``path`` (created when ``create``), or raise.

    Called by every command that writes, before its work starts: a read-only folder, a path
    under a regular file or a disk with no room left fails here with one line, not after an
    hour of training. The probe writes one byte into the folder, or into its nearest existing
    parent when the folder does not exist yet (nothing is left behind when ``create`` is
    False), and syncs it, so a full disk shows too.
    """
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    try:
        if not existing.is_dir():
            where = "" if existing == path else f" ({existing} is a file)"
            raise FileSystemError(path, f"{what} is not a folder{where}")
        probe = _TempFile(existing / "write-probe")
        try:
            probe.file.write(b"\0")
            probe.sync()
        finally:
            probe.discard()
        if create:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileSystemError(path, f"cannot write to {what} folder: {os_error_cause(e)}") from e
    return path


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a leading byte-order mark (Notepad's) is dropped.

    Raises :class:`TextFileError` naming the file, and for text that is not UTF-8 the line
    and byte where decoding failed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextFileError(f"{path}: cannot read {what}: {os_error_cause(e)}") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TextFileError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
            f"a {what} must be UTF-8 text") from None
