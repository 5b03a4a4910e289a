"""One process of the multi-process test in `test_multihost.py` (not collected by pytest).

    python tests/_multihost_worker.py --coordinator 127.0.0.1:PORT --num-processes 2 \
        --process-id I --out DIR

Each process drives ``LOCAL_DEVICES`` CPU devices; together they form one mesh. Every process
builds the same initial tables and the same global batches (seeded numpy), feeds only its own
rows of each batch (``host_slice``), runs ``STEPS`` sharded SGNS steps, saves a sharded checkpoint,
restores it, and process 0 writes the restored tables and the losses to ``DIR/result.npz``; then
the same steps with the tables split by dimensions (``dims_`` entries of the same file).
:func:`initial_params` and :func:`global_batch` are imported by the test for its one-process run.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

V, D, B, K = 37, 8, 16, 3  # 37 rows: padded to 40 on 4 devices
LOCAL_DEVICES = 2
STEPS = 4
LR = 0.05


def initial_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "center_vecs": rng.normal(0, 0.3, (V, D)).astype(np.float32),
        "outside_vecs": rng.normal(0, 0.3, (V, D)).astype(np.float32),
    }


def global_batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    mask = np.ones(B, np.float32)
    mask[-1] = 0.0
    return {
        "center": rng.integers(0, V, B).astype(np.int32),
        "context": rng.integers(0, V, B).astype(np.int32),
        "mask": mask,
    }


def objective_and_consts():
    """SGNS with K negatives over a fixed Zipf-like count vector; consts stay host numpy, which
    every process passes identically (replicated)."""
    from w2v_jax import objectives

    objective = objectives.sgns(K)
    return objective, objective.make_consts(np.arange(V, 0, -1, dtype=np.int64) ** 2)


BASE_KEY_SEED = 5


def make_step(mesh, layout_name: str = "rows"):
    """The jitted sharded step (plain SGD at LR, no duplicate cap) and the initial state."""
    import jax
    import jax.numpy as jnp

    from w2v_jax import inputs, optim, sharding
    from w2v_jax import step as step_lib

    objective, _ = objective_and_consts()
    tx = optim.make_optimizer("sgd", LR, LR)
    layout = sharding.layout_named(layout_name)
    step = sharding.make_sharded_step(
        mesh, objective, inputs.skip_gram(), tx, dup_cap=float("inf"), layout=layout
    )
    params = {k: jnp.asarray(v) for k, v in initial_params().items()}
    state = sharding.shard_state(step_lib.init_state(params, tx), mesh, layout=layout)
    return jax.jit(step, donate_argnums=0), state


def run_steps(mesh, layout_name: str, rows) -> tuple[dict, list[float]]:
    """STEPS steps on this process's ``rows`` of every global batch: (params, loss sums)."""
    import jax

    from w2v_jax import sharding

    _, consts = objective_and_consts()
    step, state = make_step(mesh, layout_name)
    key = jax.random.key(BASE_KEY_SEED)
    loss_sums = []
    for s in range(STEPS):
        local = {k: v[rows] for k, v in global_batch(s).items()}
        batch = sharding.shard_batch(local, mesh) | {"progress": np.float32(0.0)}
        state, metrics = step(state, consts, batch, key)
        loss_sums.append(float(metrics["loss_sum"]))  # replicated scalar: every process has it
    return state.params, loss_sums


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--num-processes", type=int, required=True)
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
    import jax

    from w2v_jax import sharding

    sharding.init_distributed(
        args.coordinator, args.num_processes, args.process_id, initialization_timeout=60
    )
    assert jax.process_count() == args.num_processes, jax.process_count()
    assert len(jax.devices()) == LOCAL_DEVICES * args.num_processes, jax.devices()

    mesh = sharding.make_mesh()
    rows = sharding.host_slice(B)
    params, loss_sums = run_steps(mesh, "rows", rows)
    dims_params, dims_losses = run_steps(mesh, "dims", rows)
    dims = {f"dims_{k}": v for k, v in sharding.unshard_params(dims_params, V, D).items()}

    ckpt = os.path.join(args.out, "ckpt")
    sharding.save_sharded(ckpt, params, V, extra={"steps": STEPS})
    restored, meta = sharding.restore_sharded(ckpt, mesh)
    assert meta["extra"] == {"steps": STEPS}
    final = sharding.unshard_params(restored, V)
    live = sharding.unshard_params(params, V)
    for name in final:
        np.testing.assert_array_equal(final[name], live[name])
    if jax.process_index() == 0:
        np.savez(
            os.path.join(args.out, "result.npz"),
            loss_sums=np.array(loss_sums),
            dims_loss_sums=np.array(dims_losses),
            **final,
            **dims,
        )
    jax.distributed.shutdown()
    print(f"process {args.process_id}: ok", flush=True)


if __name__ == "__main__":
    sys.exit(main())
