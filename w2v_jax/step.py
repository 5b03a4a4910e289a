r"""The train state and the one training step, for any objective, input side and optimizer.

The step is one pure function ``(state, consts, batch, key) -> (state, metrics)``:

1. ``key = fold_in(key, state.step)``: the host passes the same base key every call;
2. gather the input rows the batch names (``inputs.ids``) and form ``h``; ask the objective for
   its targets (the predicted word and K noise words, or a Huffman path) and gather their rows;
3. row gradients from the objective (hand-derived, :mod:`w2v_jax.gradients`), each multiplied by
   its example's mask (:func:`example_grads`, the decomposition every backend shares);
4. apply the optimizer to the touched rows only. Plain SGD (:class:`~w2v_jax.optim.ScheduledSGD`)
   is one scatter-add per table (``.at[ids].add``: repeated ids sum; on GPU of the rows summed
   per unique id first, see :func:`make_step`); any other element-wise
   optax rule goes through :func:`w2v_jax.optim.sparse_apply`. The cost of a step does not depend
   on V, except for the full softmax, which is V-wide by nature.

Like word2vec.c, the update is the *sum* of the per-example gradients times the learning rate
(word2vec.c applies each pair's gradient with ``alpha``; it never averages over pairs), so
``alpha`` means the same thing as in word2vec.c and gensim. Within a batch all gradients are taken
at the same parameters (batch-synchronous), where word2vec.c applies them one pair at a time.

``consts`` are the objective's constant arrays (noise table, Huffman paths): an argument of the
step, never donated, never part of the state or of a checkpoint. Other backends build steps with
the same signature: :func:`w2v_jax.fused.make_step` (the C++ kernel) and the sharded step
of :mod:`w2v_jax.sharding` (split by dimensions, it is this step with ``dims_axis``);
:func:`make_steps` wraps any of them in one ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax import objectives as objectives_lib
from w2v_jax import optim, threefry
from w2v_jax.config import override
from w2v_jax.inputs import InputSide
from w2v_jax.objectives import Objective, Targets

Params = dict[str, jax.Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training, as one pytree (donated to the step).

    Attributes:
      params: ``{"center_vecs": [V, D], <objective.table>: [rows, D]}``.
      opt_state: ``{table name: tx state}`` (``optax.EmptyState()`` for plain SGD).
      step: [] int32, steps taken.
      scratch: [V] float32 zeros between steps; the step counts duplicate ids in it
        (:func:`duplicate_scale`). Not saved in checkpoints.
    """

    params: Params
    opt_state: dict[str, Any]
    step: jax.Array
    scratch: jax.Array

    def replace(self, **changes: Any) -> TrainState:
        """A copy with the fields named in ``changes`` replaced."""
        return dataclasses.replace(self, **changes)


def init_params(objective: Objective, vocab_size: int, dim: int, key: jax.Array) -> Params:
    """word2vec.c's initialisation: ``center_vecs ~ U(-0.5/D, 0.5/D)``, output rows zero.

    Returns:
      ``center_vecs`` [V, D] float32 and the objective's table [table_rows(V), D] float32.
    """
    center = uniform_table(key, vocab_size, dim, -0.5 / dim, 0.5 / dim)
    rows = objective.table_rows(vocab_size)
    return {"center_vecs": center, objective.table: _zeros((rows, dim), jnp.float32)}


# Elements per block of :func:`uniform_table`: its temporaries are a few times this, in bytes x 4.
_INIT_BLOCK = 1 << 20
# Tables of up to this many elements are drawn (and zeroed) on the host, in NumPy: JAX's programs
# for them cost more to trace and lower than NumPy takes to fill them; larger ones are filled by
# the device, in blocks.
_HOST_INIT_MAX = 1 << 23


