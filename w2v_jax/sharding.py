r"""Sharded training: tables split over a device mesh, one ``shard_map`` step, two layouts.

A :class:`Layout` says which axis of every table the mesh splits. ``DIMS`` (the trainer's
default) gives each device every row at ``Dp / n`` of the columns; its step is
:func:`w2v_jax.step.make_step` itself on the device's columns, summing only the [B, T] partial
scores over the mesh (:func:`_make_dims_step`). ``ROWS``, which the rest of this docstring
describes, gives each device ``Vp / n`` rows and moves the batch's rows between devices.

Every table (``center_vecs``, ``outside_vecs`` or ``node_vecs``), the optimizer state shaped
like it and the duplicate counter are padded to ``Vp`` rows, a multiple of the device count
``n``, and split along the vocabulary axis: device ``d`` owns rows ``[d * Vs, (d + 1) * Vs)``
with ``Vs = Vp / n`` (``NamedSharding(mesh, P("v", None))``). The batch is split along its first
axis over the same mesh axis, ``B / n`` examples per device. One step as seen from device ``d``,
where ``M`` is the number of ids its examples read from both tables (e.g. ``B/n * (2 + K)`` for
skip-gram SGNS)::

    ids_d [M] ── all_gather ──> ids [n, M]       (same on every device; int32, small)
    rows = where(d owns ids, table_d[ids - d*Vs], 0)   [n, M, D]  (each row is non-zero on
                                                          exactly one device)
    rows ── psum_scatter ──> rows_d [M, D]        (device d gets the rows its examples asked for)
    loss, row grads <- step.example_grads(rows_d)  (local: the single-device model)
    payload_d = [mask-weighted row grads | loss sum | examples]  [M + 2, D]
    payload_d ── all_gather ──> payload [n, M + 2, D]
    step.apply_updates on the rows d owns         (optimizer, its state, duplicate cap)
    sum of squared input-side grads ── psum ──> grad_norm   (a scalar, last)

No device ever holds a full table or a dense ``[V, D]`` gradient: per device the tables take
``Vp / n * D`` floats plus ``O(B_global * (2 + K) * D)`` floats of per-step row buffers. The step
compiles to four collectives in a chain (all-gather, reduce-scatter, all-gather, a scalar
all-reduce); ``tests/test_sharding.py`` reads them in the compiled HLO, and ``docs/scaling.md``
has the costs and what to do past a few devices.

The model is the objective's and the input side's, exactly as in :mod:`w2v_jax.step`: any row
objective (SGNS, NCE, HS, a user's own) shards without new code, and the update is
:func:`w2v_jax.step.apply_updates`, so a sharded step gives the same tables and optimizer state
as the single-device step up to float summation order (``tests/test_sharding.py``). The targets
(the objective's constants are replicated on every device) are drawn over the global batch
before the ``shard_map``, so both layouts see the same negatives.

Multi-host: :func:`init_distributed` wraps ``jax.distributed.initialize``; each process feeds
its own rows of the global batch (:func:`shard_batch` uses
``jax.make_array_from_process_local_data``); :func:`save_sharded` / :func:`restore_sharded` write
and read one ``.npy`` file per shard, restorable onto a mesh of any size.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from w2v_jax import optim
from w2v_jax import step as step_lib
from w2v_jax.fileio import atomic_write
from w2v_jax.inputs import InputSide
from w2v_jax.objectives import Objective

AXIS = "v"  # the one mesh axis: vocabulary rows of the tables and examples of the batch
CKPT_FORMAT = "w2v_jax.sharded/1"

Params = dict[str, jax.Array]


# ----------------------------------------------------------------------------- mesh and layout


def make_mesh(devices=None, axis_name: str = AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (axis_name,))


def padded_rows(rows: int, n: int) -> int:
    """``rows`` rounded up to a multiple of ``n`` (the row count of a table sharded ``n`` ways)."""
    return -(-rows // n) * n


def table_rows(name: str, vocab_size: int) -> int:
    """True (unpadded) row count of a table: ``V - 1`` for ``node_vecs``, else ``V``."""
    return vocab_size - 1 if name == "node_vecs" else vocab_size


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which axis of every table (and of its row-shaped optimizer state) the mesh splits.

    Attributes:
      name: the ``--shard-by`` value, ``"rows"`` or ``"dims"``.
      axis: 0, the vocabulary rows (each device owns ``Vp / n`` rows and the step moves rows
        between devices), or 1, the D columns (each device holds every row at ``Dp / n``
        columns, sees the whole batch, and the step moves only the [B, T] scores).
      splits: what it splits, in words (the trainer's first line).
    """

    name: str
    axis: int
    splits: str

    def check_mesh(self, n: int, dim: int) -> None:
        """A one-line ``ValueError`` where ``n`` devices cannot split tables of ``dim`` columns
        this way (by dimensions: fewer columns than devices)."""
        if self.axis == 1 and n > dim:
            raise ValueError(
                f"--shard-by {self.name} needs at least one column per device: --dim {dim} < "
                f"{n} devices (use --shard-by rows)"
            )

    def table_spec(self, axis_name: str = AXIS) -> P:
        """``P(axis, None)`` for rows, ``P(None, axis)`` for dims."""
        return P(axis_name, None) if self.axis == 0 else P(None, axis_name)

    def scratch_spec(self, axis_name: str = AXIS) -> P:
        """The [V] duplicate counter: split like the rows, or whole on every device (dims: every
        device counts the ids of the whole batch)."""
        return P(axis_name) if self.axis == 0 else P()


ROWS = Layout("rows", 0, "vocabulary rows")
DIMS = Layout("dims", 1, "dimensions")
LAYOUTS = {layout.name: layout for layout in (ROWS, DIMS)}


