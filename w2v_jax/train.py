r"""Training: the state pytree, the jitted step, and the host loop.

The step is one pure function ``(state, batch, key) -> (state, metrics)``:

1. ``key = fold_in(key, state.step)``: the host passes the same base key every call;
2. gather the rows the batch names (``v_c = center_vecs[center]``, ``u_o``, ``u_k`` or the
   Huffman path's ``node_vecs``), draw the negatives ``[B, K]`` from the noise table;
3. row gradients from :mod:`w2v_jax.gradients` (or ``jax.grad`` of :mod:`w2v_jax.losses`
   with ``grad="autodiff"``), each multiplied by the example's mask;
4. scatter the updates into the touched rows only (``.at[ids].add``: repeated ids sum). The
   cost of a step does not depend on V, except for the full softmax, which is V-wide by nature.

Like word2vec.c, the update is the *sum* of the per-example gradients times the learning rate
(word2vec.c applies each pair's gradient with ``alpha``; it never averages over pairs), so
``alpha`` means the same thing as in word2vec.c and gensim. Within a batch all gradients are taken
at the same parameters (batch-synchronous), where word2vec.c applies them one pair at a time.

The host loop streams fixed-shape batches from :mod:`w2v_jax.batches`, groups
``steps_per_call`` of them for one ``lax.scan`` call, logs honest window means, and writes atomic
checkpoints that make a resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from w2v_jax import batches as batches_lib
from w2v_jax import corpus as corpus_lib
from w2v_jax import gradients, losses, optim, sampling
from w2v_jax import huffman as huffman_lib
from w2v_jax.config import MAX_SOFTMAX_VOCAB, Config, from_dict, validate
from w2v_jax.vocab import Vocab, build_vocab

Params = dict[str, jax.Array]


@flax.struct.dataclass
class Tables:
    """Constant device arrays the step reads but never trains.

    Attributes:
      noise_prob, noise_alias: [V] float32 / int32 Walker alias table of the noise distribution
        (``sampling.NoiseTable``), or ``None`` when the loss draws no negatives.
      points, codes: [V, L] int32 Huffman inner-node ids and branch codes, or ``None``.
      lengths: [V] int32 code lengths, or ``None``.
    """

    noise: Any = None
    points: jax.Array | None = None
    codes: jax.Array | None = None
    lengths: jax.Array | None = None


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (donated to the step).

    Attributes:
      params: ``{"center_vecs": [V, D], "outside_vecs": [V, D]}`` for SGNS and softmax, or
        ``{"center_vecs": [V, D], "node_vecs": [V-1, D]}`` for hierarchical softmax.
      opt_state: per-table optax state (``{}`` for the plain SGD fast path).
      step: [] int32, steps taken.
      tables: the constant :class:`Tables`.
      scratch: [V] float32 zeros between steps; the step counts duplicate ids in it
        (:func:`duplicate_scale`). Not saved in checkpoints.
    """

    params: Params
    opt_state: dict[str, Any]
    step: jax.Array
    tables: Tables
    scratch: jax.Array


def make_tables(cfg: Config, counts: np.ndarray) -> Tables:
    """The constant :class:`Tables` of ``cfg``'s loss for a vocabulary with ``counts`` [V]:
    the count^ns_exponent alias table for SGNS, the Huffman paths for HS, nothing for softmax."""
    if cfg.model.loss == "ns":
        return Tables(noise=sampling.build_noise_table(counts, cfg.data.ns_exponent))
    if cfg.model.loss == "hs":
        hf = huffman_lib.build_huffman(counts)
        return Tables(
            points=jnp.asarray(hf.points),
            codes=jnp.asarray(hf.codes),
            lengths=jnp.asarray(hf.lengths),
        )
    return Tables()


def output_table(cfg: Config) -> str:
    """Name of the second table: ``node_vecs`` for HS, else ``outside_vecs``."""
    return "node_vecs" if cfg.model.loss == "hs" else "outside_vecs"


def init_params(cfg: Config, vocab_size: int, key: jax.Array) -> Params:
    """word2vec.c's initialisation: ``center_vecs ~ U(-0.5/D, 0.5/D)``, output rows zero.

    Returns:
      ``center_vecs`` [V, D] float32 and ``outside_vecs`` [V, D] or ``node_vecs`` [V-1, D].
    """
    d = cfg.model.dim
    center = jax.random.uniform(key, (vocab_size, d), jnp.float32, -0.5 / d, 0.5 / d)
    rows = vocab_size - 1 if cfg.model.loss == "hs" else vocab_size
    return {"center_vecs": center, output_table(cfg): jnp.zeros((rows, d), jnp.float32)}


