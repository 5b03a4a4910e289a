"""Tests `../w2v_jax/cli.py` under faults: each expected failure is one stderr line and a
non-zero status, earlier outputs survive, a busy run folder is refused, a closed pipe is quiet.

Training runs use a 2,000-word corpus, D=8 and one epoch (about two seconds each); everything
else fails before training starts and costs milliseconds.
"""

import contextlib
import errno
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from w2v_jax import cli, fileio
from w2v_jax.vectors import Vectors

TINY = ["--min-count", "1", "--dim", "8", "--epochs", "1", "--batch-size", "64", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(50)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choices(words, k=20)) for _ in range(100)) + "\n")
    return str(path)


def _one_line(err: str) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _run(*args, stdout=subprocess.PIPE):
    """``python -m w2v_jax.cli ARGS`` in a subprocess (what a user's shell sees)."""
    return subprocess.run(
        [sys.executable, "-m", "w2v_jax.cli", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


# -------------------------------------------------------------- bad input, before training
def test_out_that_is_a_file_is_one_line_in_a_real_process(tmp_path, corpus):
    (tmp_path / "taken").write_text("not a folder")
    r = _run("train", "--corpus", corpus, "--out", str(tmp_path / "taken"), *TINY)
    assert r.returncode == cli.EXIT_BAD_INPUT
    assert _one_line(r.stderr) == (
        f"w2v-jax: error: --out {tmp_path / 'taken'} is a file, not a folder; pass a folder "
        "for the run"
    )
    assert (tmp_path / "taken").read_text() == "not a folder"


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--ns-exponent", "nan", "--ns-exponent must be a finite number, got nan"),
        ("--sample", "inf", "--sample must be a finite number, got inf"),
        ("--alpha", "inf", "--alpha must be a finite number, got inf"),
        ("--min-alpha", "nan", "--min-alpha must be a finite number, got nan"),
        ("--checkpoint-every", "-inf", "--checkpoint-every must be a finite number, got -inf"),
        ("--dup-cap", "nan", "--dup-cap must be >= 1"),
        ("--seed", str(2**32), "--seed must be an integer in [0, 4294967295]"),
        ("--seed", str(10**30), "--seed must be an integer in [0, 4294967295]"),
        ("--seed", "-1", "--seed must be an integer in [0, 4294967295]"),
        ("--shuffle-tokens", "-1", "--shuffle-tokens must be >= 0, got -1"),
    ],
)
def test_non_finite_floats_and_big_seeds_are_refused(tmp_path, capsys, flag, value, message):
    rc = cli.main(["train", "--out", str(tmp_path / "run"), *TINY, f"{flag}={value}"])
    assert rc == cli.EXIT_BAD_INPUT
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # refused before the folder is touched


def test_compilation_cache_is_reused_and_changes_no_number(tmp_path, corpus):
    # The second run loads every compiled program from the cache (it writes no new entry) and
    # trains the same bytes as the first.
    cache = tmp_path / "xla"
    env = dict(os.environ, W2V_JAX_XLA_CACHE=str(cache))
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        args = ["train", "--corpus", corpus, "--out", str(out), "--update", "sparse", *TINY]
        r = subprocess.run(
            [sys.executable, "-m", "w2v_jax.cli", *args], env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        outs.append((out / "vectors.bin").read_bytes())
        entries = sorted(p.name for p in cache.rglob("*") if p.is_file())
        if i == 0:
            first = entries
            assert first, "the first run wrote no cache entry"
    assert entries == first
    assert outs[0] == outs[1]


def test_dup_cap_inf_and_the_largest_seed_are_valid():
    from w2v_jax import config

    cfg = config.override(config.Config(), dup_cap=float("inf"), seed=config.MAX_SEED)
    assert cfg.train.dup_cap == float("inf")


def test_a_busy_run_folder_is_refused_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    with fileio.lock_run_folder(run):
        rc = cli.main(["train", "--corpus", "missing.txt", "--out", str(run), *TINY])
    assert rc == cli.EXIT_FAILED
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"w2v-jax: error: {run} is in use by another run (pid={os.getpid()} ")