def layout_named(name: str | Layout) -> Layout:
    """The :class:`Layout` a ``--shard-by`` value names (a Layout passes through)."""
    if isinstance(name, Layout):
        return name
    if name not in LAYOUTS:
        raise ValueError(f"--shard-by must be one of {sorted(LAYOUTS)}, got {name!r}")
    return LAYOUTS[name]


def table_sharding(mesh: Mesh, axis_name: str = AXIS, layout: Layout = ROWS) -> NamedSharding:
    """A table's sharding: ``layout``'s axis split over the mesh axis, the other whole."""
    return NamedSharding(mesh, layout.table_spec(axis_name))


def batch_sharding(mesh: Mesh, axis_name: str = AXIS) -> NamedSharding:
    """Leading (example) axis split over the mesh axis."""
    return NamedSharding(mesh, P(axis_name))


def _from_host(x: Any, sharding: NamedSharding) -> jax.Array:
    """Host ``x`` as a global array with ``sharding``: each device takes its part of it."""
    a = np.asarray(x)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _padded_shape(shape: tuple[int, ...], spec: P, n: int, axis_name: str = AXIS):
    """``shape`` with each axis ``spec`` splits over ``axis_name`` padded to a multiple of n."""
    spec = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
    return tuple(
        padded_rows(d, n) if a == axis_name else d for d, a in zip(shape, spec, strict=True)
    )


def _padded_array(
    total: tuple[int, ...],
    real: tuple[int, ...],
    dtype: Any,
    read: Callable[[tuple[slice, ...]], Any],
    sharding: NamedSharding,
) -> jax.Array:
    """A global array of shape ``total`` whose entries inside ``real`` are ``read(index)`` and
    whose padding (past ``real`` along any axis) is zero. ``read`` gets a tuple of slices inside
    ``real``. Each shard is made alone (the callback of ``jax.make_array_from_callback``), so no
    process holds the whole array."""

    def block(index) -> np.ndarray:
        bounds = [sl.indices(t)[:2] for sl, t in zip(index, total, strict=True)]
        inside = tuple(slice(lo, min(hi, r)) for (lo, hi), r in zip(bounds, real, strict=True))
        if all(sl.stop == hi for sl, (_, hi) in zip(inside, bounds, strict=True)):  # no padding
            return np.asarray(read(inside), dtype)
        out = np.zeros([hi - lo for lo, hi in bounds], dtype)
        if all(sl.stop > sl.start for sl in inside):
            out[tuple(slice(0, sl.stop - sl.start) for sl in inside)] = read(inside)
        return out

    return jax.make_array_from_callback(tuple(total), sharding, block)


def _split(host: Any, mesh: Mesh, spec: P, axis_name: str = AXIS) -> jax.Array:
    """Host array -> global array with ``spec``, zero-padded where ``spec`` splits an axis."""
    host = host if isinstance(host, np.ndarray) else np.asarray(host)  # memory maps stay maps
    total = _padded_shape(host.shape, spec, mesh.shape[axis_name], axis_name)
    sharding = NamedSharding(mesh, spec)
    return _padded_array(total, host.shape, host.dtype, lambda ix: host[ix], sharding)


def shard_params(
    params: Mapping[str, Any], mesh: Mesh, *, axis_name: str = AXIS, layout: Layout = ROWS
) -> Params:
    """Host (or single-device) tables -> global arrays split by ``layout``, zero-padded to a
    multiple of the mesh size along the split axis.

    Padding rows are never addressed by an id (ids are ``< V``) and padding columns get zero
    gradients (every score ignores them), so both stay zero. In a multi-process run every process
    passes the same host tables and keeps only its own part (``jax.make_array_from_callback``);
    :func:`init_state` makes a fresh run's shards in place.
    """
    spec = layout.table_spec(axis_name)
    return {name: _split(table, mesh, spec, axis_name) for name, table in params.items()}


def unshard_params(
    params: Mapping[str, jax.Array], vocab_size: int, dim: int | None = None
) -> dict[str, np.ndarray]:
    """Sharded tables -> host numpy with the padding removed (on every process): rows past the
    table's own, and columns past ``dim`` (the padding of tables split by dimensions).

    In a multi-process run this all-gathers every table to every host (host memory, not device
    memory); use it for export and tests, :func:`save_sharded` for checkpoints.
    """
    from jax.experimental import multihost_utils

    out = {}
    for name, table in params.items():
        if table.is_fully_addressable:
            host = np.asarray(jax.device_get(table))
        else:
            host = np.asarray(multihost_utils.process_allgather(table, tiled=True))
        out[name] = host[: table_rows(name, vocab_size), :dim]
    return out


def host_slice(n: int, process_index: int | None = None, process_count: int | None = None):
    """This process's contiguous share ``slice(lo, hi)`` of ``n`` items (corpus split by host).

    Shares differ by at most one item; use it on sentence or chunk indices so that each host
    reads only its part of the corpus.
    """
    i = jax.process_index() if process_index is None else process_index
    p = jax.process_count() if process_count is None else process_count
    return slice(i * n // p, (i + 1) * n // p)


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, *, axis_name: str = AXIS) -> dict:
    """Process-local batch rows -> global arrays split along the example axis.

    Each process passes its own ``B / process_count`` rows (the whole batch when there is one
    process); the global batch is the processes' rows in process order. Leaves without a
    leading example axis (e.g. a scalar ``progress``) are dropped: the step does not read them.
    """
    sharding = batch_sharding(mesh, axis_name)
    out = {}
    for name, value in batch.items():
        a = np.asarray(value)
        if a.ndim == 0:
            continue
        out[name] = jax.make_array_from_process_local_data(sharding, a)
    return out


# ----------------------------------------------------------------------------- the step


def _owned_rows(rows_local: int, ids: jax.Array, axis_name: str):
    """Local row of each global id in this device's shard, and whether this device owns it."""
    local = ids - jax.lax.axis_index(axis_name) * rows_local
    return local, (local >= 0) & (local < rows_local)


