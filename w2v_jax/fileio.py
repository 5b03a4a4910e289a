"""Files that survive faults: atomic writes, one writer per run folder, errors in words.

* :func:`atomic_write`: a reader sees the old file or the new one, never a torn one; the new file
  gets the mode a plain ``open()`` would give it (the umask is honoured).
* :func:`lock_run_folder`: an advisory ``flock`` on ``FOLDER/.lock``, so two runs cannot write
  the same folder. The kernel drops the lock when its holder dies, even by ``kill -9``, so a
  crash never leaves a folder locked.
* :func:`remove_stale_temps`: deletes the temp files a killed :func:`atomic_write` left behind.
* :func:`check_writable`: writes, fsyncs and removes a probe file, so a full disk or a read-only
  folder fails the run before training instead of after.
* :func:`describe_os_error`: one line that names the path and the problem.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
PROBE_NAME = ".write-test.tmp"
# mkstemp(prefix=".NAME.", suffix=".tmp") adds 8 characters from [a-z0-9_].
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# Bytes the probe writes: enough that a full disk fails the write or the fsync (a one-byte
# file can still fit in a block the filesystem has reserved).
_PROBE_BYTES = 1 << 16


class WriteError(OSError):
    """An ``OSError`` while writing ``filename``, the final name (not the temp file beside it)."""

    def __str__(self) -> str:
        return f"{_reason(self)} while writing {self.filename}"


class RunFolderLocked(RuntimeError):
    """Another live process holds the run folder's lock."""


# ------------------------------------------------------------------------------- errors
def _reason(e: OSError) -> str:
    """``strerror`` in lower case ("no space left on device"), else the exception's text."""
    text = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
    return text[:1].lower() + text[1:]


def describe_os_error(e: OSError) -> str:
    """One line naming the path and the problem, e.g. ``runs/x/.lock: read-only file system``.

    :class:`WriteError` reads ``no space left on device while writing runs/x/vectors.bin``.
    """
    if isinstance(e, WriteError):
        return str(e)
    if e.errno is None:
        return str(e)
    if e.filename is None:
        return _reason(e)
    return f"{os.fsdecode(e.filename)}: {_reason(e)}"


# ------------------------------------------------------------------------------- umask
def current_umask() -> int:
    """The process umask, read without changing it where the kernel allows.

    ``os.umask`` can only be read by setting it, and for that moment a file another thread
    creates would get the wrong mode; ``/proc/self/status`` (Linux >= 4.7) has no such window.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: an existing file keeps its own, a new one gets
    ``0o666 & ~umask``."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


# ------------------------------------------------------------------------ atomic write
def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls ``write(f)`` on a temp file beside ``path``, fsyncs it, renames it over ``path``.

    The folder is created if needed and fsynced after the rename, so the new name survives a
    crash. The file gets the mode a plain ``open()`` would give it (mkstemp makes it 0600). On
    any error the temp file is removed and ``path`` is left as it was; an ``OSError`` comes back
    as :class:`WriteError` naming ``path``, so "no space left on device" says which output it hit.
    A temp file left by a kill (``.NAME.XXXXXXXX.tmp``) is removed by :func:`remove_stale_temps`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _as_write_error(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _final_mode(path))
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _as_write_error(e, path) from e
        raise
    try:
        _fsync_folder(path.parent)
    except OSError as e:
        raise _as_write_error(e, path) from e
    return path


def _as_write_error(e: OSError, path: Path) -> OSError:
    if isinstance(e, WriteError) or e.errno is None:
        return e
    return WriteError(e.errno, e.strerror or os.strerror(e.errno), os.fspath(path))


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------------------- run folder
def ensure_folder(path: str | os.PathLike) -> Path:
    """Creates ``path`` (and its parents); ``NotADirectoryError`` if it is an existing file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", os.fspath(path))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _holder(lock_path: Path) -> str:
    """What the lock's holder wrote about itself, or a hint if it has not written yet."""
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has just started"


@contextlib.contextmanager
def lock_run_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Holds an exclusive advisory lock on ``folder/.lock`` for the ``with`` block.

    ``flock`` is tied to the open file, so the kernel releases it when the holder exits or is
    killed: a crashed run never leaves the folder locked, and no stale-pid guessing is needed.
    The holder writes ``pid=... host=... started=...`` into the file for the error message.
    The file itself stays: deleting it would let a third run lock a new file while a second
    still waits on the old one.

    Args:
      folder: the run folder; created if missing.

    Yields:
      The lock file's path.

    Raises:
      RunFolderLocked: another live process holds the lock (its pid, host and start time are
        in the message).
      OSError: the folder cannot be created or the lock file cannot be opened.
    """
    folder = ensure_folder(folder)
    lock_path = folder / LOCK_NAME
    # Close-on-exec: a child process (a compiler, a shell) must not keep the lock alive.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderLocked(
                f"{folder} is in use by another run ({_holder(lock_path)}); wait for it to "
                "finish or use another --out"
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # Some network filesystems cannot lock at all: run unprotected rather than not at all.
            logger.warning("%s: cannot lock (%s); not protected from a second run", folder, e)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        holder = f"pid={os.getpid()} host={socket.gethostname()} started={started}\n"
        # Only for the message a second run prints; the lock holds without it. A full disk is
        # reported by check_writable, naming the problem, not here.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
        try:
            yield lock_path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a free lock names nobody
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Deletes ``.NAME.XXXXXXXX.tmp`` files that a killed :func:`atomic_write` left in ``folder``.

    Call it only while holding :func:`lock_run_folder`: then no live writer owns them.

    Returns:
      The paths removed.
    """
    removed = []
    for entry in os.scandir(folder):
        if _TEMP_RE.match(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def check_writable(folder: str | os.PathLike) -> None:
    """Writes, fsyncs and removes ``folder/.write-test.tmp``, so that a full disk, a quota or a
    read-only mount fails now, before hours of training, with a :class:`WriteError`."""
    probe = Path(folder) / PROBE_NAME
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * _PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _as_write_error(e, probe) from e
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