def test_stale_temps_are_removed_under_the_lock(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".vectors.bin.abcd1234.tmp").write_bytes(b"half")
    # The missing corpus stops the run after the lock, the cleanup and the probe.
    rc = cli.main(["train", "--corpus", str(tmp_path / "missing.txt"), "--out", str(run)])
    assert rc == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"removed 1 temp file(s) an interrupted run left in {run}" in err
    assert sorted(os.listdir(run)) == [".lock"]


# ------------------------------------------------------------------ real full/RO folders
@contextlib.contextmanager
def _tmpfs(path, size="64k"):
    """A tiny tmpfs at ``path`` (needs root and mount rights; the test skips otherwise)."""
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_fails_before_training_and_keeps_old_files(tmp_path, capsys):
    with _tmpfs(tmp_path / "disk") as disk:
        run = disk / "run"
        run.mkdir()
        (run / "vectors.bin").write_bytes(b"old vectors")
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
        rc = cli.main(["train", "--corpus", "missing-corpus", "--out", str(run), *TINY])
        assert rc == cli.EXIT_FAILED
        assert _one_line(capsys.readouterr().err) == (
            f"w2v-jax: error: no space left on device while writing {run / '.write-test.tmp'}"
        )
        assert (run / "vectors.bin").read_bytes() == b"old vectors"


def test_read_only_folder_is_one_line(tmp_path, capsys):
    with _tmpfs(tmp_path / "disk") as disk:
        (disk / "run").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        rc = cli.main(["train", "--out", str(disk / "run"), *TINY])
        assert rc == cli.EXIT_FAILED
        line = _one_line(capsys.readouterr().err)
        assert line == f"w2v-jax: error: {disk / 'run' / '.lock'}: read-only file system"


# ------------------------------------------------------------------ faults while training
def test_full_disk_while_writing_vectors_keeps_the_old_file(tmp_path, corpus, capsys, monkeypatch):
    run = tmp_path / "run"
    assert cli.main(["train", "--corpus", corpus, "--out", str(run), *TINY]) == 0
    old = (run / "vectors.bin").read_bytes()
    assert Vectors.load_word2vec_format(run / "vectors.bin").dim == 8
    capsys.readouterr()
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up exactly when the new vectors are flushed
        if ".vectors.bin." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc = cli.main(["train", "--corpus", corpus, "--out", str(run), *TINY, "--seed", "7"])
    assert rc == cli.EXIT_FAILED
    assert _one_line(capsys.readouterr().err) == (
        f"w2v-jax: error: no space left on device while writing {run / 'vectors.bin'}"
    )
    assert (run / "vectors.bin").read_bytes() == old
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]