def _lookup(table_d: jax.Array, ids: jax.Array, axis_name: str) -> jax.Array:
    """``table[ids]`` for the ids this device owns, zero rows for the others: [*ids.shape, D]."""
    local, owned = _owned_rows(table_d.shape[0], ids, axis_name)
    rows = jnp.take(table_d, jnp.clip(local, 0, table_d.shape[0] - 1), axis=0)
    return jnp.where(owned[..., None], rows, 0)


def _map_opt_state(
    state: step_lib.TrainState, split: Callable[[str, Any], Any], other: Callable[[Any], Any]
) -> dict:
    """``state.opt_state`` with ``split(table name, leaf)`` on each leaf shaped like its table
    (Adagrad's accumulator, Adam's moments: split by rows like it) and ``other(leaf)`` on the
    rest (scalars, replicated)."""
    return {
        name: jax.tree.map(
            lambda x, t=state.params[name], name=name: (
                split(name, x) if np.shape(x) == np.shape(t) else other(x)
            ),
            sub,
        )
        for name, sub in state.opt_state.items()
    }


def state_specs(
    state: step_lib.TrainState, axis_name: str = AXIS, layout: Layout = ROWS
) -> step_lib.TrainState:
    """The ``PartitionSpec`` of every leaf of a :class:`~w2v_jax.step.TrainState`: tables and
    their table-shaped optimizer state split by ``layout``, the duplicate counter split like the
    rows (rows) or whole (dims), scalars replicated."""
    table = layout.table_spec(axis_name)
    return step_lib.TrainState(
        params={name: table for name in state.params},
        opt_state=_map_opt_state(state, lambda _, x: table, lambda x: P()),
        step=P(),
        scratch=layout.scratch_spec(axis_name),
    )


def init_state(
    objective: Objective,
    vocab_size: int,
    dim: int,
    key: jax.Array,
    tx: Any,
    mesh: Mesh,
    *,
    axis_name: str = AXIS,
    layout: Layout = ROWS,
) -> step_lib.TrainState:
    """A fresh run's state built shard by shard: each device (each host, in a multi-host run)
    makes only its own part, so no device or host ever holds a whole table.

    The tables equal ``shard_state(step.init_state(step.init_params(...), tx), mesh, layout=)``
    bit for bit (:func:`w2v_jax.step.uniform_rows`); optimizer state is ``tx.init`` of the
    sharded tables (its padding is never read). Split by dimensions, each device draws only its
    own columns of every row (the uniform draw is indexed by flat position).
    """
    n = mesh.shape[axis_name]
    rows = {"center_vecs": vocab_size, objective.table: objective.table_rows(vocab_size)}
    lim = 0.5 / dim
    spec = layout.table_spec(axis_name)

    def table(name: str) -> jax.Array:
        real = rows[name]

        def read(ix: tuple[slice, slice]) -> np.ndarray:
            r, c = ix
            if name != "center_vecs":  # the objective's table starts at zero
                return np.zeros((r.stop - r.start, c.stop - c.start), np.float32)
            cols = (c.start, c.stop)
            return np.asarray(
                step_lib.uniform_rows(key, real, dim, -lim, lim, r.start, r.stop, cols)
            )

        total = _padded_shape((real, dim), spec, n, axis_name)
        return _padded_array(total, (real, dim), np.float32, read, NamedSharding(mesh, spec))

    def place(x: Any, spec: P) -> jax.Array:
        """``x`` with sharding ``spec``: kept if it has it, else put there from the host (the
        scalars ``tx.init`` makes; leaves shaped like a table come out split like it)."""
        target = NamedSharding(mesh, spec)
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(target, x.ndim):
            return x
        return _from_host(x, target)

    params = {name: table(name) for name in rows}
    scratch = np.zeros(_padded_shape((vocab_size,), layout.scratch_spec(axis_name), n), np.float32)
    state = step_lib.TrainState(
        params=params,
        opt_state={name: tx.init(t) for name, t in params.items()},
        step=np.zeros((), np.int32),
        scratch=scratch,  # one float per row
    )
    return jax.tree.map(place, state, state_specs(state, axis_name, layout))


def shard_state(
    state: step_lib.TrainState, mesh: Mesh, *, axis_name: str = AXIS, layout: Layout = ROWS
):
    """A one-device (or host) state -> the same state split by ``layout`` over ``mesh``.

    Every table and every optimizer-state leaf shaped like its table is zero-padded to a multiple
    of the mesh size along the split axis and split (padding is never addressed, see
    :func:`shard_params`); the [V] duplicate counter is split like the rows or whole (dims);
    scalars are replicated. Every process passes the same state.
    """

    def put(x: Any, spec: P) -> jax.Array:
        return _split(x, mesh, spec, axis_name)

    return jax.tree.map(put, jax.device_get(state), state_specs(state, axis_name, layout))


def needs_sync(mesh: Mesh) -> bool:
    """Whether callers should wait for each multi-device call to finish on this mesh.

    XLA:CPU gives a process one launch thread per device; with many multi-device steps queued,
    one thread can block on a device's in-flight limit while the others wait in a collective for
    it, and the process aborts after 40 s (seen under gdb with 4 simulated devices on 2 cores).
    GPU and TPU meshes never need it.
    """
    return mesh.devices.size > 1 and all(d.platform == "cpu" for d in mesh.devices.flat)