def uses_optax_state(cfg: Config) -> bool:
    """Plain sparse SGD needs no optimizer state; everything else keeps an optax state."""
    return not (cfg.train.optimizer == "sgd" and cfg.train.update == "sparse")


def init_state(cfg: Config, params: Params, tables: Tables) -> TrainState:
    """A fresh :class:`TrainState` around ``params`` (one optax state per table)."""
    opt_state: dict[str, Any] = {}
    if uses_optax_state(cfg):
        tx = optim.make_optimizer(cfg.train.optimizer, cfg.alpha)
        opt_state = {name: tx.init(table) for name, table in params.items()}
    vocab_size = params["center_vecs"].shape[0]
    return TrainState(
        params=params,
        opt_state=opt_state,
        step=jnp.zeros((), jnp.int32),
        tables=tables,
        scratch=jnp.zeros((vocab_size,), jnp.float32),
    )


# ----------------------------------------------------------------------------- row gradients


def _rows_fn(manual: Callable, loss_fn: Callable, n_diff: int, autodiff: bool) -> Callable:
    """Batched ``(*rows) -> (loss_B, grads...)`` from the hand form or from ``jax.grad``."""
    if not autodiff:
        return manual
    per_example = jax.value_and_grad(loss_fn, argnums=tuple(range(n_diff)))

    def batched(*args):
        loss_B, grads = jax.vmap(per_example)(*args)
        return (loss_B, *grads)

    return batched


def _output_rows(cfg: Config, params: Params, tables: Tables, h_BxD, target_B, key):
    """Loss and row gradients of the SGNS or HS output layer for ``h`` predicting ``target``.

    Args:
      h_BxD: [B, D] input vectors (v_c for skip-gram, the context mean for CBOW).
      target_B: [B] int32 words to predict.
      key: PRNG key for the negatives.

    Returns:
      ``(loss_B, dh_BxD, ids_N, grads_NxD, owner_N, valid_N)``: the output-table rows touched,
      their per-entry gradients, the example each entry belongs to (for its mask), and
      ``valid_N`` (False for padded Huffman slots). N = B(K+1) for SGNS, B*L for HS.
    """
    autodiff = cfg.train.grad == "autodiff"
    b = target_B.shape[0]
    if cfg.model.loss == "ns":
        k = cfg.model.negative
        negatives_BxK = sampling.sample_negatives(tables.noise, key, (b, k))
        out = params["outside_vecs"]
        u_o_BxD, u_k_BxKxD = out[target_B], out[negatives_BxK]
        fn = _rows_fn(gradients.neg_sampling_grads_batch, losses.neg_sampling_loss, 3, autodiff)
        loss_B, dh_BxD, du_o_BxD, du_k_BxKxD = fn(h_BxD, u_o_BxD, u_k_BxKxD)
        # Targets side by side per example ([B, K+1], then flattened): du_o and du_k are the
        # two slices of one outer product (gradients.neg_sampling_grads), so XLA folds this
        # concatenation away and the update rows are one broadcast [B, K+1, D] product fused
        # into the scatter. Concatenating along N instead (all positives, then all negatives)
        # made XLA:CPU build the rows in a separate pass that halved the step's speed.
        ids = jnp.concatenate([target_B[:, None], negatives_BxK], axis=1).reshape(-1)
        grads = jnp.concatenate([du_o_BxD[:, None, :], du_k_BxKxD], axis=1).reshape(b * (k + 1), -1)
        mask_rows = jnp.repeat(jnp.arange(b), k + 1)
        return loss_B, dh_BxD, ids, grads, mask_rows, jnp.ones(ids.shape, bool)
    if cfg.model.loss == "hs":
        points_BxL, codes_BxL = tables.points[target_B], tables.codes[target_B]
        depth = tables.points.shape[1]
        path_BxL = jnp.arange(depth)[None, :] < tables.lengths[target_B][:, None]
        nodes_BxLxD = params["node_vecs"][points_BxL]
        fn = _rows_fn(
            gradients.hierarchical_softmax_grads_batch,
            losses.hierarchical_softmax_loss,
            2,
            autodiff,
        )
        loss_B, dh_BxD, dn_BxLxD = fn(h_BxD, nodes_BxLxD, codes_BxL, path_BxL)
        mask_rows = jnp.repeat(jnp.arange(b), depth)
        return (
            loss_B,
            dh_BxD,
            points_BxL.reshape(-1),
            dn_BxLxD.reshape(b * depth, -1),
            mask_rows,
            path_BxL.reshape(-1),
        )
    raise ValueError(f"no row-sparse output layer for --loss {cfg.model.loss}")


