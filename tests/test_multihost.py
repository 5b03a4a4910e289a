"""Tests the multi-host path of `../w2v_jax/sharding.py` with 2 local processes on the CPU.

Two Python processes (2 CPU devices each, gloo collectives, a coordinator on 127.0.0.1) run
sharded SGNS steps on one 4-device mesh, each feeding its half of every batch, save and restore
a sharded checkpoint; the final tables must equal a one-process run of the same steps. Both
processes are killed after ``TIMEOUT_S`` so the test can never hang CI.
"""

from __future__ import annotations

import importlib.util
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
    _, consts = worker.objective_and_consts()
    step, state = worker.make_step(mesh)
    key = jax.random.key(worker.BASE_KEY_SEED)
    loss_sums = []
    for s in range(worker.STEPS):
        batch = sharding.shard_batch(worker.global_batch(s), mesh) | {"progress": np.float32(0)}
        state, metrics = step(state, consts, batch, key)
        loss_sums.append(float(metrics["loss_sum"]))
    return sharding.unshard_params(state.params, worker.V), loss_sums


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
    # the checkpoint written by 2 processes restores in this one, onto 4 devices
    restored, meta = sharding.restore_sharded(tmp_path / "ckpt", sharding.make_mesh())
    assert meta["extra"] == {"steps": worker.STEPS}
    for name, table in sharding.unshard_params(restored, worker.V).items():
        np.testing.assert_array_equal(table, got[name])
