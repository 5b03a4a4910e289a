r"""Vocabulary-sharded training: tables split by rows over a device mesh, one ``shard_map`` step.

Every table (``center_vecs``, ``outside_vecs`` or ``node_vecs``) is padded to ``Vp`` rows, a
multiple of the device count ``n``, and split along the vocabulary axis: device ``d`` owns rows
``[d * Vs, (d + 1) * Vs)`` with ``Vs = Vp / n`` (``NamedSharding(mesh, P("v", None))``). The
batch is split along its first axis over the same mesh axis, ``B / n`` examples per device. One
step as seen from device ``d``, where ``M`` is the number of ids its examples read from both
tables (e.g. ``B/n * (2 + K)`` for skip-gram SGNS)::

    ids_d [M] ── all_gather ──> ids [n, M]       (same on every device; int32, small)
    rows = where(d owns ids, table_d[ids - d*Vs], 0)   [n, M, D]  (each row is non-zero on
                                                          exactly one device)
    rows ── psum_scatter ──> rows_d [M, D]        (device d gets the rows its examples asked for)
    loss, row grads <- gradients.py on rows_d     (local, per example)
    payload_d = [-lr * mask * grads | loss sum]  [M + 1, D]
    payload_d ── all_gather ──> payload [n, M + 1, D]
    table_d.at[ids - d*Vs].add(payload, only where d owns the id)   (repeated ids sum)

No device ever holds a full table or a dense ``[V, D]`` gradient: per device the tables take
``Vp / n * D`` floats plus ``O(B_global * (2 + K) * D)`` floats of per-step row buffers. The step
compiles to three collectives in a chain (all-gather, reduce-scatter, all-gather) and no
all-reduce; ``bench/sharding.py`` counts them in the compiled HLO and ``docs/scaling.md`` has
the numbers and what to do past a few devices.

The update is the plain-SGD, batch-synchronous step of :mod:`w2v_jax.train` (``r -= lr * mask_i
* grad_row``, scatter-added), so a sharded step gives the same tables as the single-device one up
to float summation order (``tests/test_sharding.py``).

Multi-host: :func:`init_distributed` wraps ``jax.distributed.initialize``; each process feeds
its own rows of the global batch (:func:`shard_batch` uses
``jax.make_array_from_process_local_data``); :func:`save_sharded` / :func:`restore_sharded` write
and read one ``.npy`` file per shard, restorable onto a mesh of any size.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from w2v_jax import gradients, losses

AXIS = "v"  # the one mesh axis: vocabulary rows of the tables and examples of the batch
MODELS = ("sg", "cbow")
LOSSES = ("ns", "hs")
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


def table_sharding(mesh: Mesh, axis_name: str = AXIS) -> NamedSharding:
    """Rows split over the mesh axis, columns whole: ``P(axis, None)``."""
    return NamedSharding(mesh, P(axis_name, None))


def batch_sharding(mesh: Mesh, axis_name: str = AXIS) -> NamedSharding:
    """Leading (example) axis split over the mesh axis."""
    return NamedSharding(mesh, P(axis_name))


def shard_params(params: Mapping[str, Any], mesh: Mesh, *, axis_name: str = AXIS) -> Params:
    """Host (or single-device) tables -> row-sharded global arrays, zero-padded to ``Vp`` rows.

    Padding rows are never addressed by an id (ids are ``< V``), so they stay zero. In a
    multi-process run every process passes the same host tables and keeps only its own rows
    (``jax.make_array_from_callback``); at very large V initialise each shard in place instead.
    """
    n = mesh.shape[axis_name]
    sharding = table_sharding(mesh, axis_name)
    out = {}
    for name, table in params.items():
        host = np.asarray(table)
        rows, dim = host.shape
        shape = (padded_rows(rows, n), dim)

        def shard(index, host=host, rows=rows, shape=shape, dim=dim):
            start, stop, _ = index[0].indices(shape[0])
            block = np.zeros((stop - start, dim), host.dtype)
            hi = min(stop, rows)
            if hi > start:
                block[: hi - start] = host[start:hi]
            return block

        out[name] = jax.make_array_from_callback(shape, sharding, shard)
    return out


def unshard_params(params: Mapping[str, jax.Array], vocab_size: int) -> dict[str, np.ndarray]:
    """Sharded tables -> host numpy with the padding rows removed (on every process).

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
        out[name] = host[: table_rows(name, vocab_size)]
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


