"""Tests the multi-host path of `../w2v_jax/sharding.py` with 2 local processes on the CPU.

Two Python processes (2 CPU devices each, gloo collectives, a coordinator on 127.0.0.1) run
sharded SGNS steps on one 4-device mesh, each feeding its half of every batch, save and restore
a sharded checkpoint; the final tables must equal a one-process run of the same steps. Both
processes are killed after ``TIMEOUT_S`` so the test can never hang CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from w2v_jax import sharding

TIMEOUT_S = 120
NUM_PROCESSES = 2
ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_multihost_worker.py"
_spec = importlib.util.spec_from_file_location("_multihost_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)  # the problem definition shared with the worker processes
# Messages of a jaxlib built without cross-process CPU collectives: a reason to skip, not fail.
_NO_BACKEND = (
    "gloo is not available",
    "collectives are not supported",
    "unimplemented: cross-process",
    "no cpu collectives",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path) -> tuple[list[int], list[str]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    procs, logs = [], []
    for i in range(NUM_PROCESSES):
        log = open(out / f"process{i}.log", "w")  # noqa: SIM115 (closed below)
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    "--coordinator",
                    f"127.0.0.1:{port}",
                    "--num-processes",
                    str(NUM_PROCESSES),
                    "--process-id",
                    str(i),
                    "--out",
                    str(out),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
    deadline = time.monotonic() + TIMEOUT_S
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.1)))
    except subprocess.TimeoutExpired:
        codes = [None] * NUM_PROCESSES
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # SIGKILL: a process stuck in a collective ignores SIGTERM
                p.wait()
        for log in logs:
            log.close()
    texts = [(out / f"process{i}.log").read_text() for i in range(NUM_PROCESSES)]
    return codes, texts


def _one_process_run() -> tuple[dict[str, np.ndarray], list[float]]:
    mesh = sharding.make_mesh(jax.devices()[:1])
    params, loss_sums = worker.run_steps(mesh, "rows", slice(None))
    return sharding.unshard_params(params, worker.V), loss_sums


def test_two_processes_train_like_one(tmp_path):
    codes, texts = _launch(tmp_path)
    report = "\n".join(
        f"--- process {i} (exit {c}) ---\n{t[-3000:]}"
        for i, (c, t) in enumerate(zip(codes, texts, strict=True))
    )
    if any(c != 0 for c in codes):
        if any(msg in t.lower() for t in texts for msg in _NO_BACKEND):
            pytest.skip(f"this jaxlib has no cross-process CPU collectives:\n{report}")
        if None in codes:
            pytest.fail(f"2-process run did not finish in {TIMEOUT_S} s:\n{report}")
        pytest.fail(f"2-process run failed:\n{report}")

    got = np.load(tmp_path / "result.npz")
    want, want_losses = _one_process_run()
    for name, table in want.items():
        assert got[name].shape == table.shape == (worker.V, worker.D)
        np.testing.assert_allclose(got[name], table, rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.allclose(table, worker.initial_params()[name])
    np.testing.assert_allclose(got["loss_sums"], want_losses, rtol=1e-5)
    # the same steps with the tables split by dimensions over the 4 devices of 2 processes
    for name, table in want.items():
        np.testing.assert_allclose(got[f"dims_{name}"], table, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(got["dims_loss_sums"], want_losses, rtol=1e-5)
    # the checkpoint written by 2 processes restores in this one, onto 4 devices
    restored, meta = sharding.restore_sharded(tmp_path / "ckpt", sharding.make_mesh())
    assert meta["extra"] == {"steps": worker.STEPS}
    for name, table in sharding.unshard_params(restored, worker.V).items():
        np.testing.assert_array_equal(table, got[name])


# ----------------------------------------------------------------------------- w2v-jax train


def _topic_corpus(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(400):
        t = rng.integers(3)
        lines.append(" ".join(f"t{t}w{w}" for w in rng.integers(8, size=10)))
    path.write_text("\n".join(lines) + "\n")
    return path


def _train_args(
    corpus: Path, out: Path, *extra: str, epochs: int = 2, batch: str | None = "64"
) -> list[str]:
    return [
        sys.executable, "-m", "w2v_jax.cli", "train", "--corpus", str(corpus), "--out", str(out),
        "--min-count", "1", "--sample", "0", "--dim", "8", "--epochs", str(epochs),
        *(("--batch-size", batch) if batch is not None else ()),
        "--steps-per-call", "2", "--format", "text", "--quiet",
        *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _processes(corpus, out, *extra, epochs=2, ranks=(0, 1), n=2, timeout=15, batch="64"):
    """Starts ``w2v-jax train`` as ranks of an n-process run; returns the Popen objects."""
    port = _free_port()
    return [
        subprocess.Popen(
            _train_args(
                corpus,
                out,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(n),
                "--process-id",
                str(r),
                "--connect-timeout",
                str(timeout),
                *extra,
                epochs=epochs,
                batch=batch,
            ),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )  # fmt: skip
        for r in ranks
    ]


def _finish(procs, limit=TIMEOUT_S):
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
            pytest.fail(f"a process did not finish in {limit} s:\n{stderr[-2000:]}")
        out.append((p.returncode, stdout, stderr))
    return out


def test_two_processes_train_what_one_process_on_two_devices_does(tmp_path):
    # Each process reads its own half of the corpus (one slice per process, the default); one
    # process reading both slices with --corpus-slices 2 trains the same run.
    corpus = _topic_corpus(tmp_path / "c.txt")
    ref = subprocess.run(
        _train_args(corpus, tmp_path / "ref", "--devices", "2", "--corpus-slices", "2"),
        env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr
    results = _finish(_processes(corpus, tmp_path / "mh"))
    if any(rc != 0 for rc, _, _ in results) and any(
        m in err.lower() for _, _, err in results for m in _NO_BACKEND
    ):
        pytest.skip("this jaxlib has no cross-process CPU collectives")
    assert [rc for rc, _, _ in results] == [0, 0], results
    assert "wrote" in results[0][1] and "wrote" not in results[1][1]  # process 0 alone writes
    got = (tmp_path / "mh" / "vectors.txt").read_text()
    assert got == (tmp_path / "ref" / "vectors.txt").read_text()
    saved = json.loads((tmp_path / "mh" / "config.json").read_text())
    assert saved["train"]["corpus_slices"] == 2
    # and the vectors load in gensim
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "mh" / "vectors.txt"))
    assert len(kv.index_to_key) == 24


def test_three_processes_round_the_default_batch_to_their_slices(tmp_path):
    # one corpus slice per process by default: the default batch size (4096 on CPU) must be
    # rounded to a multiple of 3 before any slice is cut, not refused
    corpus = _topic_corpus(tmp_path / "c.txt")
    results = _finish(
        _processes(corpus, tmp_path / "mh", epochs=1, ranks=(0, 1, 2), n=3, batch=None)
    )
    if any(rc != 0 for rc, _, _ in results) and any(
        m in err.lower() for _, _, err in results for m in _NO_BACKEND
    ):
        pytest.skip("this jaxlib has no cross-process CPU collectives")
    assert [rc for rc, _, _ in results] == [0, 0, 0], results
    saved = json.loads((tmp_path / "mh" / "config.json").read_text())
    assert saved["train"]["corpus_slices"] == 3
    assert saved["train"]["batch_size"] == 4098  # the least multiple of 3 from 4096


def test_a_lone_process_and_mismatched_processes_fail_with_one_line(tmp_path):
    corpus = _topic_corpus(tmp_path / "c.txt")
    t0 = time.monotonic()
    [(rc, _, err)] = _finish(_processes(corpus, tmp_path / "alone", ranks=(1,), timeout=3))
    assert rc == 1 and "could not join the multi-host run" in err, err
    assert "Traceback" not in err and "stack trace" not in err
    assert time.monotonic() - t0 < 60
    procs = _processes(corpus, tmp_path / "two", ranks=(0,))
    port = procs[0].args[procs[0].args.index("--coordinator") + 1]
    other = subprocess.Popen(
        _train_args(
            corpus, tmp_path / "two", "--coordinator", port, "--num-processes", "2",
            "--process-id", "1", "--connect-timeout", "15", "--window", "2",
        ),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    results = _finish([procs[0], other])
    assert all(rc != 0 for rc, _, _ in results), results
    assert any("different config" in err for _, _, err in results), results


def test_a_killed_process_stops_the_other_and_resume_finishes(tmp_path):
    corpus = _topic_corpus(tmp_path / "c.txt")
    extra = ("--checkpoint-every", "0.2")
    ref = _finish(_processes(corpus, tmp_path / "ref", *extra, epochs=6))
    assert [rc for rc, _, _ in ref] == [0, 0], ref
    run = tmp_path / "run"
    procs = _processes(corpus, run, *extra, epochs=6, timeout=8)
    deadline = time.monotonic() + TIMEOUT_S
    while not (run / "checkpoint.w2v").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    procs[1].kill()  # SIGKILL, mid-run
    t0 = time.monotonic()
    [(rc, _, err)] = _finish(procs[:1])
    procs[1].communicate()  # reaps it and closes its pipes
    if (run / "vectors.txt").exists():
        pytest.skip("the run finished before the kill")
    assert rc == 1 and "lost another process" in err and "--resume" in err, err
    assert time.monotonic() - t0 < 45  # the heartbeat timeout (8 s) plus shutdown, not a hang
    resumed = _finish(_processes(corpus, run, *extra, "--resume", epochs=6))
    assert [rc for rc, _, _ in resumed] == [0, 0], resumed
    assert (run / "vectors.txt").read_text() == (tmp_path / "ref" / "vectors.txt").read_text()