def row_gradients(cfg: Config, params: Params, tables: Tables, batch: dict, key: jax.Array):
    """Per-example loss and, for each table, (ids [N], weighted grads [N, D], valid [N]).

    Returns:
      ``(loss_B, updates, dense)``: ``updates[name] = (ids, grads, valid)`` for row updates
      and ``dense[name] = grad_VxD`` for the full softmax's output table.
    """
    mask_B = batch["mask"]
    center = params["center_vecs"]
    ctx_mask = None
    if cfg.model.model == "sg":
        in_ids = batch["center"]
        h_BxD = center[in_ids]
        target_B = batch["context"]
    else:
        ctx_BxC, ctx_mask = batch["context"], batch["context_mask"]
        ctx_BxCxD = center[ctx_BxC]
        h_BxD = jax.vmap(losses.cbow_hidden, in_axes=(0, 0, None))(
            ctx_BxCxD, ctx_mask, cfg.model.cbow_mean
        )
        target_B = batch["center"]

    updates: dict[str, tuple] = {}
    dense: dict[str, jax.Array] = {}
    w_B = mask_B.astype(h_BxD.dtype)
    if cfg.model.loss == "softmax":
        if cfg.train.grad == "autodiff":

            def total(h, u):
                per_example = losses.naive_softmax_loss_batch(h, target_B, u)
                return jnp.sum(w_B * per_example), per_example

            (_, loss_B), (dh_BxD, d_out) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
                h_BxD, params["outside_vecs"]
            )
            dh_BxD = dh_BxD / jnp.where(w_B > 0, w_B, 1.0)[:, None]
        else:
            loss_B, dh_BxD, d_out = gradients.naive_softmax_grads_batch(
                h_BxD, target_B, params["outside_vecs"], w_B
            )
        dense["outside_vecs"] = d_out
    else:
        loss_B, dh_BxD, ids, grads, owner, valid = _output_rows(
            cfg, params, tables, h_BxD, target_B, key
        )
        w_N = w_B[owner] * valid.astype(w_B.dtype)
        updates[output_table(cfg)] = (ids, grads * w_N[:, None], valid & (w_N > 0))

    dh_BxD = dh_BxD * w_B[:, None]
    if cfg.model.model == "sg":
        updates["center_vecs"] = (in_ids, dh_BxD, w_B > 0)
    else:
        d_ctx_BxCxD = jax.vmap(gradients.cbow_context_grads, in_axes=(0, 0, None, None))(
            dh_BxD, ctx_mask, cfg.model.cbow_mean, cfg.model.cbow_grad
        )
        valid = (ctx_mask > 0) & (w_B[:, None] > 0)
        updates["center_vecs"] = (
            ctx_BxC.reshape(-1),
            d_ctx_BxCxD.reshape(-1, d_ctx_BxCxD.shape[-1]),
            valid.reshape(-1),
        )
    return loss_B * w_B, updates, dense


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
    # instead of copying all of [V] each step (an O(V) step; tests/test_train.py checks the HLO).
    return scale_N, counts_V.at[ids_N].set(jnp.minimum(n_N, 0.0))


_IN_PLACE_OPS = {
    "parameter",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "while",
    "conditional",
    "scatter",
}


def _hlo_shape_and_opcode(line: str) -> tuple[str, str] | None:
    """``(result shape, opcode)`` of one HLO instruction line, or ``None`` for other lines."""
    _, eq, rest = line.partition(" = ")
    if not eq:
        return None
    end = 0
    if rest.startswith("("):  # a tuple shape: up to its matching parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = i
                break
    end = rest.find(" ", end)
    m = re.match(r"([a-z0-9-]+)\(", rest[end + 1 :]) if end > 0 else None
    return (rest[:end], m.group(1)) if m else None