def make_sharded_step(
    mesh: Mesh,
    objective: Objective,
    inputs: InputSide,
    tx: Any,
    *,
    dup_cap: float = 64.0,
    combine_duplicates: bool | None = None,
    axis_name: str = AXIS,
    layout: Layout = ROWS,
) -> Callable:
    """The training step on sharded tables, with :func:`w2v_jax.step.make_step`'s
    signature: ``(state, consts, batch, key) -> (state, metrics)``, un-jitted (wrap it with
    :func:`w2v_jax.step.make_steps`, as every step).

    ``layout=ROWS`` (this docstring, and the module's) splits the tables by vocabulary rows;
    ``layout=DIMS`` splits their columns (:func:`_make_dims_step`).

    The model is the single-device one (:func:`w2v_jax.step.example_grads` on the same
    objective and input side) and so is the update (:func:`w2v_jax.step.apply_updates`: the
    optimizer, its state and the duplicate cap), applied by each device to the rows it owns;
    only the gathers and the scatter become collectives.

    Args:
      mesh: a mesh with the axis ``axis_name`` (:func:`make_mesh`); its size ``n`` must divide
        the batch size B.
      objective: any row objective (:mod:`w2v_jax.objectives`; the dense softmax has no rows to
        shard and is refused).
      inputs: skip-gram or CBOW (:mod:`w2v_jax.inputs`).
      tx: the optimizer; any element-wise rule (its row-shaped state leaves are split like the
        tables by :func:`shard_state`).
      dup_cap: as :func:`w2v_jax.step.make_step`; each owner counts its rows over the global
        batch, so the cap means the same on n devices as on one.
      combine_duplicates: as :func:`w2v_jax.step.make_step` (plain SGD sums the rows of repeated
        ids before one scatter); ``None``: on when the mesh's devices are GPUs.

    The returned function takes the state from :func:`shard_state`, the objective's constants
    (replicated), a batch dict of [B, ...] arrays split along B (:func:`shard_batch`) with the
    input side's ``batch_keys`` and ``progress`` [] (replicated), and the base key (folded with
    the step count inside, as on one device). The targets (negatives included) are drawn over
    the global batch before the ``shard_map``, so both layouts see identical pairs.
    """
    if objective.dense:
        raise ValueError(
            f"make_sharded_step: the {objective.name!r} objective is dense (a [V, D] gradient); "
            "only row objectives shard by vocabulary"
        )
    combine = (
        mesh.devices.flat[0].platform == "gpu" if combine_duplicates is None else combine_duplicates
    )
    if layout.axis == 1:
        return _make_dims_step(
            mesh, objective, inputs, tx, dup_cap=dup_cap, combine=combine, axis_name=axis_name
        )
    out_name = objective.table
    keys = inputs.batch_keys
    n = mesh.shape[axis_name]

    def local_step(params, opt_state, scratch, batch, targets, progress):
        center_d, out_d = params["center_vecs"], params[out_name]
        dim = center_d.shape[1]
        w_B = batch["mask"].astype(center_d.dtype)
        in_ids_BxC = inputs.ids(batch)
        b, c = in_ids_BxC.shape
        t = targets.ids.shape[1]
        m_in = b * c
        # Entries that update nothing (padding slots, masked examples, Huffman padding) travel
        # as id -1, which no device owns: they neither read a row nor count as duplicates.
        in_ok = inputs.valid(batch) & (w_B[:, None] > 0)
        out_ok = targets.mask & (w_B[:, None] * targets.mask.astype(w_B.dtype) > 0)
        ids = jnp.concatenate(
            [
                jnp.where(in_ok, in_ids_BxC, -1).reshape(-1),
                jnp.where(out_ok, targets.ids, -1).reshape(-1),
            ]
        ).astype(jnp.int32)

        # 1. all-gather the ids of both tables: [n, m_in + m_out], the same on every device.
        ids_all = jax.lax.all_gather(ids, axis_name, axis=0)
        in_all, out_all = ids_all[:, :m_in], ids_all[:, m_in:]
        # 2. each device reads the rows it owns (zeros elsewhere); the reduce-scatter sums the
        #    n contributions (at most one is non-zero) and hands row block d to device d.
        rows = jnp.concatenate(
            [_lookup(center_d, in_all, axis_name), _lookup(out_d, out_all, axis_name)], axis=1
        )
        rows = jax.lax.psum_scatter(rows, axis_name, scatter_dimension=0)
        in_rows, out_rows = rows[:m_in].reshape(b, c, dim), rows[m_in:].reshape(b, t, dim)

        # 3. the model: the same per-example loss and mask-weighted rows as on one device.
        loss_B, in_grads, out_grads = step_lib.example_grads(
            objective, inputs, in_rows, out_rows, targets, batch
        )
        # 4. all-gather every device's gradient rows, with its loss and example sums riding along
        #    as two more rows (no separate all-reduce), then each device updates the rows it owns
        #    with the single-device update rule.
        payload = jnp.concatenate(
            [
                in_grads.reshape(-1, dim),
                out_grads.reshape(-1, dim),
                # two more rows: [loss sum, 0, ...] and [examples, 0, ...]
                jnp.zeros((2, dim), center_d.dtype)
                .at[:, 0]
                .set(jnp.stack([jnp.sum(loss_B), jnp.sum(w_B)]).astype(center_d.dtype)),
            ]
        )
        # [n, m_in + m_out + 2, D], typed invariant: every device holds the same copy
        payload_all = jax.lax.all_gather(payload, axis_name, axis=0, to="invarying")
        updates = {}
        for name, table, ids_g, lo, hi in (
            (out_name, out_d, out_all, m_in, -2),
            ("center_vecs", center_d, in_all, 0, m_in),
        ):
            local, owned = _owned_rows(table.shape[0], ids_g, axis_name)
            owned = owned.reshape(-1)
            # rows another device owns are dropped by the scatter; zeroing them too keeps them
            # out of this device's share of the gradient norm
            grads = jnp.where(owned[:, None], payload_all[:, lo:hi].reshape(-1, dim), 0)
            updates[name] = (jnp.where(owned, local.reshape(-1), table.shape[0]), grads, owned)
        params, opt_state, scratch, sq = step_lib.apply_updates(
            tx,
            params,
            opt_state,
            scratch,
            updates,
            {},
            progress=progress,
            dup_cap=dup_cap,
            combine=combine,
        )
        loss_sum, examples = jnp.sum(payload_all[:, -2, 0]), jnp.sum(payload_all[:, -1, 0])
        # The one all-reduce, a scalar, comes last: it depends on the scatter, so no two
        # collectives of a step can run at the same time (see needs_sync).
        return params, opt_state, scratch, loss_sum, examples, jax.lax.psum(sq, axis_name)

    def step(state: step_lib.TrainState, consts: Any, batch: dict, key: jax.Array):
        _check_step_inputs(state, batch, inputs, n, ROWS)
        key = jax.random.fold_in(key, state.step)
        progress = batch["progress"]
        fields = {k: batch[k] for k in keys}
        # The targets of the global batch, drawn as on one device (threefry is partitionable,
        # so XLA splits the draws over the mesh without changing them).
        targets = objective.targets(consts, inputs.predicted(fields), key)
        specs = state_specs(state, axis_name)
        sharded = jax.shard_map(
            local_step,
            mesh=mesh,
            in_specs=(
                specs.params,
                specs.opt_state,
                specs.scratch,
                P(axis_name),
                P(axis_name),
                P(),
            ),
            out_specs=(specs.params, specs.opt_state, specs.scratch, P(), P(), P()),
        )
        params, opt_state, scratch, loss_sum, examples, sq = sharded(
            state.params, state.opt_state, state.scratch, fields, targets, progress
        )
        metrics = {
            "loss_sum": loss_sum.astype(jnp.float32),
            "examples": examples.astype(jnp.float32),
            "lr": jnp.asarray(optim.learning_rate(tx, progress), jnp.float32),
            "grad_norm": jnp.sqrt(sq),
        }
        new = state.replace(
            params=params, opt_state=opt_state, scratch=scratch, step=state.step + 1
        )
        return new, metrics

    return step


