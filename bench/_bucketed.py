"""A measured prototype of the sharded step's next design (docs/scaling.md, "Beyond a few
devices"): deduplicate each device's ids, send them to their owners in fixed-size buckets
with ``all_to_all``, and send the summed gradients back the same way.

Not part of the library: plain SGD with the duplicate cap, "div" ownership (the contiguous rows
``shard_state`` makes), and ids past a full bucket are dropped and counted, not retried.
``bench/sharding.py --bucketed`` checks it against :func:`w2v_jax.sharding.make_sharded_step`
and times it beside that step.

Device d's view, per table (m ids of its own examples, n devices, capacity c per owner):

    first[id] = min{i : ids_i = id}           one [V] scatter-min: the dedup, no sort
    slot_i    = owner(id_i) * c + (rank of id_i's first occurrence among that owner's ids)
    send[n, c] = the local row of each unique id, at its slot      -> all_to_all -> recv [n, c]
    rows[n, c, D] = table_d[recv]                                   -> all_to_all -> back [n, c, D]
    rows of the examples = back[slot_i]
    g[n*c, D] = segment_sum(grads_i, slot_i), count[n*c] alike      -> all_to_all -> owners
    owner: counts summed per row (the duplicate cap's n_r), rows -= lr * min(1, cap/n_r) * g
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from w2v_jax import optim, sharding
from w2v_jax import step as step_lib


def route(ids_M: jax.Array, rows_local: int, n: int, c: int):
    """Buckets of one device's ids by owner.

    Args:
      ids_M: [M] int32 global rows, -1 for entries that read and update nothing.
      rows_local: rows per device (the shard's height); row r lives on device r // rows_local.
      n, c: devices and bucket capacity.

    Returns:
      ``(send_NxC, slot_M, dropped)``: the local row each bucket slot asks its owner for (-1:
      empty), each entry's slot in the flattened [n * c] buckets (n * c: none), and how many
      unique ids did not fit their bucket.
    """
    m = ids_M.shape[0]
    none = n * rows_local
    i_M = jnp.arange(m, dtype=jnp.int32)
    key_M = jnp.where(ids_M < 0, none, ids_M)
    first_V = jnp.full((none,), m, jnp.int32).at[key_M].min(i_M, mode="drop")
    rep_M = first_V.at[key_M].get(mode="fill", fill_value=m)  # first entry with this id
    is_first = rep_M == i_M
    owner_M = key_M // rows_local  # n for "none"
    mine_MxN = (owner_M[:, None] == jnp.arange(n)[None, :]) & is_first[:, None]
    rank_MxN = jnp.cumsum(mine_MxN.astype(jnp.int32), axis=0)
    rank_M = jnp.take_along_axis(rank_MxN, jnp.minimum(owner_M, n - 1)[:, None], axis=1)[:, 0] - 1
    fits = is_first & (owner_M < n) & (rank_M < c)
    first_slot_M = jnp.where(fits, owner_M * c + rank_M, n * c)
    slot_M = jnp.concatenate([first_slot_M, jnp.array([n * c], jnp.int32)])[rep_M]
    local_M = (key_M - owner_M * rows_local).astype(jnp.int32)
    send = jnp.full((n * c,), -1, jnp.int32).at[first_slot_M].set(local_M, mode="drop")
    dropped = jnp.sum(jnp.maximum(rank_MxN[-1] - c, 0))
    return send.reshape(n, c), slot_M, dropped


def make_bucketed_step(mesh, objective, inputs, tx, *, dup_cap=64.0, slack=1.25, axis="v"):
    """``(state, consts, batch, key) -> (state, metrics)`` like ``make_sharded_step`` (plain SGD
    only); ``metrics["dropped"]`` counts the ids that did not fit a bucket of capacity
    ``ceil(slack * M / n)``."""
    if not isinstance(tx, optim.ScheduledSGD):
        raise ValueError("the bucketed prototype implements plain SGD only")
    out_name = objective.table
    keys = inputs.batch_keys
    n = mesh.shape[axis]

    def local_step(params, scratch, batch, targets, progress):
        dim = params["center_vecs"].shape[1]
        w_B = batch["mask"].astype(jnp.float32)
        in_ids = inputs.ids(batch)
        b, cc = in_ids.shape
        t = targets.ids.shape[1]
        in_ok = inputs.valid(batch) & (w_B[:, None] > 0)
        out_ok = targets.mask & (w_B[:, None] * targets.mask.astype(w_B.dtype) > 0)
        sides = {}
        dropped = jnp.zeros((), jnp.int32)
        for name, ids, ok in (("center_vecs", in_ids, in_ok), (out_name, targets.ids, out_ok)):
            table = params[name]
            flat = jnp.where(ok, ids, -1).reshape(-1).astype(jnp.int32)
            c = max(1, math.ceil(slack * flat.shape[0] / n))
            send, slot, lost = route(flat, table.shape[0], n, c)
            recv = jax.lax.all_to_all(send, axis, 0, 0, tiled=True)
            rows = table.at[recv].get(mode="fill", fill_value=0)
            back = jax.lax.all_to_all(rows, axis, 0, 0, tiled=True).reshape(n * c, dim)
            sides[name] = (recv, slot, c, back.at[slot].get(mode="fill", fill_value=0), ok)
            dropped = dropped + lost
        in_rows = sides["center_vecs"][3].reshape(b, cc, dim)
        out_rows = sides[out_name][3].reshape(b, t, dim)
        loss_B, in_grads, out_grads = step_lib.example_grads(
            objective, inputs, in_rows, out_rows, targets, batch
        )
        lr = optim.learning_rate(tx, progress)
        new = dict(params)
        for name, grads in (("center_vecs", in_grads), (out_name, out_grads)):
            recv, slot, c, _, ok = sides[name]
            g = jax.ops.segment_sum(grads.reshape(-1, dim), slot, num_segments=n * c)
            count = jax.ops.segment_sum(ok.reshape(-1).astype(jnp.float32), slot, n * c)
            payload = jnp.concatenate([g, count[:, None]], axis=1).reshape(n, c, dim + 1)
            got = jax.lax.all_to_all(payload, axis, 0, 0, tiled=True).reshape(n * c, dim + 1)
            table = params[name]
            rows = jnp.where(recv.reshape(-1) >= 0, recv.reshape(-1), table.shape[0])
            # the duplicate cap's count n_r: summed over every device's entries of row r
            counts_V = scratch.at[rows].add(got[:, dim], mode="drop")
            n_r = counts_V.at[rows].get(mode="fill", fill_value=0)
            scratch = counts_V.at[rows].set(jnp.minimum(n_r, 0.0), mode="drop")
            scale = jnp.minimum(1.0, dup_cap / jnp.maximum(n_r, 1.0))
            new[name] = table.at[rows].add(-lr * got[:, :dim] * scale[:, None], mode="drop")
        stats = jax.lax.psum(jnp.stack([jnp.sum(loss_B), dropped.astype(jnp.float32)]), axis)
        return new, scratch, stats

    def step(state, consts, batch, key):
        key = jax.random.fold_in(key, state.step)
        fields = {k: batch[k] for k in keys}
        targets = objective.targets(consts, inputs.predicted(fields), key)
        specs = sharding.state_specs(state, axis)
        params, scratch, stats = jax.shard_map(
            local_step,
            mesh=mesh,
            in_specs=(specs.params, specs.scratch, P(axis), P(axis), P()),
            out_specs=(specs.params, specs.scratch, P()),
        )(state.params, state.scratch, fields, targets, batch["progress"])
        new = state.replace(params=params, scratch=scratch, step=state.step + 1)
        return new, {"loss_sum": stats[0], "dropped": stats[1]}

    return step