def vocab_sized_ops(hlo_text: str, vocab_size: int) -> list[str]:
    """Instructions of a compiled step that write a whole [V] or [V, D] buffer: O(V) work.

    A row-sparse step may only pass the tables through (parameters, tuples, loops) and scatter
    into them in place. A copy, fill or elementwise pass over a V-sized buffer means the step's
    cost grows with V; XLA inserts such copies silently when it cannot order a table's reads
    before its in-place write. The jaxpr cannot show them: read the compiled HLO
    (``jax.jit(f).lower(...).compile().as_text()``).

    Args:
      hlo_text: the optimized HLO module text.
      vocab_size: V (tables with V or V-1 leading rows are checked).

    Returns:
      The offending instruction lines (empty when the step is O(1) in V).
    """
    v_sized = re.compile(rf"\[({vocab_size}|{vocab_size - 1})(,\d+)*\]")
    bad = []
    for line in hlo_text.splitlines():
        parsed = _hlo_shape_and_opcode(line)
        if parsed is None or not v_sized.search(parsed[0]) or parsed[1] in _IN_PLACE_OPS:
            continue
        if parsed[1] == "fusion" and re.search(r"calls=%\S*scatter", line):
            continue  # a scatter fused with its update computation, still in place
        if parsed[1] == "custom-call" and "output_to_operand_aliasing" in line:
            continue  # an FFI kernel updating its operands in place (update="fused")
        bad.append(line.strip())
    return bad


def fused_update(cfg: Config, state: TrainState, batch: dict, key: jax.Array, lr: jax.Array):
    """``update="fused"``: one pass of the C++ kernels of :mod:`w2v_jax.fused`, in place.

    word2vec.c's own rule: pairs are applied one after another (each at fresh parameters), on
    ``threads`` threads that share the tables without locks (Hogwild, as word2vec.c and gensim
    do), with the exact sigmoid. Negatives are drawn inside the kernel from the same alias
    table as the pure-JAX path, seeded from ``key``. With ``threads=1`` the update is
    deterministic; with more, rows that two threads touch at once make it timing-dependent.

    Returns:
      ``(params, loss_B)``.
    """
    from w2v_jax import fused

    p, t, m = state.params, state.tables, cfg.model
    threads = cfg.train.threads or None
    seed = fused.seed_words(key)
    exact = m.cbow_grad == "exact"
    if m.model == "sg" and m.loss == "ns":
        cv, ov, loss_B = fused.sgns_update_sampled(
            p["center_vecs"],
            p["outside_vecs"],
            batch["center"],
            batch["context"],
            batch["mask"],
            t.noise.prob,
            t.noise.alias,
            seed,
            lr,
            negative=m.negative,
            num_threads=threads,
        )
        return {"center_vecs": cv, "outside_vecs": ov}, loss_B
    if m.model == "sg":
        cv, nv, loss_B = fused.sg_hs_update(
            p["center_vecs"],
            p["node_vecs"],
            batch["center"],
            batch["context"],
            t.points,
            t.codes,
            t.lengths,
            batch["mask"],
            lr,
            num_threads=threads,
        )
        return {"center_vecs": cv, "node_vecs": nv}, loss_B
    if m.loss == "ns":
        cv, ov, loss_B = fused.cbow_ns_update_sampled(
            p["center_vecs"],
            p["outside_vecs"],
            batch["center"],
            batch["context"],
            batch["context_mask"],
            batch["mask"],
            t.noise.prob,
            t.noise.alias,
            seed,
            lr,
            negative=m.negative,
            cbow_mean=m.cbow_mean,
            exact_grad=exact,
            num_threads=threads,
        )
        return {"center_vecs": cv, "outside_vecs": ov}, loss_B
    cv, nv, loss_B = fused.cbow_hs_update(
        p["center_vecs"],
        p["node_vecs"],
        batch["center"],
        batch["context"],
        batch["context_mask"],
        t.points,
        t.codes,
        t.lengths,
        batch["mask"],
        lr,
        cbow_mean=m.cbow_mean,
        exact_grad=exact,
        num_threads=threads,
    )
    return {"center_vecs": cv, "node_vecs": nv}, loss_B