def _check_step_inputs(state, batch: dict, inputs: InputSide, n: int, layout: Layout) -> None:
    """One-line errors for a batch or a state the sharded step cannot take."""
    keys = inputs.batch_keys
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"sharded step ({inputs.name}): batch lacks {missing}; needs {keys}")
    bsz = np.shape(batch["mask"])[0]
    if bsz % n:
        raise ValueError(f"sharded step: batch size {bsz} must be a multiple of {n} devices")
    what = ("rows", "columns")[layout.axis]
    for name, table in state.params.items():
        if table.shape[layout.axis] % n:
            raise ValueError(
                f"sharded step: {name} has {table.shape[layout.axis]} {what}, not a multiple of "
                f"{n} devices; shard the state with shard_state(..., layout={layout.name.upper()})"
            )


def _gather_batch(batch: dict, axis_name: str) -> dict:
    """Every device's [B/n, ...] batch fields -> the whole [B, ...] batch on every device, in one
    all-gather: the fields (32-bit ids and masks) travel as the int32 columns of one array. One
    collective, not one per field: collectives that could run at once can deadlock XLA:CPU's
    simulated devices (see :func:`needs_sync`), so the step stays one chain."""
    names = sorted(batch)
    flat = []
    for k in names:
        v = batch[k]
        if v.dtype.itemsize != 4:
            raise ValueError(
                f"sharded step: batch field {k!r} is {v.dtype}; ids and masks are 32-bit"
            )
        bits = v if v.dtype == jnp.int32 else jax.lax.bitcast_convert_type(v, jnp.int32)
        flat.append(bits.reshape(bits.shape[0], -1))
    widths = [f.shape[1] for f in flat]
    packed = jax.lax.all_gather(
        jnp.concatenate(flat, axis=1), axis_name, axis=0, tiled=True, to="invarying"
    )
    out, at = {}, 0
    for k, w in zip(names, widths, strict=True):
        v = batch[k]
        part = packed[:, at : at + w].reshape(packed.shape[0], *v.shape[1:])
        out[k] = part if v.dtype == jnp.int32 else jax.lax.bitcast_convert_type(part, v.dtype)
        at += w
    return out


def _make_dims_step(mesh, objective, inputs, tx, *, dup_cap, combine, axis_name) -> Callable:
    r"""The training step on tables split by dimensions: device d holds columns
    ``[d * Ds, (d + 1) * Ds)`` of every row of every table (``Ds = Dp / n``). As seen from d::

        batch_d [B/n] ── all_gather ──> batch [B]        (ids and masks, packed as one int32
                                                          array; every device the same)
        step.make_step(..., dims_axis): the single-device step on d's columns, where
          s_part = h_d . u_d  [B, T] ── psum ──> s       (the true scores; floats, small)
          g = dJ/ds from the objective (objectives.split_dims)
          dh_d = sum_t g_t u_t,d ; du_t,d = g_t h_d ; scatter into d's columns
        sum of squared input-side grads ── psum ──> grad_norm

    Per step a device moves ``B * (ids per example)`` ints and ``B * T`` floats, against
    ``~2 B R D`` floats for the row layout (``docs/scaling.md``); it gathers and scatters every
    row the batch names, at ``Ds`` columns. Every device draws the same negatives (same batch,
    same key), counts the same duplicates (its [V] counter is whole) and computes the same loss.
    The numbers are the single-device step's up to the order of the sum over D in each score.
    """
    one = step_lib.make_step(
        objective, inputs, tx, dup_cap=dup_cap, combine_duplicates=combine, dims_axis=axis_name
    )
    keys = inputs.batch_keys
    n = mesh.shape[axis_name]

    def local_step(state, consts, batch, progress, key):
        whole = _gather_batch(batch, axis_name)
        return one(state, consts, whole | {"progress": progress}, key)

    def step(state: step_lib.TrainState, consts: Any, batch: dict, key: jax.Array):
        _check_step_inputs(state, batch, inputs, n, DIMS)
        specs = state_specs(state, axis_name, DIMS)
        sharded = jax.shard_map(
            local_step,
            mesh=mesh,
            in_specs=(specs, P(), P(axis_name), P(), P()),
            out_specs=(specs, P()),
        )
        fields = {k: batch[k] for k in keys}
        return sharded(state, consts, fields, batch["progress"], key)

    return step