def hs_path_rows(tree, words) -> dict[str, np.ndarray]:
    """Huffman path rows of ``words`` [B] for an HS batch (host numpy, gathered per batch).

    Returns ``points`` [B, L] int32, ``codes`` [B, L] int32 and ``path_mask`` [B, L] float32
    (1 on the path). Gathering on the host keeps the [V, L] Huffman tables off the devices.
    """
    w = np.asarray(words)
    L = tree.points.shape[1]
    return {
        "points": tree.points[w].astype(np.int32),
        "codes": tree.codes[w].astype(np.int32),
        "path_mask": (np.arange(L)[None, :] < tree.lengths[w][:, None]).astype(np.float32),
    }


# ----------------------------------------------------------------------------- the step


def _batch_keys(model: str, loss: str) -> tuple[str, ...]:
    keys = ["center", "context", "mask"]
    if model == "cbow":
        keys.append("context_mask")
    keys += ["negatives"] if loss == "ns" else ["points", "codes", "path_mask"]
    return tuple(keys)


def _owned_rows(table_d: jax.Array, ids: jax.Array, axis_name: str):
    """Local row of each global id in this device's shard, and whether this device owns it."""
    vs = table_d.shape[0]
    local = ids - jax.lax.axis_index(axis_name) * vs
    return local, (local >= 0) & (local < vs)


def _lookup(table_d: jax.Array, ids: jax.Array, axis_name: str) -> jax.Array:
    """``table[ids]`` for the ids this device owns, zero rows for the others: [*ids.shape, D]."""
    local, owned = _owned_rows(table_d, ids, axis_name)
    rows = jnp.take(table_d, jnp.clip(local, 0, table_d.shape[0] - 1), axis=0)
    return jnp.where(owned[..., None], rows, 0)


def _scatter_owned(table_d: jax.Array, ids: jax.Array, upd: jax.Array, axis_name: str):
    """``table.at[ids].add(upd)`` for the ids this device owns (repeated ids add up)."""
    local, owned = _owned_rows(table_d, ids, axis_name)
    idx = jnp.where(owned, local, table_d.shape[0]).reshape(-1)
    return table_d.at[idx].add(upd.reshape(idx.shape[0], -1).astype(table_d.dtype), mode="drop")