def make_step(cfg: Config) -> Callable:
    """The un-jitted single step ``(state, batch, key) -> (state, metrics)``.

    ``batch`` is a dict of arrays: ``center``, ``context``, ``mask`` (plus ``context_mask`` for
    CBOW) and ``progress`` [] float32, the run fraction that sets the learning rate.

    Metrics: ``loss_sum`` and ``examples`` (masked), ``lr``, and ``grad_norm``, the norm of the
    input-side (``center_vecs``) row gradients, plus the dense softmax gradient where there is
    one. The output-side rows are left out on purpose: reading all B(K+1) of them again cost 22%
    of a skip-gram SGNS step on CPU (9.9-10.4 vs 7.7-8.2 ms, V=30k, B=4096), while divergence
    shows first on the input side, whose gradient sums every output row's error.
    """
    validate(cfg)
    if cfg.train.update == "fused":
        from w2v_jax import fused

        if not fused.fused_available():
            raise ValueError(
                f"--update fused: the C++ kernel is unavailable ({fused.unavailable_reason()}); "
                "use --update sparse"
            )
        alpha, min_alpha = cfg.alpha, cfg.train.min_alpha

        def fused_step(state: TrainState, batch: dict, key: jax.Array):
            key = jax.random.fold_in(key, state.step)
            lr = optim.linear_decay(batch["progress"], alpha, min_alpha).astype(jnp.float32)
            params, loss_B = fused_update(cfg, state, batch, key, lr)
            metrics = {
                "loss_sum": jnp.sum(loss_B).astype(jnp.float32),
                "examples": jnp.sum(batch["mask"]).astype(jnp.float32),
                "lr": lr,
                "grad_norm": jnp.zeros((), jnp.float32),  # not formed by the fused kernels
            }
            return state.replace(params=params, step=state.step + 1), metrics

        return fused_step
    tx = optim.make_optimizer(cfg.train.optimizer, cfg.alpha) if uses_optax_state(cfg) else None
    alpha, min_alpha = cfg.alpha, cfg.train.min_alpha

    def step(state: TrainState, batch: dict, key: jax.Array):
        key = jax.random.fold_in(key, state.step)
        lr = optim.linear_decay(batch["progress"], alpha, min_alpha)
        loss_B, updates, dense = row_gradients(cfg, state.params, state.tables, batch, key)
        params = dict(state.params)
        opt_state = dict(state.opt_state)
        scratch = state.scratch
        sq = jnp.zeros((), jnp.float32)
        for name, (ids, grads, valid) in updates.items():
            table = params[name]
            if math.isfinite(cfg.train.dup_cap):
                scale, scratch = duplicate_scale(scratch, ids, valid, cfg.train.dup_cap)
                grads = grads * scale[:, None].astype(grads.dtype)
            if name == "center_vecs":  # the [B, D] input side only: see the docstring
                sq = sq + jnp.sum(jnp.square(grads.astype(jnp.float32)))
            if cfg.train.update == "dense":
                g_VxD = jnp.zeros_like(table).at[ids].add(grads.astype(table.dtype))
                params[name], opt_state[name] = optim.dense_apply(
                    tx, table, opt_state[name], g_VxD, lr
                )
            elif tx is None:  # sparse SGD: the fast path, a single scatter-add per table
                params[name] = table.at[ids].add((-lr * grads).astype(table.dtype))
            else:
                ids = jnp.where(valid, ids, table.shape[0])
                params[name], opt_state[name] = optim.sparse_apply(
                    tx, table, opt_state[name], ids, grads, lr
                )
        for name, g_VxD in dense.items():
            sq = sq + jnp.sum(jnp.square(g_VxD.astype(jnp.float32)))
            table = params[name]
            if tx is None:
                params[name] = table - (lr * g_VxD).astype(table.dtype)
            else:
                params[name], opt_state[name] = optim.dense_apply(
                    tx, table, opt_state[name], g_VxD, lr
                )
        metrics = {
            "loss_sum": jnp.sum(loss_B).astype(jnp.float32),
            "examples": jnp.sum(batch["mask"]).astype(jnp.float32),
            "lr": jnp.asarray(lr, jnp.float32),
            "grad_norm": jnp.sqrt(sq),
        }
        new_state = state.replace(
            params=params, opt_state=opt_state, step=state.step + 1, scratch=scratch
        )
        return new_state, metrics

    return step


def make_train_step(cfg: Config) -> Callable:
    """``jax.jit`` of :func:`make_step` with the state donated (tables updated in place)."""
    return jax.jit(make_step(cfg), donate_argnums=0)