def test_nan_guard_is_one_line(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    rc = cli.main(["train", "--corpus", corpus, "--out", str(run), *TINY, "--alpha", "1e30"])
    assert rc == cli.EXIT_FAILED
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("w2v-jax: error: non-finite loss or gradient")
    assert not (run / "vectors.bin").exists()


# -------------------------------------------------------------------- pipes and signals
def test_closed_stdout_is_quiet(tmp_path):
    vec = tmp_path / "v.txt"
    Vectors(("a", "b"), np.eye(2, dtype=np.float32)).save_word2vec_format(vec, binary=False)
    (tmp_path / "p.tsv").write_text("a\tb\t1.0\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has already exited
    try:
        r = _run(
            "eval", "--vectors", str(vec), "--pairs", str(tmp_path / "p.tsv"), stdout=write_end
        )
    finally:
        os.close(write_end)
    assert r.returncode == cli.EXIT_PIPE
    assert r.stderr == ""


@pytest.mark.parametrize("args, status", [([], 0), (["--window", "0"], cli.EXIT_BAD_INPUT)])
def test_the_command_ends_after_its_exit_handlers_with_its_output_flushed(
    tmp_path, corpus, args, status
):
    """``w2v-jax`` leaves without the interpreter's teardown: the status is main's, the exit
    handlers (JAX's among them) still run, and what they print, still in Python's buffer for
    a pipe, reaches the reader after the command's own lines."""
    argv = ["w2v-jax", "train", "--corpus", corpus, "--out", str(tmp_path / "run"), *TINY, *args]
    code = (
        "import atexit, sys\n"
        "from w2v_jax import cli\n"
        "atexit.register(lambda: print('exit handler ran', end=''))\n"
        f"sys.argv = {argv!r}\n"
        "cli.console_main()\n"
        "print('not reached')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == status, r.stderr
    assert r.stdout.endswith("exit handler ran") and "not reached" not in r.stdout
    if status == 0:
        assert f"wrote {tmp_path / 'run' / 'vectors.bin'}" in r.stdout
    else:
        assert _one_line(r.stderr) == "w2v-jax: error: --window must be >= 1, got 0"


def test_jax_is_imported_once_with_the_collector_paused_and_its_objects_frozen():
    """The first import of JAX runs with garbage collection off and leaves its objects frozen
    out of later collections; after it the collector is on again, and a second use (main()
    called again in one process) neither freezes anything more nor turns the collector off."""
    code = (
        "import gc, sys\n"
        "from w2v_jax import cli\n"
        "assert 'jax' not in sys.modules and gc.get_freeze_count() == 0\n"
        "with cli._collection_paused():\n"
        "    assert not gc.isenabled()\n"
        "    import jax\n"
        "frozen = gc.get_freeze_count()\n"
        "assert gc.isenabled() and frozen > 10000, frozen\n"
        "with cli._collection_paused():\n"
        "    assert gc.isenabled()\n"
        "assert gc.isenabled() and gc.get_freeze_count() == frozen\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_guard_maps_interrupts_and_debug_reraises(capsys):
    def interrupted():
        raise KeyboardInterrupt

    def diverged():
        raise FloatingPointError("non-finite loss")

    assert cli._guard(interrupted) == cli.EXIT_INTERRUPTED
    assert _one_line(capsys.readouterr().err) == "w2v-jax: interrupted"
    assert cli._guard(diverged) == cli.EXIT_FAILED
    assert _one_line(capsys.readouterr().err) == "w2v-jax: error: non-finite loss"
    with pytest.raises(FloatingPointError):
        cli._guard(diverged, debug=True)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli._guard(lambda: 1 // 0)


# ------------------------------------------------------------------ resume and zero steps
def test_wrong_or_finished_resume_is_refused_and_writes_nothing(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    args = ["train", "--corpus", corpus, "--out", str(run), *TINY, "--update", "sparse"]
    assert cli.main(args) == 0
    capsys.readouterr()

    def outputs():  # everything but .lock, which each run truncates
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.glob("[!.]*")}

    before = outputs()
    assert {"checkpoint.w2v", "config.json", "metrics.jsonl", "vectors.bin"} <= set(before)
    assert cli.main([*args, "--resume", "--alpha", "0.05"]) == cli.EXIT_BAD_INPUT
    line = _one_line(capsys.readouterr().err)
    assert "(--alpha: checkpoint 0.025, now 0.05)" in line
    assert cli.main([*args, "--resume"]) == cli.EXIT_BAD_INPUT
    assert _one_line(capsys.readouterr().err) == (
        "w2v-jax: error: nothing to train: the checkpoint is already at the end of epoch 1/1"
    )
    assert outputs() == before


def test_a_run_that_trains_nothing_fails(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("\n".join(f"w{i}" for i in range(20)) + "\n")
    run = tmp_path / "run"
    rc = cli.main(["train", "--corpus", str(tmp_path / "c.txt"), "--out", str(run), *TINY])
    assert rc == cli.EXIT_BAD_INPUT
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("w2v-jax: error: nothing to train: the corpus gives no training")
    assert sorted(os.listdir(run)) == [".lock"]