def make_sharded_step(
    mesh: Mesh,
    *,
    model: str,
    loss: str,
    cbow_mean: bool = True,
    cbow_grad: str = "word2vec",
    axis_name: str = AXIS,
    donate: bool = True,
    sync_cpu: bool = True,
) -> Callable:
    """Jitted SGD step ``(params, batch, lr) -> (params, loss_sum)`` on row-sharded tables.

    Args:
      mesh: a mesh with the axis ``axis_name`` (:func:`make_mesh`); its size ``n`` must divide
        the padded table rows (:func:`shard_params` ensures it) and the batch size B.
      model: ``"sg"`` (skip-gram) or ``"cbow"``.
      loss: ``"ns"`` (negative sampling) or ``"hs"`` (hierarchical softmax).
      cbow_mean, cbow_grad: as ``ModelConfig.cbow_mean`` / ``cbow_grad``.
      donate: donate ``params`` (tables updated in place).
      sync_cpu: on a mesh of several CPU devices, wait for each step to finish before
        returning. XLA:CPU gives a process one launch thread per device; with many multi-device
        steps queued, one thread can block on a device's in-flight limit while the others wait
        in a collective for it, and the process aborts after 40 s (seen under gdb with 4
        simulated devices on 2 cores). GPU and TPU meshes never wait.

    The returned function takes
      params: ``{"center_vecs", "outside_vecs"}`` (ns) or ``{"center_vecs", "node_vecs"}`` (hs),
        each [Vp, D] sharded by :func:`shard_params`.
      batch: dict of [B, ...] arrays split along B (:func:`shard_batch`): ``center`` [B] int32,
        ``context`` [B] (sg) or [B, C] (cbow) int32, ``mask`` [B] float32, for cbow
        ``context_mask`` [B, C]; for ns ``negatives`` [B, K] int32; for hs ``points``,
        ``codes``, ``path_mask`` [B, L] of the predicted word (:func:`hs_path_rows`). Other
        keys are ignored.
      lr: [] learning rate.

    and returns the new tables and ``sum_i mask_i * loss_i`` over the global batch.
    """
    if model not in MODELS:
        raise ValueError(f"make_sharded_step: model must be one of {MODELS}, got {model!r}")
    if loss not in LOSSES:
        raise ValueError(f"make_sharded_step: loss must be one of {LOSSES}, got {loss!r}")
    out_name = "node_vecs" if loss == "hs" else "outside_vecs"
    keys = _batch_keys(model, loss)
    n = mesh.shape[axis_name]

    def local_step(params, batch, lr):
        center_d, out_d = params["center_vecs"], params[out_name]
        dim = center_d.shape[1]
        dtype = center_d.dtype
        mask_B = batch["mask"]
        b = mask_B.shape[0]
        on_B = mask_B != 0
        lr = jnp.asarray(lr, dtype)

        # Ids this device's examples read: center_vecs rows (v_c, or the CBOW window) and the
        # output rows that score the predicted word (o and the negatives, or the Huffman path).
        target_B = batch["context"] if model == "sg" else batch["center"]
        in_ids = (batch["center"] if model == "sg" else batch["context"]).reshape(-1)
        if loss == "ns":
            k = batch["negatives"].shape[1]
            out_ids = jnp.concatenate([target_B, batch["negatives"].reshape(-1)])
        else:
            depth = batch["points"].shape[1]
            out_ids = batch["points"].reshape(-1)
        m_in = in_ids.shape[0]

        # 1. all-gather the ids of both tables: [n, m_in + m_out], the same on every device.
        ids_all = jax.lax.all_gather(
            jnp.concatenate([in_ids, out_ids]).astype(jnp.int32), axis_name, axis=0
        )
        in_all, out_all = ids_all[:, :m_in], ids_all[:, m_in:]
        # 2. each device reads the rows it owns (zeros elsewhere); the reduce-scatter sums the
        #    n contributions (exactly one is non-zero) and hands row block d to device d.
        rows = jnp.concatenate(
            [_lookup(center_d, in_all, axis_name), _lookup(out_d, out_all, axis_name)], axis=1
        )
        rows = jax.lax.psum_scatter(rows, axis_name, scatter_dimension=0)
        in_rows, out_rows = rows[:m_in], rows[m_in:]

        # 3. loss and row gradients of this device's examples (gradients.py).
        if model == "sg":
            h_BxD = in_rows
        else:
            ctx_mask_BxC = batch["context_mask"]
            h_BxD = jax.vmap(losses.cbow_hidden, in_axes=(0, 0, None))(
                in_rows.reshape(b, -1, dim), ctx_mask_BxC, cbow_mean
            )
        if loss == "ns":
            loss_B, dh_BxD, du_o_BxD, du_k_BxKxD = gradients.neg_sampling_grads_batch(
                h_BxD, out_rows[:b], out_rows[b:].reshape(b, k, dim)
            )
            out_grads = jnp.concatenate([du_o_BxD, du_k_BxKxD.reshape(b * k, dim)])
            example_of_out = jnp.concatenate([jnp.arange(b), jnp.repeat(jnp.arange(b), k)])
        else:
            loss_B, dh_BxD, dn_BxLxD = gradients.hierarchical_softmax_grads_batch(
                h_BxD, out_rows.reshape(b, depth, dim), batch["codes"], batch["path_mask"]
            )
            out_grads = dn_BxLxD.reshape(b * depth, dim)
            example_of_out = jnp.repeat(jnp.arange(b), depth)
        if model == "sg":
            in_grads = dh_BxD
            example_of_in = jnp.arange(b)
        else:
            d_ctx_BxCxD = jax.vmap(gradients.cbow_context_grads, in_axes=(0, 0, None, None))(
                dh_BxD, ctx_mask_BxC, cbow_mean, cbow_grad
            )
            in_grads = d_ctx_BxCxD.reshape(-1, dim)
            example_of_in = jnp.repeat(jnp.arange(b), d_ctx_BxCxD.shape[1])

        # Updates -lr * mask * grad; `where` keeps a masked-out (padding) example exactly zero.
        scale_B = -lr * mask_B.astype(dtype)
        grads = jnp.concatenate([in_grads, out_grads])
        example = jnp.concatenate([example_of_in, example_of_out])
        upd = jnp.where(on_B[example][:, None], scale_B[example][:, None] * grads, 0)
        loss_sum = jnp.sum(jnp.where(on_B, mask_B.astype(dtype) * loss_B, 0))

        # 4. all-gather every device's updates, with its loss sum riding along as one more row
        #    (so the step needs no separate all-reduce), and scatter-add the rows it owns.
        payload = jnp.concatenate([upd, jnp.broadcast_to(loss_sum, (1, dim))])
        # [n, m_in + m_out + 1, D], typed invariant: every device holds the same copy
        payload_all = jax.lax.all_gather(payload, axis_name, axis=0, to="invarying")
        new = dict(params)
        new["center_vecs"] = _scatter_owned(center_d, in_all, payload_all[:, :m_in], axis_name)
        new[out_name] = _scatter_owned(out_d, out_all, payload_all[:, m_in:-1], axis_name)
        return new, jnp.sum(payload_all[:, -1, 0])

    table_spec = P(axis_name, None)
    sharded = jax.shard_map(
        local_step,
        mesh=mesh,
        in_specs=({"center_vecs": table_spec, out_name: table_spec}, P(axis_name), P()),
        out_specs=({"center_vecs": table_spec, out_name: table_spec}, P()),
    )

    def step(params, batch, lr):
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"sharded step ({model}/{loss}): batch lacks {missing}; needs {keys}")
        bsz = np.shape(batch["mask"])[0]
        if bsz % n:
            raise ValueError(f"sharded step: batch size {bsz} must be a multiple of {n} devices")
        for name, table in params.items():
            if table.shape[0] % n:
                raise ValueError(
                    f"sharded step: {name} has {table.shape[0]} rows, not a multiple of {n} "
                    "devices; pad it with shard_params"
                )
        return sharded(params, {k: batch[k] for k in keys}, lr)

    jitted = jax.jit(step, donate_argnums=(0,) if donate else ())
    if not (sync_cpu and n > 1 and all(d.platform == "cpu" for d in mesh.devices.flat)):
        return jitted

    def synced(params, batch, lr):
        return jax.block_until_ready(jitted(params, batch, lr))

    synced.lower = jitted.lower  # for HLO inspection, as on a jitted function
    return synced