def make_train_steps(cfg: Config) -> Callable:
    """Several steps per call: ``(state, batches [S, ...], key) -> (state, metrics [S])``.

    One ``lax.scan`` over the leading axis of every batch field. Fewer dispatches and fewer
    fresh temporaries than S separate calls (measured in BENCHMARKS.md).

    ``batches`` may hold ``active`` [S] bool: a step whose flag is False is skipped (``lax.cond``;
    the state passes through untouched, ``state.step`` included, and its metrics are zeros).
    The host loop pads a run's last, shorter group with such steps, so that every call has the
    same shape and XLA compiles the scan once (a second compile cost 1.6 s, a third of a
    one-epoch run on the default corpus).
    """
    step = make_step(cfg)

    def steps(state, batches, key):
        batches = dict(batches)
        active_S = batches.pop("active", None)
        if active_S is None:
            return jax.lax.scan(lambda s, b: step(s, b, key), state, batches)
        first = jax.tree.map(lambda x: x[0], batches)
        shapes = jax.eval_shape(lambda s, b: step(s, b, key)[1], state, first)
        skipped = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

        def body(s, xs):
            b, on = xs
            return jax.lax.cond(on, lambda s: step(s, b, key), lambda s: (s, skipped), s)

        return jax.lax.scan(body, state, (batches, active_S))

    return jax.jit(steps, donate_argnums=0)