def _zeros(shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """``jnp.zeros(shape, dtype)``; up to ``_HOST_INIT_MAX`` elements made on the host and put on
    the device, which skips the trace and lowering of a program per shape."""
    if math.prod(shape) <= _HOST_INIT_MAX:
        return jax.device_put(np.zeros(shape, dtype))
    return jnp.zeros(shape, dtype)


def uniform_table(key: jax.Array, rows: int, dim: int, minval: float, maxval: float) -> jax.Array:
    """``jax.random.uniform(key, (rows, dim), float32, minval, maxval)``, bit for bit, in blocks.

    ``jax.random.uniform`` materialises its counters and random bits for the whole shape, several
    times the table's size at once (1.3 GB of temporaries for a 334 MB table). With the threefry
    generator in its partitionable form (JAX's default) element ``(r, c)`` depends only on the
    key and its flat index ``i = r * dim + c``:

    .. math:: \\text{bits}_i = t_1 \\oplus t_2, \\quad (t_1, t_2) = \\text{threefry2x32}(k,
        (\\lfloor i / 2^{32} \\rfloor, i \\bmod 2^{32}))

    and the float is ``1.m - 1`` scaled to ``[minval, maxval)``, so the table can be filled a
    block of rows at a time, in place, with the same values. Other generators (``rbg``,
    ``threefry4x32``, or ``jax_threefry_partitionable=False``) fall back to
    ``jax.random.uniform``. A table of up to ``_HOST_INIT_MAX`` elements with ``minval =
    -maxval`` (word2vec's) is drawn in NumPy (:mod:`w2v_jax.threefry`), the same bits.

    Returns:
      [rows, dim] float32.
    """
    return uniform_rows(key, rows, dim, minval, maxval, 0, rows)


def uniform_rows(
    key: jax.Array,
    rows: int,
    dim: int,
    minval: float,
    maxval: float,
    lo: int,
    hi: int,
    cols: tuple[int, int] | None = None,
) -> jax.Array:
    """Rows ``lo .. hi`` (and columns ``cols = (c0, c1)``, default all) of :func:`uniform_table`
    (``rows`` x ``dim``), built without the rest: how each device of a mesh initialises its own
    shard of a table, split by rows or by columns.

    Returns:
      [hi - lo, c1 - c0] float32.
    """
    c0, c1 = (0, dim) if cols is None else cols
    n, width = hi - lo, c1 - c0
    # The whole table's size decides, not the block's: every block of one table is drawn alike.
    # Under tracing (jax.eval_shape of a state: a resume) the key's data is a tracer: JAX's path.
    partitionable = threefry.matches_jax(str(jax.random.key_impl(key)))
    symmetric = np.float32(minval) == -np.float32(maxval)
    if rows * dim <= _HOST_INIT_MAX and symmetric and partitionable:
        key_2 = jax.random.key_data(key)
        if not isinstance(key_2, jax.core.Tracer):
            host = threefry.symmetric_uniform(np.asarray(key_2), dim, maxval, (lo, hi), (c0, c1))
            return jax.device_put(host)
    block_rows = max(1, min(n, _INIT_BLOCK // max(width, 1)))
    if not partitionable or (block_rows == n == rows and width == dim):
        table = jax.random.uniform(key, (rows, dim), jnp.float32, minval, maxval)
        return table if (n, width) == (rows, dim) else table[lo:hi, c0:c1]
    k1, k2 = jax.random.key_data(key)
    out = jnp.empty((n, width), jnp.float32)
    for start in range(0, n, block_rows):
        start = min(start, n - block_rows)  # the last block overlaps: it rewrites equal values
        base = (lo + start) * dim
        out = _uniform_block(
            out, k1, k2, start, base >> 32, base & 0xFFFFFFFF, block_rows, minval, maxval, dim, c0
        )
    return out


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9, 10), donate_argnums=0)
def _uniform_block(table, k1, k2, start, base_hi, base_lo, block_rows, minval, maxval, dim, col0):
    """``block_rows`` rows of the uniform table at columns ``col0 ..`` (as many as ``table``
    has), from flat index ``base`` (as 2 x 32 bits) on, written into ``table`` at row
    ``start``. Entry (r, j) is element ``base + r * dim + col0 + j`` of the flat table."""
    from jax.extend.random import threefry2x32_p

    width = table.shape[1]
    row_Rx1 = jax.lax.broadcasted_iota(jnp.uint32, (block_rows, 1), 0)
    col_1xW = jax.lax.broadcasted_iota(jnp.uint32, (1, width), 1)
    offset_RxW = row_Rx1 * jnp.uint32(dim) + (col_1xW + jnp.uint32(col0))
    lo_RxW = jnp.uint32(base_lo) + offset_RxW  # wraps modulo 2^32 ...
    hi_RxW = jnp.uint32(base_hi) + (lo_RxW < jnp.uint32(base_lo)).astype(jnp.uint32)  # ... carry
    t1_RxW, t2_RxW = threefry2x32_p.bind(k1, k2, hi_RxW, lo_RxW)
    bits_RxW = t1_RxW ^ t2_RxW
    # 23 random mantissa bits under exponent 0: a float in [1, 2), as jax.random.uniform does
    one = jnp.uint32(0x3F800000)
    floats_RxW = jax.lax.bitcast_convert_type((bits_RxW >> 9) | one, jnp.float32) - 1.0
    lo, hi = jnp.float32(minval), jnp.float32(maxval)
    values_RxW = jnp.maximum(lo, floats_RxW * (hi - lo) + lo)
    return jax.lax.dynamic_update_slice(table, values_RxW, (start, 0))


def init_state(params: Params, tx: Any) -> TrainState:
    """A fresh :class:`TrainState` around ``params`` (one optimizer state per table)."""
    vocab_size = params["center_vecs"].shape[0]
    return TrainState(
        params=params,
        opt_state={name: tx.init(table) for name, table in params.items()},
        step=_zeros((), jnp.int32),
        scratch=_zeros((vocab_size,), jnp.float32),
    )


# ----------------------------------------------------------------------------- row gradients


def example_grads(
    objective: Objective,
    inputs: InputSide,
    in_rows_BxCxD: jax.Array,
    out_rows_BxTxD: jax.Array,
    targets: Targets,
    batch: dict,
):
    """Per-example loss and mask-weighted row gradients from rows already gathered.

    This is the whole model, with no table in sight: the single-device step gathers the rows
    with plain indexing, the sharded step with collectives, and both call this.

    Args:
      in_rows_BxCxD: ``center_vecs[inputs.ids(batch)]``.
      out_rows_BxTxD: ``params[objective.table][targets.ids]``.
      targets: the objective's :class:`~w2v_jax.objectives.Targets` for this batch.
      batch: the batch dict (``mask`` [B] and the input side's fields).

    Returns:
      ``(loss_B, in_grads_BxCxD, out_grads_BxTxD)``: per-example loss times the mask, and the
      gradient rows times their example's mask (and the target mask).
    """
    h_BxD = inputs.hidden(in_rows_BxCxD, batch)
    w_B = batch["mask"].astype(h_BxD.dtype)
    loss_B, dh_BxD, drows_BxTxD = objective.row_grads(h_BxD, out_rows_BxTxD, targets)
    w_BxT = w_B[:, None] * targets.mask.astype(w_B.dtype)
    out_grads = drows_BxTxD * w_BxT[..., None]
    in_grads = inputs.grads(dh_BxD * w_B[:, None], batch)
    return loss_B * w_B, in_grads, out_grads


def row_gradients(
    objective: Objective, inputs: InputSide, params: Params, consts: Any, batch: dict, key
):
    """Per-example loss and, for each table, ``(ids [N], weighted grads [N, D], valid [N])``.

    Returns:
      ``(loss_B, updates, dense)``: ``updates[name] = (ids, grads, valid)`` for row updates
      and ``dense[name] = grad_VxD`` for a dense objective's output table.
    """
    in_ids_BxC = inputs.ids(batch)
    in_rows_BxCxD = params["center_vecs"][in_ids_BxC]
    w_B = batch["mask"].astype(in_rows_BxCxD.dtype)
    in_valid_BxC = inputs.valid(batch) & (w_B[:, None] > 0)
    d = in_rows_BxCxD.shape[-1]
    updates: dict[str, tuple] = {}
    dense: dict[str, jax.Array] = {}
    if objective.dense:
        h_BxD = inputs.hidden(in_rows_BxCxD, batch)
        loss_B, dh_BxD, dense[objective.table] = objective.dense_grads(
            h_BxD, inputs.predicted(batch), params[objective.table], w_B
        )
        loss_B = loss_B * w_B
        in_grads = inputs.grads(dh_BxD * w_B[:, None], batch)
    else:
        targets = objective.targets(consts, inputs.predicted(batch), key)
        # The first target column (the predicted word for SGNS and NCE, the root for HS) is
        # gathered apart from the rest: SGNS's row gradients take u_o and u_1..u_K as two
        # operands, and slicing one [B, T, D] gather made XLA:CPU copy the negatives' rows on
        # every step (about 20% of a skip-gram SGNS step). Same values, same numbers.
        table = params[objective.table]
        ids_BxT = targets.ids
        out_rows = jnp.concatenate([table[ids_BxT[:, :1]], table[ids_BxT[:, 1:]]], axis=1)
        loss_B, in_grads, out_grads = example_grads(
            objective, inputs, in_rows_BxCxD, out_rows, targets, batch
        )
        out_valid = targets.mask & (w_B[:, None] * targets.mask.astype(w_B.dtype) > 0)
        updates[objective.table] = (
            targets.ids.reshape(-1),
            out_grads.reshape(-1, d),
            out_valid.reshape(-1),
        )
    updates["center_vecs"] = (
        in_ids_BxC.reshape(-1),
        in_grads.reshape(-1, d),
        in_valid_BxC.reshape(-1),
    )
    return loss_B, updates, dense


# ----------------------------------------------------------------------------- the step


def duplicate_scale(
    scratch_V: jax.Array, ids_N: jax.Array, valid_N: jax.Array, cap: float
) -> tuple[jax.Array, jax.Array]:
    r"""``min(1, cap / n_r)`` per entry, ``n_r`` = how often its row ``r`` occurs in the batch.

    A row named ``n <= cap`` times gets the plain sum of its gradients, exactly as if word2vec.c
    had applied them one after another at the same parameters. A hotter row gets
    ``cap / n`` times the sum: at most ``cap`` pair-sized steps' worth per batch.

    Why a cap: word2vec.c applies the n updates of a row one at a time, each at fresh parameters,
    which is stable; their synchronous sum is not when n is large. For a row with curvature
    ``c ~ sigma'(f) |h|^2`` the summed step is stable only while ``alpha * n * c < 2``. The
    Huffman root is on every path (n = B) and a frequent word is a negative hundreds of times per
    batch, so with ``alpha = 0.05`` and B = 4096 the plain sum diverges (CBOW-HS within a few
    hundred steps on the default corpus), while a small cap slows the hot rows down too much
    (cap 16: WordSim-353 0.12 vs 0.16 for skip-gram SGNS after 3 epochs; cap 1, the mean, barely
    learns). ``cap = 64`` matched the plain sum where the sum is stable and kept CBOW-HS stable
    (measurements in BENCHMARKS.md). ``cap = inf`` is the plain sum, the exact gradient step of
    the batch's summed loss.

    The counts live in ``scratch_V``, a [V] buffer of zeros carried in the state: scatter-add
    the entries, gather each entry's count, scatter zeros back. That is O(N) work per step; a
    fresh ``zeros(V)`` would cost O(V) and break the step's independence of V.

    Args:
      scratch_V: [V] float32 zeros (the state's ``scratch``; returned zeroed again).
      ids_N: [N] int32 rows; valid_N: [N] bool (padding and masked entries do not count).
      cap: the largest multiplicity summed in full.

    Returns:
      ``(scale_N, scratch_V)``: [N] float32 scale factors and the re-zeroed buffer.
    """
    counts_V = scratch_V.at[ids_N].add(valid_N.astype(scratch_V.dtype))
    n_N = counts_V[ids_N]
    scale_N = jnp.minimum(1.0, cap / jnp.maximum(n_N, 1.0))
    # Zero the counts with values computed from n_N (min(n, 0) = 0, as n >= 0): the data
    # dependence orders the gather before this scatter, so XLA updates the buffer in place
    # instead of copying all of [V] each step (an O(V) step; tests/test_step.py checks the HLO).
    return scale_N, counts_V.at[ids_N].set(jnp.minimum(n_N, 0.0))


def apply_updates(
    tx: Any,
    params: Params,
    opt_state: dict,
    scratch_V: jax.Array,
    updates: dict[str, tuple],
    dense_grads: dict[str, jax.Array],
    *,
    progress: jax.Array,
    dup_cap: float,
    dense: bool = False,
    combine: bool = False,
):
    """Applies ``tx`` to the touched rows of each table: the update half of every step.

    Args:
      tx: the optimizer (see :func:`make_step`).
      params, opt_state: the tables and their optimizer states (a device's shards, in the
        sharded step).
      scratch_V: [V] zeros for :func:`duplicate_scale`.
      updates: ``{name: (ids [N], grads [N, D], valid [N])}``; an id equal to the table's row
        count names no row (dropped; the sharded step marks rows another device owns so).
      dense_grads: ``{name: [V, D]}`` for a dense objective.
      progress: [] run fraction (the schedule's argument).
      dup_cap, dense: as :func:`make_step`.
      combine: plain SGD sums the rows of repeated ids first (:func:`w2v_jax.optim.
        combine_duplicates`) and scatters each touched row once; see :func:`make_step`.

    Returns:
      ``(params, opt_state, scratch_V, sq)`` with ``sq`` the squared norm of the input-side
      (``center_vecs``) gradient rows and of the dense gradients.
    """
    scatter_sgd = isinstance(tx, optim.ScheduledSGD) and not dense
    extra = optim.extra_args(tx, progress)
    lr = optim.learning_rate(tx, progress)
    params, opt_state = dict(params), dict(opt_state)
    sq = jnp.zeros((), jnp.float32)
    for name, (ids, grads, valid) in updates.items():
        table = params[name]
        if math.isfinite(dup_cap):
            scale, scratch_V = duplicate_scale(scratch_V, ids, valid, dup_cap)
            grads = grads * scale[:, None].astype(grads.dtype)
        if name == "center_vecs":  # the input side only: see make_step's docstring
            sq = sq + jnp.sum(jnp.square(grads.astype(jnp.float32)))
        if dense:
            g_VxD = jnp.zeros_like(table).at[ids].add(grads.astype(table.dtype))
            params[name], opt_state[name] = optim.dense_apply(
                tx, table, opt_state[name], g_VxD, **extra
            )
        elif scatter_sgd and combine:  # one scatter of unique rows (GPU: no atomic contention)
            # After the cap: the cap scales each entry by its row's count, then rows are summed.
            ids = jnp.where(valid, ids, table.shape[0])
            unique_N, g_NxD = optim.combine_duplicates(ids, grads, table.shape[0])
            params[name] = table.at[unique_N].add(
                (-lr * g_NxD).astype(table.dtype), mode="drop", indices_are_sorted=True
            )
        elif scatter_sgd:  # the fast path: a single scatter-add per table
            params[name] = table.at[ids].add((-lr * grads).astype(table.dtype))
        else:
            ids = jnp.where(valid, ids, table.shape[0])
            params[name], opt_state[name] = optim.sparse_apply(
                tx, table, opt_state[name], ids, grads, **extra
            )
    for name, g_VxD in dense_grads.items():
        sq = sq + jnp.sum(jnp.square(g_VxD.astype(jnp.float32)))
        table = params[name]
        if scatter_sgd:
            params[name] = table - (lr * g_VxD).astype(table.dtype)
        else:
            params[name], opt_state[name] = optim.dense_apply(
                tx, table, opt_state[name], g_VxD, **extra
            )
    return params, opt_state, scratch_V, sq


def make_step(
    objective: Objective,
    inputs: InputSide,
    tx: Any,
    *,
    dup_cap: float = 64.0,
    dense: bool = False,
    combine_duplicates: bool | None = None,
    dims_axis: str | None = None,
) -> Callable:
    """The un-jitted single step ``(state, consts, batch, key) -> (state, metrics)``.

    Args:
      objective: the output side (:mod:`w2v_jax.objectives`).
      inputs: the input side (:mod:`w2v_jax.inputs`).
      tx: the optimizer: :func:`w2v_jax.optim.make_optimizer`'s rules follow word2vec's linear
        decay in run progress; any element-wise optax rule works too (its own learning rate).
      dup_cap: a row named n > cap times in a batch steps by ``cap/n`` times its summed gradient
        (:func:`duplicate_scale`); ``inf`` is the plain sum.
      dense: apply ``tx`` to whole [V, D] gradients (the optax reference, O(V) per step).
      combine_duplicates: with plain SGD, sum the rows of repeated ids (sorted unique ids and a
        segment sum, fixed size N) and scatter each touched row once, instead of one scatter-add
        of all N rows. ``None``: on when the run's platform is ``gpu``, where an f32 scatter-add
        with many repeated ids is very slow (openxla/xla#46225: its atomic adds to one address
        serialise; the Huffman root is on every path, a frequent word is a negative hundreds of
        times per batch). On CPU the plain scatter-add is the faster one and stays the default.
        Both give the same tables up to the order of float summation.
      dims_axis: the step runs inside a ``shard_map`` whose devices each hold some columns of
        every table (and the whole batch): the scores and the gradient norm are summed over this
        mesh axis (:func:`w2v_jax.objectives.split_dims`), everything else is per column. This is
        how :mod:`w2v_jax.sharding` splits tables by dimensions.

    ``batch`` is a dict of arrays: ``center``, ``context``, ``mask`` (plus ``context_mask`` for
    CBOW) and ``progress`` [] float32, the run fraction that sets the learning rate.

    Metrics: ``loss_sum`` and ``examples`` (masked), ``lr`` (NaN for a rule without a schedule),
    and ``grad_norm``, the norm of the input-side (``center_vecs``) row gradients, plus the dense
    softmax gradient where there is one. The output-side rows are left out on purpose: reading
    all B(K+1) of them again cost 22% of a skip-gram SGNS step on CPU (9.9-10.4 vs 7.7-8.2 ms,
    V=30k, B=4096), while divergence shows first on the input side, whose gradient sums every
    output row's error.
    """

    combine = _platform() == "gpu" if combine_duplicates is None else combine_duplicates
    sum_parts = (lambda x: x) if dims_axis is None else (lambda x: jax.lax.psum(x, dims_axis))
    if dims_axis is not None:
        objective = objectives_lib.split_dims(objective, sum_parts)

    def step(state: TrainState, consts: Any, batch: dict, key: jax.Array):
        key = jax.random.fold_in(key, state.step)
        progress = batch["progress"]
        lr = optim.learning_rate(tx, progress)
        loss_B, updates, dense_grads = row_gradients(
            objective, inputs, state.params, consts, batch, key
        )
        params, opt_state, scratch, sq = apply_updates(
            tx,
            state.params,
            state.opt_state,
            state.scratch,
            updates,
            dense_grads,
            progress=progress,
            dup_cap=dup_cap,
            dense=dense,
            combine=combine,
        )
        metrics = {
            "loss_sum": jnp.sum(loss_B).astype(jnp.float32),
            "examples": jnp.sum(batch["mask"]).astype(jnp.float32),
            "lr": jnp.asarray(lr, jnp.float32),
            "grad_norm": jnp.sqrt(sum_parts(sq)),
        }
        new_state = state.replace(
            params=params, opt_state=opt_state, step=state.step + 1, scratch=scratch
        )
        return new_state, metrics

    return step


def make_steps(step: Callable) -> Callable:
    """Several steps per call: ``(state, consts, batches [S, ...], key) -> (state, metrics [S])``.

    One ``lax.scan`` over the leading axis of every batch field, jitted with the state donated
    (tables updated in place). Fewer dispatches and fewer fresh temporaries than S separate
    calls (measured in BENCHMARKS.md). Works for any step with the signature of
    :func:`make_step` (the fused kernel's too).

    ``batches`` may hold ``active`` [S] bool: a step whose flag is False is skipped (``lax.cond``;
    the state passes through untouched, ``state.step`` included, and its metrics are zeros).
    The host loop pads a run's last, shorter group with such steps, so that every call has the
    same shape and XLA compiles the scan once (a second compile cost 1.6 s, a third of a
    one-epoch run on the default corpus).
    """

    def steps(state, consts, batches, key):
        batches = dict(batches)
        active_S = batches.pop("active", None)
        if active_S is None:
            return jax.lax.scan(lambda s, b: step(s, consts, b, key), state, batches)
        first = jax.tree.map(lambda x: x[0], batches)
        shapes = jax.eval_shape(lambda s, b: step(s, consts, b, key)[1], state, first)
        skipped = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

        def body(s, xs):
            b, on = xs
            return jax.lax.cond(on, lambda s: step(s, consts, b, key), lambda s: (s, skipped), s)

        return jax.lax.scan(body, state, (batches, active_S))

    return jax.jit(steps, donate_argnums=0)


def _platform() -> str:
    """The platform the run's arrays live on: the default device's (``jax_default_device`` when
    set, e.g. a CPU device on a GPU machine), else the default backend's."""
    device = jax.config.jax_default_device
    if device is None:
        return jax.default_backend()
    return device if isinstance(device, str) else device.platform


# The batch shape a run gets when its config leaves it to the device (``batch_size`` or
# ``steps_per_call`` None): ``platform -> (B, steps per call)``, other platforms take "cpu"'s.
# CPU: B=4096 and 8 steps per call, the values every CPU figure in BENCHMARKS.md was measured at.
# GPU: a B=4096 step moves ~10 MB of rows, microseconds of an H100/H200's bandwidth, so it is
# bound by kernel launches and host round trips; 4x the pairs per step and twice the steps per
# call amortise both. Not 16x: the same step on CPU (same math, so the same quality) at B=65536
# fell to WordSim-353 0.11 / SimLex 0.05 on the default corpus (sg-ns, 5 epochs, 1 seed), too
# few steps, against 0.25 / 0.15 at 4096; B=16384 gave 0.22 / 0.11 (BENCHMARKS.md). GPU speed
# is not yet measured (bench/gpu.sh is the check; no GPU has been lent to this project).
DEVICE_BATCH = {"cpu": (4096, 8), "gpu": (16384, 16)}
# The fused kernel applies its pairs one after another, so its batch is only how many pairs one
# call hands it, not a synchronous step. On several threads each call pays a start and an end
# (waking the workers, waiting for the last chunk, XLA's scan step between calls): 16384 pairs
# per call trained the default corpus 10-16% faster than 4096 on 2 threads, at equal quality
# (BENCHMARKS.md).
FUSED_BATCH = 16384
# Under --deterministic the kernel's threads take fixed ranges of each call and merge the rows
# they share at its end (w2v_kernels.cc), a cost per call that grows with the rows shared (about
# the whole vocabulary of the default corpus), not with the pairs: for skip-gram, 65536 pairs
# per call trained the default corpus 1.2x faster than 16384 on 2 threads at equal quality
# (BENCHMARKS.md). Not for CBOW, whose examples are whole windows (about 5x the text of a
# skip-gram pair): at 65536 a call is a fifth of an epoch there, and WordSim-353 fell by 0.026.
FUSED_DETERMINISTIC_BATCH = 65536


def fused_threads(cfg) -> int:
    """The fused kernel's thread count for ``cfg``: ``--threads`` when given; else every usable
    core, except one for CBOW under ``--deterministic``. The deterministic schedule merges the
    rows its threads share at the end of each call, and a CBOW call's windows share most of
    their input rows, so on 2 cores the schedule trained CBOW slower than one thread at V = 9k
    and at V = 167k (BENCHMARKS.md)."""
    from w2v_jax import fused

    t = cfg.train
    if t.threads:
        return t.threads
    if t.deterministic and cfg.model.model == "cbow":
        return 1
    return fused.default_num_threads()


# `--update auto` runs skip-gram on the deterministic schedule, not Hogwild, when the vocabulary
# has at most this many words and the kernel takes 2 to AUTO_DETERMINISTIC_MAX_THREADS threads.
# With a small vocabulary the threads write the same rows all the time: Hogwild's writes then
# bounce those rows' cache lines between the cores (on 2 cores it ran slower than one thread at
# V = 9,000), while the schedule's per-thread copies of the shared rows cost a merge per call
# that grows with the rows shared. Measured on 2 cores (`bench/kernel_micro.py`, BENCHMARKS.md),
# the schedule was 1.8x Hogwild at V = 9,000, 1.2x at 20,000-30,000 and 0.9x at 50,000, and
# Hogwild pulled ahead from there (1.5x at V = 800,000). CBOW keeps Hogwild: its deterministic
# schedule is one thread (fused_threads). Not measured beyond 2 threads, hence the cap.
AUTO_DETERMINISTIC_MAX_VOCAB = 30_000
AUTO_DETERMINISTIC_MAX_THREADS = 4


def auto_deterministic(cfg, vocab_size: int) -> bool:
    """Whether ``--update auto`` takes the fused kernel's deterministic schedule for a run that
    did not ask for it: skip-gram with a vocabulary of at most
    :data:`AUTO_DETERMINISTIC_MAX_VOCAB` words on 2 to :data:`AUTO_DETERMINISTIC_MAX_THREADS`
    kernel threads, where it trained faster than Hogwild (see the constants). ``cfg`` is a run
    whose update ``auto`` resolved to ``fused``."""
    t = cfg.train
    threads = fused_threads(cfg)
    return (
        t.update == "auto"
        and not t.deterministic
        and cfg.model.model == "sg"
        and 1 < threads <= AUTO_DETERMINISTIC_MAX_THREADS
        and vocab_size <= AUTO_DETERMINISTIC_MAX_VOCAB
    )


def device_defaults(cfg, update: str | None = None):
    """``cfg`` with ``batch_size`` and ``steps_per_call`` set for the run's platform where they
    are ``None`` (:data:`DEVICE_BATCH`; :data:`FUSED_BATCH` pairs for ``update="fused"``,
    :data:`FUSED_DETERMINISTIC_BATCH` for skip-gram under ``--deterministic``; B rounded up to a
    multiple of ``devices`` and of ``corpus_slices``), and a deterministic fused run's thread
    count where it is 0 (:func:`fused_threads`, recorded because its numbers depend on it).
    Values the config gives are kept (on ``--resume``, the checkpoint's). :func:`w2v_jax.train`
    calls it once, when the step is chosen."""
    t = cfg.train
    if update == "fused" and t.deterministic and t.threads == 0:
        cfg = override(cfg, threads=fused_threads(cfg))
        t = cfg.train
    if t.batch_size is not None and t.steps_per_call is not None:
        return cfg
    b, s = DEVICE_BATCH.get(_platform(), DEVICE_BATCH["cpu"])
    if update == "fused":
        sg_deterministic = t.deterministic and cfg.model.model == "sg"
        b = FUSED_DETERMINISTIC_BATCH if sg_deterministic else FUSED_BATCH
    m = math.lcm(t.devices, t.corpus_slices or 1)  # every device and every slice gets B / n
    b = -(-b // m) * m
    return override(
        cfg,
        batch_size=b if t.batch_size is None else t.batch_size,
        steps_per_call=s if t.steps_per_call is None else t.steps_per_call,
    )


def choose_update(
    cfg, objective: Objective, inputs: InputSide, tx: Any, *, resumed: str | None = None
) -> tuple[str, str]:
    """``(update, reason)``: the step ``cfg.train.update`` names, with ``auto`` resolved.

    ``auto`` takes the fused C++ kernel (:mod:`w2v_jax.fused`) when the tables live on a CPU
    device and the kernel implements this objective, input side and optimizer (plain SGD, hand
    gradients, SGNS or hierarchical softmax, a working compiler); otherwise the pure-JAX row step
    (``sparse``), which runs anything on any backend. An explicit name is returned as is:
    ``fused`` where the kernel does not apply stays an error (:func:`w2v_jax.fused.make_step`).
    ``--deterministic`` runs the kernel's deterministic schedule; so does ``auto`` for skip-gram
    on a small vocabulary, where it is the faster one: :func:`resolve_update` adds that choice
    once the vocabulary is known. ``resumed`` is the
    step a checkpoint being resumed ran: ``auto`` keeps the pure-JAX step of such a run (one
    written on a mesh, say), since the two steps do not give the same numbers. This is the one
    place that decides; the trainer prints ``reason`` and returns it with the result.
    """
    requested = cfg.train.update
    if requested != "auto":
        return requested, f"asked for with --update {requested}"
    if resumed == "sparse":
        return "sparse", "auto on --resume: the step the checkpoint ran"
    platform = _platform()
    if platform != "cpu":
        return "sparse", f"{platform.upper()}: the fused kernel runs on CPU only"
    from w2v_jax import fused

    why = fused.unsupported(objective, inputs, tx)
    if why is not None:
        return "sparse", why
    threads = fused_threads(cfg)
    plural = "thread" if threads == 1 else "threads"
    how = "deterministic" if threads == 1 or cfg.train.deterministic else "Hogwild"
    how = f"{threads} {plural}, {how}"
    return "fused", (
        f"CPU, {inputs.name} {objective.kernel.upper()} with plain SGD: the C++ kernel on {how}"
    )


def resolve_update(
    cfg,
    objective: Objective,
    inputs: InputSide,
    tx: Any,
    *,
    resumed: str | None = None,
    vocab_size: int | None = None,
) -> tuple[Any, str, str]:
    """``(cfg, update, reason)``: :func:`choose_update`'s step, and ``cfg`` as that step runs:
    with ``auto``'s deterministic schedule where :func:`auto_deterministic` takes it for a
    vocabulary of ``vocab_size`` words, and the reason saying so. ``vocab_size`` ``None`` keeps
    the config's schedule (a resumed run keeps its checkpoint's)."""
    update, why = choose_update(cfg, objective, inputs, tx, resumed=resumed)
    if update == "fused" and vocab_size is not None and auto_deterministic(cfg, vocab_size):
        cfg = override(cfg, deterministic=True)
        _, why = choose_update(cfg, objective, inputs, tx)
        limit = AUTO_DETERMINISTIC_MAX_VOCAB
        why += f": faster than Hogwild for V <= {limit:,} (here {vocab_size:,})"
    return cfg, update, why


def for_config(
    cfg, objective: Objective, inputs: InputSide, tx: Any, *, update: str | None = None
) -> Callable:
    """The single step ``cfg.train.update`` names, for these values: the pure-JAX row step
    (``sparse``), its dense optax reference (``dense``), or the C++ kernels (``fused``);
    ``auto`` as :func:`choose_update` resolves it, unless ``update`` gives its answer."""
    if update is None:
        update, _ = choose_update(cfg, objective, inputs, tx)
    if update == "fused":
        from w2v_jax import fused

        return fused.make_step(
            objective,
            inputs,
            tx,
            threads=cfg.train.threads or None,
            negative=cfg.model.negative,
            deterministic=cfg.train.deterministic,
        )
    return make_step(objective, inputs, tx, dup_cap=cfg.train.dup_cap, dense=update == "dense")