# ----------------------------------------------------------------------------- HLO accounting

COLLECTIVES = ("all-gather", "reduce-scatter", "all-to-all", "all-reduce", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
}


def _shape_bytes(text: str) -> int:
    import re

    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * int(np.prod([int(x) for x in dims.split(",") if x]))
    return total


def hlo_collectives(hlo_text: str) -> list[dict[str, Any]]:
    """Collective ops of an HLO module text (``jitted.lower(...).compile().as_text()``).

    One dict per op: ``op`` (e.g. ``"all-gather"``), ``result`` (its shape text), and
    ``result_bytes`` / ``operand_bytes``, the sizes of its output and input buffers on one
    device for one call. Async ``-start``/``-done`` pairs count once (the ``-start``).
    """
    import re

    define = re.compile(
        r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\([^=]*?\)|\S+)\s+"
        r"(?P<op>[\w\-]+)\((?P<args>[^)]*)\)"
    )
    shapes: dict[str, str] = {}
    found = []
    for line in hlo_text.splitlines():
        m = define.match(line)
        if not m:
            continue
        shapes[m.group("name")] = m.group("shape")
        op = m.group("op")
        base = op[: -len("-start")] if op.endswith("-start") else op
        if base in COLLECTIVES:
            found.append((base, m.group("shape"), m.group("args")))
    ops = []
    for op, shape, args in found:
        operands = [a.strip().split()[-1].lstrip("%") for a in args.split(",") if a.strip()]
        ops.append(
            {
                "op": op,
                "result": shape,
                "result_bytes": _shape_bytes(shape),
                "operand_bytes": sum(_shape_bytes(shapes.get(a, "")) for a in operands),
            }
        )
    return ops


# ----------------------------------------------------------------------------- multi-host


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids=None,
    cpu_collectives: str = "gloo",
    initialization_timeout: int = 300,
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
    """
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
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
            np.save(partial / f"{name}.{start:012d}-{stop:012d}.npy", data)
    _barrier("w2v_jax.save_sharded.write")
    if jax.process_index() == 0:
        tables = {}
        for name, table in params.items():
            files = sorted(p.name for p in partial.glob(f"{name}.*-*.npy"))
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
    path: str | os.PathLike, mesh: Mesh, *, axis_name: str = AXIS
) -> tuple[Params, dict[str, Any]]:
    """Reads a :func:`save_sharded` checkpoint onto ``mesh`` (of any size).

    Each process reads only the row ranges its devices own (memory-mapped), padding with zeros
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
    sharding = table_sharding(mesh, axis_name)
    params = {}
    for name, info in meta["tables"].items():
        rows, dim = info["shape"]
        dtype = np.dtype(info["dtype"])
        pieces = []
        for fname in info["files"]:
            lo, hi = (int(x) for x in fname[len(name) + 1 : -len(".npy")].split("-"))
            pieces.append((lo, hi, path / fname))
        shape = (padded_rows(rows, n), dim)

        def shard(index, pieces=pieces, dtype=dtype, dim=dim, shape=shape):
            start, stop, _ = index[0].indices(shape[0])
            block = np.zeros((stop - start, dim), dtype)
            for lo, hi, file in pieces:
                a, b = max(lo, start), min(hi, stop)
                if a < b:
                    block[a - start : b - start] = np.load(file, mmap_mode="r")[a - lo : b - lo]
            return block

        params[name] = jax.make_array_from_callback(shape, sharding, shard)
    return params, meta