# ----------------------------------------------------------------------------- the host loop


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      config: the validated config of the run.
      vocab: the :class:`~w2v_jax.vocab.Vocab` (row i of every table is ``vocab.words[i]``).
      params: host numpy copies of the trained tables.
      history: one dict per logging window (loss = mean per example in that window).
      epoch_loss: mean loss per example of each epoch.
      words_per_sec: raw corpus words x epochs / training wall time (compilation included).
      train_seconds: wall time of the training loop (vocabulary and encoding excluded).
    """

    config: Config
    vocab: Any
    params: dict[str, np.ndarray]
    history: list[dict[str, float]]
    epoch_loss: list[float]
    words_per_sec: float
    train_seconds: float

    def vectors(self, which: str = "in"):
        """A :class:`~w2v_jax.vectors.Vectors` of the input, output or summed (w + c) vectors."""
        from w2v_jax.vectors import from_tables

        return from_tables(
            self.vocab.words, self.params["center_vecs"], self.params.get("outside_vecs"), which
        )


def _to_device_batch(batch, progress: float) -> dict[str, np.ndarray]:
    fields = batch._asdict()
    fields["progress"] = np.float32(progress)
    return fields


def _stack(group: list[dict[str, np.ndarray]], size: int) -> dict[str, np.ndarray]:
    """``size`` stacked batches with ``active`` [size] bool; a short group is padded with
    inactive copies of its last batch (skipped by the step, see :func:`make_train_steps`)."""
    padded = group + [group[-1]] * (size - len(group))
    out = {k: np.stack([b[k] for b in padded]) for k in group[0]}
    out["active"] = np.arange(size) < len(group)
    return out


def _grouped(stream: Iterator, size: int) -> Iterator[tuple[list, Any]]:
    """Groups of ``size`` (batch, info) pairs; the last group may be shorter."""
    group: list = []
    info = None
    for batch, info in stream:
        group.append(_to_device_batch(batch, info.progress))
        if len(group) == size:
            yield group, info
            group = []
    if group:
        yield group, info


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _checkpoint_payload(cfg, vocab, state, position, words_done, acc) -> dict[str, Any]:
    host = jax.device_get(
        {"params": state.params, "opt_state": state.opt_state, "step": state.step}
    )
    return {
        "format": 1,
        "config": dataclasses.asdict(cfg),
        "vocab": {
            "words": list(vocab.words),
            "counts": np.asarray(vocab.counts),
            "total_words": int(vocab.total_words),
        },
        "params": host["params"],
        "opt_state": serialization.to_state_dict(host["opt_state"]),
        "step": np.asarray(host["step"]),
        "position": np.asarray(tuple(position), np.int64),
        "words_done": int(words_done),
        "accumulators": {k: np.asarray(v, np.float64) for k, v in acc.items()},
    }


_MODEL_FIELDS = ("model", "loss", "dim", "negative")


def _check_resumable(ckpt_cfg: Config, cfg: Config, path: Path) -> None:
    """A checkpoint resumes only the run that wrote it: model, data and seed must match."""
    mismatch = [f for f in _MODEL_FIELDS if getattr(ckpt_cfg.model, f) != getattr(cfg.model, f)]
    mismatch += [
        f
        for f in ("seed", "batch_size", "epochs", "steps_per_call")
        if getattr(ckpt_cfg.train, f) != getattr(cfg.train, f)
    ]
    if ckpt_cfg.data != cfg.data:
        mismatch.append("data settings")
    if mismatch:
        raise ValueError(
            f"checkpoint {path} was written by a different run (differs in: "
            f"{', '.join(mismatch)}); use another --out or drop --resume"
        )


def train(
    corpus: Any = "wiki-sample",
    config: Config | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callable[[dict[str, float]], None]] = (),
    vocab: Any = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Trains word2vec on ``corpus`` (a path, a folder, or a named corpus such as ``wiki-sample``).

    Args:
      corpus: anything :func:`w2v_jax.corpus.resolve_corpus` accepts, or a ``CorpusSource``.
      config: the run's :class:`~w2v_jax.config.Config`; ``None`` means word2vec.c's defaults.
      out: run folder for ``checkpoint.w2v``; ``None`` writes no checkpoint.
      resume: continue from ``out/checkpoint.w2v``; the result is bit-identical to a run that
        was never interrupted (same machine, same config).
      progress: print a progress line (words/s, loss, lr, ETA) to stderr every ``log_every_s``.
      callbacks: called with each logging row (a dict), e.g. by experiment scripts.
      vocab: a prebuilt vocabulary (skips the counting pass).
      max_steps: stop after this many steps (for tests and profiling).

    Returns:
      A :class:`TrainResult`.
    """

    cfg = validate(config if config is not None else Config())
    out = Path(out) if out is not None else None
    ckpt_path = out / "checkpoint.w2v" if out is not None else None
    ckpt = None
    if resume:
        if ckpt_path is None:
            raise ValueError("--resume needs --out (the folder holding checkpoint.w2v)")
        from w2v_jax.checkpoint import load_checkpoint

        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(from_dict(ckpt["config"]), cfg, ckpt_path)
        v = ckpt["vocab"]
        vocab = Vocab(
            words=tuple(v["words"]),
            counts=np.asarray(v["counts"], np.int64),
            total_words=int(v["total_words"]),
        )

    source = corpus
    if isinstance(corpus, (str, Path)):
        source = corpus_lib.resolve_corpus(
            corpus, lowercase=cfg.data.lowercase, max_sentence_len=cfg.data.max_sentence_len
        )
    if vocab is None:
        vocab = build_vocab(source.sentences(), cfg.data)
    vsize = len(vocab.words)
    if cfg.model.loss == "softmax" and vsize > MAX_SOFTMAX_VOCAB:
        raise ValueError(
            f"--loss softmax materialises [B, V] logits; V={vsize} > {MAX_SOFTMAX_VOCAB}. "
            "Use --loss ns or hs, or raise --min-count"
        )
    if cfg.model.loss == "ns":
        sampling.check_negatives(vsize, cfg.model.negative)
    if cfg.model.loss == "hs" and vsize < 2:
        raise ValueError(f"--loss hs needs at least 2 words in the vocabulary, got V={vsize}")
    encoded = corpus_lib.encode_corpus(source, vocab)

    tables = make_tables(cfg, vocab.counts)

    base_key = jax.random.key(cfg.train.seed)
    init_key, step_key = jax.random.split(base_key)
    state = init_state(cfg, init_params(cfg, vsize, init_key), tables)
    start = batches_lib.Position(0, 0, 0)
    words_done = 0
    acc = {"window_loss": 0.0, "window_n": 0.0, "epoch_loss": 0.0, "epoch_n": 0.0}
    epoch_loss: list[float] = []
    if ckpt is not None:
        params = {k: jnp.asarray(np.asarray(a)) for k, a in ckpt["params"].items()}
        opt_state = serialization.from_state_dict(state.opt_state, ckpt["opt_state"])
        state = state.replace(
            params=params,
            opt_state=jax.device_put(opt_state),
            step=jnp.asarray(ckpt["step"], jnp.int32),
        )
        start = batches_lib.Position(*(int(x) for x in ckpt["position"]))
        words_done = int(ckpt["words_done"])
        acc.update(
            {
                k: float(v)
                for k, v in ckpt["accumulators"].items()
                if not k.startswith("epoch_loss_")
            }
        )
        epoch_loss = [
            float(ckpt["accumulators"][k])
            for k in sorted(
                (k for k in ckpt["accumulators"] if k.startswith("epoch_loss_")),
                key=lambda k: int(k.rsplit("_", 1)[1]),
            )
        ]

    steps_fn = make_train_steps(cfg)
    stream = batches_lib.iterate_batches(
        encoded,
        vocab,
        cfg.data,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        model=cfg.model.model,
        epochs=cfg.train.epochs,
        start=start,
    )
    stream = batches_lib.prefetch(stream)
    total_words = cfg.train.epochs * encoded.raw_words
    history: list[dict[str, float]] = []
    pending: list[tuple[dict, int, int]] = []  # (device metrics, epoch, real steps) not pulled
    t0 = time.perf_counter()
    words_at_start = words_done
    last_log = last_ckpt = t0
    epoch = start.epoch
    position = start

    def pull() -> None:
        """Moves pending device metrics to the host accumulators (the only sync point)."""
        nonlocal epoch
        for metrics, ep, n_real in jax.device_get(pending):
            metrics = {k: v[:n_real] for k, v in metrics.items()}  # drop padded steps
            if ep != epoch:
                epoch_loss.append(acc["epoch_loss"] / max(acc["epoch_n"], 1.0))
                acc["epoch_loss"] = acc["epoch_n"] = 0.0
                epoch = ep
            ls, n = float(np.sum(metrics["loss_sum"])), float(np.sum(metrics["examples"]))
            if not (math.isfinite(ls) and np.all(np.isfinite(metrics["grad_norm"]))):
                raise FloatingPointError(
                    f"non-finite loss or gradient at step {int(state.step)}: lower --alpha"
                )
            acc["window_loss"] += ls
            acc["window_n"] += n
            acc["epoch_loss"] += ls
            acc["epoch_n"] += n
            acc["lr"] = float(metrics["lr"][-1])
        pending.clear()

    def log(now: float) -> None:
        pull()
        if acc["window_n"] == 0:  # nothing trained since the last line: no empty row
            return
        elapsed = now - t0
        done = words_done - words_at_start
        wps = done / max(elapsed, 1e-9)
        frac = words_done / max(total_words, 1)
        row = {
            "step": float(state.step),
            "epoch": float(min(position.epoch, cfg.train.epochs - 1)),
            "progress": frac,
            "loss": acc["window_loss"] / max(acc["window_n"], 1.0),
            "lr": acc.get("lr", cfg.alpha),
            "words_per_sec": wps,
            "elapsed": elapsed,
        }
        acc["window_loss"] = acc["window_n"] = 0.0
        history.append(row)
        for cb in callbacks:
            cb(row)
        if progress:
            eta = (total_words - words_done) / wps if wps > 0 else float("inf")
            print(
                f"epoch {int(row['epoch']) + 1}/{cfg.train.epochs} {100 * frac:5.1f}%  "
                f"loss {row['loss']:.4f}  lr {row['lr']:.5f}  {wps / 1e3:,.0f}k words/s  "
                f"ETA {_fmt_eta(eta)}",
                file=sys.stderr,
                flush=True,
            )

    def checkpoint() -> None:
        pull()
        all_acc = dict(acc)
        all_acc.update({f"epoch_loss_{i}": v for i, v in enumerate(epoch_loss)})
        all_acc.pop("lr", None)
        from w2v_jax.checkpoint import save_checkpoint

        save_checkpoint(
            ckpt_path, _checkpoint_payload(cfg, vocab, state, position, words_done, all_acc)
        )

    for group, info in _grouped(stream, cfg.train.steps_per_call):
        if max_steps is not None and int(state.step) >= max_steps:
            break
        ep = position.epoch
        state, metrics = steps_fn(state, _stack(group, cfg.train.steps_per_call), step_key)
        pending.append((metrics, ep, len(group)))
        position, words_done = info.position, info.words_done
        now = time.perf_counter()
        if now - last_log >= cfg.train.log_every_s:
            log(now)
            last_log = now
        if (
            ckpt_path is not None
            and cfg.train.checkpoint_every_s > 0
            and now - last_ckpt >= cfg.train.checkpoint_every_s
        ):
            checkpoint()
            last_ckpt = time.perf_counter()
    jax.block_until_ready(state.params)
    log(time.perf_counter())
    if acc["epoch_n"] > 0:
        epoch_loss.append(acc["epoch_loss"] / acc["epoch_n"])
        acc["epoch_loss"] = acc["epoch_n"] = 0.0
    if ckpt_path is not None:
        checkpoint()
    seconds = time.perf_counter() - t0
    return TrainResult(
        config=cfg,
        vocab=vocab,
        params=jax.device_get(state.params),
        history=history,
        epoch_loss=epoch_loss,
        words_per_sec=(words_done - words_at_start) / max(seconds, 1e-9),
        train_seconds=seconds,
    )
