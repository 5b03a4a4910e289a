"""Tests `../w2v_jax/fileio.py`: the run-folder lock, umask-respecting atomic writes, stale
temp files, the writability probe and one-line OS errors."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from w2v_jax import fileio

# A second process that takes the lock, says so on stdout, then waits to be killed. fileio
# imports only the standard library, so this starts in a fraction of a second.
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from w2v_jax.fileio import lock_run_folder
    with lock_run_folder(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path):
    """A subprocess holding the lock on ``tmp_path / "run"``; killed at teardown if still alive."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


# ------------------------------------------------------------------------------- lock
def test_second_lock_fails_naming_the_holder(tmp_path, holder):
    with pytest.raises(fileio.RunFolderLocked, match=rf"in use by another run \(pid={holder.pid} "):
        with fileio.lock_run_folder(tmp_path / "run"):
            pass


def test_kill_9_frees_the_lock(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup code runs: the kernel drops the flock
    holder.wait()
    with fileio.lock_run_folder(tmp_path / "run") as lock_path:
        assert f"pid={os.getpid()} " in lock_path.read_text()
    assert lock_path.read_text() == ""  # released: names nobody


def test_lock_is_exclusive_within_a_process_and_released_on_exit(tmp_path):
    with fileio.lock_run_folder(tmp_path / "a" / "b"):  # creates the folder
        with pytest.raises(fileio.RunFolderLocked, match=f"pid={os.getpid()}"):
            with fileio.lock_run_folder(tmp_path / "a" / "b"):
                pass
    with fileio.lock_run_folder(tmp_path / "a" / "b"):
        pass


def test_lock_on_a_file_is_not_a_directory_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        with fileio.lock_run_folder(tmp_path / "f"):
            pass
    assert fileio.describe_os_error(info.value) == f"{tmp_path / 'f'}: exists and is not a folder"


# ------------------------------------------------------------------------------ umask
@pytest.fixture
def umask():
    """Sets a umask for one test and restores the old one."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_write_follows_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert fileio.current_umask() == mask
    path = fileio.atomic_write(tmp_path / "x.bin", lambda f: f.write(b"data"))
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert path.read_bytes() == b"data"


def test_atomic_write_keeps_an_existing_files_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    path.chmod(0o640)
    fileio.atomic_write(path, lambda f: f.write(b"new"))
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_bytes() == b"new"


# ----------------------------------------------------------------------- failed writes
def test_failed_write_names_the_final_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "vectors.bin"
    path.write_bytes(b"good")

    def full_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(fileio.WriteError) as info:
        fileio.atomic_write(path, full_disk)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"no space left on device while writing {path}"
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["vectors.bin"]  # the temp file is gone


# ------------------------------------------------------------------------ stale temps
def test_remove_stale_temps_only_removes_atomic_write_leftovers(tmp_path):
    stale = [".vectors.bin.abcd1234.tmp", ".checkpoint.w2v.zz_9abcd.tmp"]
    kept = ["vectors.bin", "notes.tmp", ".lock", "vectors.bin.tmp", ".x.short.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.abcd1234.tmp").mkdir()  # not a file: left alone
    removed = fileio.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(kept + [".dir.abcd1234.tmp"])


def test_a_real_atomic_write_temp_name_matches_the_pattern(tmp_path, monkeypatch):
    seen = []

    def spy(f):
        seen.append(os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}")))
        f.write(b"x")

    fileio.atomic_write(tmp_path / "config.json", spy)
    assert fileio._TEMP_RE.match(seen[0]), seen


# ----------------------------------------------------------------------- probe, errors
def test_check_writable_leaves_nothing_behind(tmp_path):
    fileio.check_writable(tmp_path)
    assert os.listdir(tmp_path) == []


def test_check_writable_reports_a_full_disk(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    with pytest.raises(fileio.WriteError, match="no space left on device while writing"):
        fileio.check_writable(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "err, text",
    [
        (PermissionError(errno.EACCES, "Permission denied", "runs/x"), "runs/x: permission denied"),
        (
            OSError(errno.EROFS, "Read-only file system", "r/.lock"),
            "r/.lock: read-only file system",
        ),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
        (
            fileio.WriteError(errno.EDQUOT, "Disk quota exceeded", "r/v.bin"),
            "disk quota exceeded while writing r/v.bin",
        ),
    ],
)
def test_describe_os_error(err, text):
    assert fileio.describe_os_error(err) == text