# ----------------------------------------------------------------------------- multi-host


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids=None,
    cpu_collectives: str = "gloo",
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> None:
    """``jax.distributed.initialize`` for N processes; call it before any other JAX call.

    Args:
      coordinator: ``"host:port"`` of process 0, reachable from every process. Use an IP
        (``127.0.0.1`` for local runs): a name that resolves to IPv6 first can stall the
        connection. ``None`` (with the other two ``None``) lets JAX detect the cluster
        (SLURM, Open MPI, Cloud TPU).
      num_processes, process_id: N and this process's rank in [0, N).
      local_device_ids: devices this process drives (default: all it sees), e.g. ``[rank %
        gpus_per_host]`` for one process per GPU.
      cpu_collectives: cross-process collectives of CPU devices, ``"gloo"`` (in jaxlib) or
        ``"mpi"``. GPUs use NCCL and TPUs their interconnect whatever this says.
      initialization_timeout: seconds to wait for all processes to connect.
      heartbeat_timeout: seconds after which a silent process counts as lost, and the others
        stop instead of waiting for it in a collective forever.
    """
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def save_sharded(
    path: str | os.PathLike,
    params: Mapping[str, jax.Array],
    vocab_size: int,
    *,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes sharded tables as one ``.npy`` per shard plus ``meta.json``; every process calls it.

    Each process writes the shards it holds (one replica each), padding rows dropped, into
    ``path + ".partial"``; process 0 then writes ``meta.json`` and renames the folder to
    ``path`` (replacing an older checkpoint), so a reader sees a whole checkpoint or none.
    ``path`` must be on a filesystem that every process sees. ``extra`` (JSON-able: step,
    data position, config) is stored in ``meta.json``.
    """
    path = Path(path)
    for name, table in params.items():
        if _split_axis(table) == 1:
            raise ValueError(
                f"save_sharded writes row shards; {name} is split by dimensions: write it with "
                "the trainer's checkpoint (streamed_state and save_checkpoint)"
            )
    partial = path.with_name(path.name + ".partial")
    if jax.process_index() == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier("w2v_jax.save_sharded.mkdir")
    for name, table in params.items():
        rows = table_rows(name, vocab_size)
        for shard in table.addressable_shards:
            if shard.replica_id != 0:
                continue
            start, stop, _ = shard.index[0].indices(table.shape[0])
            stop = min(stop, rows)
            if stop <= start:
                continue
            data = np.asarray(shard.data)[: stop - start]
            # fsynced (atomic_write) before process 0's rename publishes the folder
            shard_path = partial / f"{name}.{start:012d}-{stop:012d}.npy"
            atomic_write(shard_path, lambda f, data=data: np.save(f, data))
    _barrier("w2v_jax.save_sharded.write")
    if jax.process_index() == 0:
        tables = {}
        for name, table in params.items():
            # the exact pattern: a glob on "{name}.*" would also take "{name}.acc.*" files
            shard = re.compile(rf"{re.escape(name)}\.\d{{12}}-\d{{12}}\.npy")
            files = sorted(p.name for p in partial.iterdir() if shard.fullmatch(p.name))
            tables[name] = {
                "shape": [table_rows(name, vocab_size), int(table.shape[1])],
                "dtype": str(table.dtype),
                "files": files,
            }
        meta = {
            "format": CKPT_FORMAT,
            "vocab_size": int(vocab_size),
            "tables": tables,
            "extra": dict(extra or {}),
        }
        with open(partial / "meta.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        old = path.with_name(path.name + ".old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        partial.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    _barrier("w2v_jax.save_sharded.commit")
    return path


def restore_sharded(
    path: str | os.PathLike, mesh: Mesh, *, axis_name: str = AXIS, layout: Layout = ROWS
) -> tuple[Params, dict[str, Any]]:
    """Reads a :func:`save_sharded` checkpoint onto ``mesh`` (of any size, either layout).

    Each process reads only the parts its devices hold (memory-mapped), padding with zeros
    to the new mesh's multiple. Returns ``(params, meta)``; ``meta["extra"]`` is what was saved.
    """
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"restore_sharded: no complete checkpoint at {path} (no meta.json)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != CKPT_FORMAT:
        raise ValueError(
            f"restore_sharded: {path} has format {meta.get('format')!r}, expected {CKPT_FORMAT!r}"
        )
    n = mesh.shape[axis_name]
    spec = layout.table_spec(axis_name)
    params = {}
    for name, info in meta["tables"].items():
        rows, dim = info["shape"]
        dtype = np.dtype(info["dtype"])
        pieces = []
        for fname in info["files"]:
            lo, hi = (int(x) for x in fname[len(name) + 1 : -len(".npy")].split("-"))
            pieces.append((lo, hi, path / fname))

        def read(ix, pieces=pieces, dtype=dtype):
            r, c = ix
            block = np.zeros((r.stop - r.start, c.stop - c.start), dtype)
            for lo, hi, file in pieces:
                a, b = max(lo, r.start), min(hi, r.stop)
                if a < b:
                    piece = np.load(file, mmap_mode="r")[a - lo : b - lo, c]
                    block[a - r.start : b - r.start] = piece
            return block

        total = _padded_shape((rows, dim), spec, n, axis_name)
        params[name] = _padded_array(total, (rows, dim), dtype, read, NamedSharding(mesh, spec))
    return params, meta


# ----------------------------------------------------------------------------- trainer glue


def unshard_state(state: step_lib.TrainState) -> step_lib.TrainState:
    """A sharded state -> the whole state as host numpy, padding included (:func:`unpad_state`
    cuts it). Every process gets the whole state (multi-host: gathered over hosts)."""
    from jax.experimental import multihost_utils

    def host(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(host, state)


# Rows per gathered block of a streamed table: about this many bytes on every device at once.
STREAM_BLOCK_BYTES = 1 << 24


@functools.lru_cache(maxsize=32)
def _block_getter(mesh: Mesh, rows: int) -> Callable:
    """A jitted ``(table, k, a) -> rows a .. a + rows of device k's shard``, whole on every device.

    Inside a ``shard_map`` the owner's piece is all-reduced with zeros from the others, so only
    the block moves (a dynamic slice of the global array would make XLA gather the whole table
    first). The sum runs on the bits (as integers) where the dtype allows, so -0.0 stays -0.0.
    One compilation per mesh and block size: ``k`` and ``a`` are traced.
    """

    def body(local, k, a):
        piece = jax.lax.dynamic_slice_in_dim(local, a, rows, axis=0)
        as_int = {2: jnp.int16, 4: jnp.int32}.get(piece.dtype.itemsize)
        bits = piece if as_int is None else jax.lax.bitcast_convert_type(piece, as_int)
        mine = jax.lax.axis_index(AXIS) == k
        total = jax.lax.psum(jnp.where(mine, bits, jnp.zeros_like(bits)), AXIS)
        return total if as_int is None else jax.lax.bitcast_convert_type(total, piece.dtype)

    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(AXIS), P(), P()), out_specs=P()))


def _row_blocks(x: jax.Array, rows: int, block_bytes: int):
    """The first ``rows`` rows of a row-sharded ``x`` as host blocks, one gather at a time
    (blocks never straddle two devices' shards)."""
    n = x.sharding.mesh.devices.size
    local = x.shape[0] // n
    row_bytes = x.dtype.itemsize * int(np.prod(x.shape[1:]))
    per = max(1, min(local, block_bytes // max(1, row_bytes)))
    get = _block_getter(x.sharding.mesh, per)
    for k in range(n):
        for lo in range(k * local, min(rows, (k + 1) * local), per):
            a = min(lo - k * local, local - per)  # the shard's last block overlaps
            block = np.asarray(get(x, np.int32(k), np.int32(a)).addressable_data(0))
            skip = lo - k * local - a
            yield block[skip : skip + min(per - skip, rows - lo, (k + 1) * local - lo)]


@functools.lru_cache(maxsize=32)
def _rows_getter(mesh: Mesh, rows: int) -> Callable:
    """A jitted ``(table, a) -> rows a .. a + rows``, whole on every device, for a table split by
    columns: each device slices its own columns and one all-gather joins them (only the block
    moves). One compilation per mesh and block size."""

    def body(x, a):
        return jax.lax.dynamic_slice_in_dim(x, a, rows, axis=0)

    return jax.jit(body, out_shardings=NamedSharding(mesh, P()))


def _split_axis(x: jax.Array) -> int:
    """0 if ``x`` is split by rows, 1 if by columns (a table of a :class:`Layout`)."""
    spec = tuple(getattr(x.sharding, "spec", ()))  # one device's sharding has no spec
    return 1 if len(spec) > 1 and spec[1] is not None else 0


def _dims_blocks(x: jax.Array, rows: int, dim: int, block_bytes: int):
    """The first ``rows`` rows and ``dim`` columns of a column-split ``x`` as host blocks."""
    row_bytes = x.dtype.itemsize * int(np.prod(x.shape[1:]))
    per = max(1, min(x.shape[0], block_bytes // max(1, row_bytes)))
    get = _rows_getter(x.sharding.mesh, per)
    for lo in range(0, rows, per):
        a = min(lo, x.shape[0] - per)  # the last block overlaps its neighbour
        block = np.asarray(get(x, np.int32(a)).addressable_data(0))
        yield block[lo - a : lo - a + min(per, rows - lo), :dim]


def _host_value(x: Any) -> Any:
    """A leaf that is not split by rows, as host numpy (multi-host: this process's replica)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x


def streamed_state(
    state: step_lib.TrainState,
    rows: Mapping[str, int],
    *,
    dim: int | None = None,
    block_bytes: int = STREAM_BLOCK_BYTES,
) -> step_lib.TrainState:
    """The state :func:`unpad_state` of :func:`unshard_state` gives, with every row-split leaf
    (the tables and their row-shaped optimizer leaves) a
    :class:`~w2v_jax.checkpoint.ArrayBlocks` that gathers ``block_bytes`` of rows at a time.

    A checkpoint written from it is the same file, but no process ever holds a whole table: each
    block is gathered onto every device (one collective, so every process must produce the
    blocks in the same order: :func:`~w2v_jax.checkpoint.drain` on those that do not write).
    ``scratch`` is left out (None): checkpoints do not hold it. ``dim``: the true D, needed
    for tables split by dimensions (their padding columns are cut).
    """
    from w2v_jax.checkpoint import ArrayBlocks

    def blocks(name: str, x: jax.Array) -> ArrayBlocks:
        r = rows[name]
        if _split_axis(x) == 1:
            d = x.shape[1] if dim is None else dim
            return ArrayBlocks((r, d), x.dtype, lambda: _dims_blocks(x, r, d, block_bytes))
        return ArrayBlocks((r, *x.shape[1:]), x.dtype, lambda: _row_blocks(x, r, block_bytes))

    return step_lib.TrainState(
        params={name: blocks(name, t) for name, t in state.params.items()},
        opt_state=_map_opt_state(state, blocks, _host_value),
        step=_host_value(state.step),
        scratch=None,
    )


def gather_blocks(blocks) -> np.ndarray:
    """An :class:`~w2v_jax.checkpoint.ArrayBlocks` assembled into one host array (no second
    copy: each block is written into place)."""
    out = np.empty(blocks.shape, blocks.dtype)
    at = 0
    for block in blocks.blocks():
        out[at : at + block.shape[0]] = block
        at += block.shape[0]
    return out


def unpad_state(
    state: step_lib.TrainState, rows: Mapping[str, int], vocab_size: int, dim: int | None = None
):
    """Cuts a host state's padding: tables (and their table-shaped optimizer leaves) to
    ``rows[name]`` rows and ``dim`` columns, the scratch counter to V."""
    return step_lib.TrainState(
        params={k: v[: rows[k], :dim] for k, v in state.params.items()},
        opt_state=_map_opt_state(state, lambda name, x: x[: rows[name], :dim], lambda x: x),
        step=state.step,
        scratch=state.scratch[:vocab_size],
    )


def process_rows(mesh: Mesh, batch_size: int) -> range | None:
    """The rows of a global batch of ``batch_size`` that this process's devices hold.

    The batch is split along B over the mesh's devices in mesh order, so a process holds one
    contiguous block when its devices are adjacent in the mesh (as in :func:`make_mesh`);
    ``None`` where the mesh interleaves processes.
    """
    devices = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    if not mine or mine != list(range(mine[0], mine[0] + len(mine))):
        return None
    per = batch_size // len(devices)
    return range(mine[0] * per, (mine[-1] + 1) * per)


def shard_batches(
    batches: Mapping[str, Any],
    mesh: Mesh,
    *,
    axis_name: str = AXIS,
    batch_size: int | None = None,
) -> dict:
    """A stacked host batch group ``{field: [S, b, ...] or [S]}`` -> global arrays split along B.

    By default every process passes the whole group (``b = B``) and keeps only its devices'
    slices. A process that read only its own rows (its devices' block of the global batch,
    :func:`process_rows`) passes those, with the global ``batch_size``. [S] fields
    (``progress``, ``active``) are replicated.
    """
    rows = NamedSharding(mesh, P(None, axis_name))
    out = {}
    for name, value in batches.items():
        a = np.asarray(value)
        if a.ndim < 2:
            out[name] = _from_host(a, NamedSharding(mesh, P()))
        elif batch_size is None:
            out[name] = _from_host(a, rows)
        else:
            shape = (a.shape[0], batch_size, *a.shape[2:])
            out[name] = jax.make_array_from_process_local_data(rows, a, shape)
    return out


def gather_progress(
    words: np.ndarray, real: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums a call's per-step raw-word counts and ORs its real-step flags over processes, and
    collects every process's slice positions (in process order, hence slice order).

    Args:
      words: [S] int, this process's raw tokens consumed after each step of the call.
      real: [S] bool, steps where this process read a batch.
      positions: [k, 3] int, where each of its k slices resumes after the call.
    Returns:
      ``(words [S], real [S], positions [P * k, 3])``, the same on every process.
    """
    from jax.experimental import multihost_utils

    s = words.shape[0]
    mine = np.concatenate(
        [np.asarray(words, np.int64), np.asarray(real, np.int64), positions.reshape(-1)]
    )
    everyone = np.asarray(multihost_utils.process_allgather(mine))  # [P, 2S + 3k]
    return (
        everyone[:, :s].sum(axis=0),
        everyone[:, s : 2 * s].any(axis=0),
        everyone[:, 2 * s :].reshape(-1, 3),
    )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` whole on every device of ``mesh`` (the objective's constants)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: _from_host(x, sharding), tree)


def check_same_everywhere(named: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` naming each entry whose value differs between processes.

    Every process of a multi-host run must train the same run: the same config, corpus and
    vocabulary (each process builds its own corpus slices' part of one batch stream). Each
    value is reduced to a sha256 on its process, and the digests are all-gathered and compared
    with process 0's before the first step, so a mismatch is a clear error, not diverged tables.
    """
    import hashlib

    from jax.experimental import multihost_utils

    keys = sorted(named)
    digests = np.stack(
        [np.frombuffer(hashlib.sha256(repr(named[k]).encode()).digest(), np.uint8) for k in keys]
    )
    everyone = np.asarray(multihost_utils.process_allgather(digests))  # [P, keys, 32]
    for p in range(1, everyone.shape[0]):
        bad = [k for i, k in enumerate(keys) if not np.array_equal(everyone[p, i], everyone[0, i])]
        if bad:
            raise ValueError(
                f"process {p} of {everyone.shape[0]} was started with a different "
                f"{', '.join(bad)} than process 0; start every process with the same flags "
                "and corpus"
            )


def allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in process order: the sizes, then the bytes padded to the
    longest, each in one all-gather (a corpus slice's word counts, say; under 2 GiB)."""
    from jax.experimental import multihost_utils

    size = np.asarray([len(data)], np.int32)
    sizes = np.asarray(multihost_utils.process_allgather(size)).reshape(-1).tolist()
    buf = np.zeros(max(1, *sizes), np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    everyone = np.asarray(multihost_utils.process_allgather(buf))  # [P, longest]
    return [everyone[p, :n].tobytes() for p, n in enumerate(sizes)]


def agree(due: bool, signum: int | None) -> tuple[bool, int | None]:
    """Process 0's ``due`` and any process's signal, the same on every process.

    A checkpoint gathers the tables from every process, so all must decide to write one at the
    same step; a signal on any host stops them all. One tiny all-gather per call.
    """
    from jax.experimental import multihost_utils

    mine = np.asarray([int(due), -1 if signum is None else int(signum)], np.int32)
    everyone = np.asarray(multihost_utils.process_allgather(mine))  # [P, 2]
    signals = everyone[:, 1][everyone[:, 1] >= 0]
    return bool(everyone[0, 0]), (int(signals[0]) if signals.size else None)
