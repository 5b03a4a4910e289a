r"""Optimisers for embedding tables: word2vec's decayed SGD and a row-sparse adapter for optax.

Every update in word2vec touches only the rows named in the batch. This module keeps that
property for any *element-wise* optax transformation (``sgd``, ``adagrad``, ``adam``,
``rmsprop``, ...):

1. combine duplicate ids: ``g_u = \sum_{i: id_i = u} g_i`` (a segment sum over the sorted
   unique ids, fixed size ``N`` so the step compiles once);
2. gather the table rows and the optimizer-state rows of the unique ids;
3. run the optax ``update`` on those rows only;
4. scatter the new rows back.

Lazy semantics. Rows that are not in the batch are left exactly as they are: their Adam moments
do not decay and their Adagrad accumulators do not change. For SGD and Adagrad this is the same
as the dense update (a zero gradient changes nothing); for Adam and RMSprop it is the "lazy" rule
of TensorFlow's ``LazyAdam``: a row's moments decay only on steps that touch it, while the bias
correction uses the table's global step count. Scalars in the optimizer state (such as Adam's
``count``) are therefore shared per table, not kept per row.

The learning rate follows word2vec.c's linear decay (gensim's form):
``lr(p) = alpha - (alpha - min_alpha) * p`` for progress ``p`` in [0, 1] measured in raw corpus
words, so ``lr`` reaches ``min_alpha`` at the end of the last epoch. The schedule is fed into the
optax state through ``optax.inject_hyperparams`` (:func:`scheduled`), so any optax rule follows
it; plain SGD is :class:`ScheduledSGD`, which the step applies as one scatter-add. An optimizer
is a value passed to the step, never a name it branches on; a user's own optax rule (e.g.
``optax.adagrad(0.1)``) works too, with its own learning rate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "adagrad": optax.adagrad,
    "adam": optax.adam,
    "rmsprop": optax.rmsprop,
}


def linear_decay(progress: jax.Array, alpha: float, min_alpha: float) -> jax.Array:
    """``alpha - (alpha - min_alpha) * progress`` with progress clipped to [0, 1] (gensim)."""
    p = jnp.clip(progress, 0.0, 1.0)
    return alpha - (alpha - min_alpha) * p


def word2vec_schedule(alpha: float, min_alpha: float) -> Callable[[jax.Array], jax.Array]:
    """word2vec.c's learning rate as a schedule of run progress: :func:`linear_decay`."""
    return functools.partial(linear_decay, alpha=alpha, min_alpha=min_alpha)


class ScheduledSGD(NamedTuple):
    """Plain SGD whose learning rate is a schedule of run progress: ``update = -lr(p) * g``.

    An optax-style ``(init, update)`` pair (``update`` takes ``progress=`` as an extra argument,
    as ``optax.GradientTransformationExtraArgs`` do) plus its ``schedule``. The row-sparse step
    recognises it and applies it as one scatter-add of ``-lr * g`` into the touched rows, the
    fast path; everything else goes through :func:`sparse_apply`.
    """

    init: Callable
    update: Callable
    schedule: Callable[[jax.Array], jax.Array]


class Scheduled(NamedTuple):
    """An optax rule whose ``learning_rate`` hyperparameter follows ``schedule(progress)``.

    ``update(g, state, params, progress=p)`` writes ``schedule(p)`` into the
    ``optax.inject_hyperparams`` state, then runs the rule.
    """

    init: Callable
    update: Callable
    schedule: Callable[[jax.Array], jax.Array]


def sgd(schedule: Callable[[jax.Array], jax.Array]) -> ScheduledSGD:
    """word2vec's update rule: ``-schedule(progress) * g``, no state."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, progress):
        del params
        lr = schedule(progress)
        return jax.tree.map(lambda g: (-lr * g).astype(g.dtype), updates), state

    return ScheduledSGD(init, update, schedule)


def scheduled(
    make: Callable[..., optax.GradientTransformation],
    schedule: Callable[[jax.Array], jax.Array],
    **hyperparams: Any,
) -> Scheduled:
    """``make(learning_rate=schedule(progress), **hyperparams)`` re-evaluated every step.

    Args:
      make: an optax alias taking ``learning_rate`` (``optax.adagrad``, ``optax.adam``, ...).
      schedule: ``progress -> lr``.
    """
    inner = optax.inject_hyperparams(make)(learning_rate=schedule(0.0), **hyperparams)

    def update(updates, state, params=None, *, progress):
        return inner.update(updates, set_learning_rate(state, schedule(progress)), params)

    return Scheduled(inner.init, update, schedule)


def make_optimizer(name: str, alpha: float, min_alpha: float = 1e-4) -> ScheduledSGD | Scheduled:
    """A built-in rule by name, with word2vec's linear decay from ``alpha`` to ``min_alpha``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    schedule = word2vec_schedule(alpha, min_alpha)
    if name == "sgd":
        return sgd(schedule)
    return scheduled(OPTIMIZERS[name], schedule)


def from_config(cfg) -> ScheduledSGD | Scheduled:
    """The optimizer a :class:`~w2v_jax.config.Config` names (``--optimizer``, ``--alpha``)."""
    return make_optimizer(cfg.train.optimizer, cfg.alpha, cfg.train.min_alpha)


def learning_rate(tx: Any, progress: jax.Array) -> jax.Array:
    """The learning rate ``tx`` uses at ``progress`` (float32 NaN when it has no schedule)."""
    schedule = getattr(tx, "schedule", None)
    if schedule is None:
        return jnp.full((), jnp.nan, jnp.float32)
    return schedule(progress)


def extra_args(tx: Any, progress: jax.Array) -> dict[str, jax.Array]:
    """The extra ``update`` arguments ``tx`` takes: ``progress`` for the scheduled rules here,
    none for a plain optax transformation (its own schedule counts steps)."""
    return {"progress": progress} if hasattr(tx, "schedule") else {}


def set_learning_rate(opt_state: Any, lr: jax.Array) -> Any:
    """Returns ``opt_state`` (an ``InjectHyperparamsState``) with its learning rate replaced."""
    hyper = dict(opt_state.hyperparams)
    old = hyper["learning_rate"]
    hyper["learning_rate"] = jnp.asarray(lr, dtype=old.dtype)
    return opt_state._replace(hyperparams=hyper)


def _is_row_leaf(leaf: Any, table_shape: tuple[int, ...]) -> bool:
    return hasattr(leaf, "shape") and tuple(leaf.shape) == table_shape


def combine_duplicates(
    ids_N: jax.Array, grads_NxD: jax.Array, num_rows: int
) -> tuple[jax.Array, jax.Array]:
    r"""Sums the gradients of repeated ids: ``g_u = \sum_{i: ids_i = u} g_i``.

    Args:
      ids_N: [N] int32 row ids; ids equal to ``num_rows`` are "no row" (masked examples).
      grads_NxD: [N, D] row gradients.
      num_rows: V, the table's row count.

    Returns:
      ``(unique_N, summed_NxD)``: sorted unique ids padded with ``num_rows`` (fixed size N) and
      their summed gradients; padded slots carry zeros.
    """
    n = ids_N.shape[0]
    unique_N = jnp.unique(ids_N, size=n, fill_value=num_rows)
    slot_N = jnp.searchsorted(unique_N, ids_N)
    summed_NxD = jax.ops.segment_sum(grads_NxD, slot_N, num_segments=n)
    return unique_N, summed_NxD


def sparse_apply(
    tx: optax.GradientTransformation,
    table_VxD: jax.Array,
    opt_state: Any,
    ids_N: jax.Array,
    grads_NxD: jax.Array,
    **extra: Any,
) -> tuple[jax.Array, Any]:
    """Row-sparse optax update of one table (see the module docstring for the semantics).

    Args:
      tx: an element-wise optax transformation (:func:`make_optimizer`, or any optax rule whose
        state leaves are per-element or scalar, e.g. ``optax.adagrad(0.1)``).
      table_VxD: [V, D] parameters.
      opt_state: ``tx``'s state for this table (leaves of shape [V, D] are per-row).
      ids_N: [N] int32 touched rows; ``V`` marks an entry to ignore.
      grads_NxD: [N, D] gradient for each entry of ``ids_N``.
      **extra: extra ``update`` arguments (``progress=`` for the scheduled rules, see
        :func:`extra_args`).

    Returns:
      ``(table_VxD, opt_state)`` with only the touched rows changed.
    """
    v = table_VxD.shape[0]
    shape = tuple(table_VxD.shape)
    unique_N, g_NxD = combine_duplicates(ids_N, grads_NxD, v)

    def gather(leaf):
        if _is_row_leaf(leaf, shape):
            return leaf.at[unique_N].get(mode="fill", fill_value=0)
        return leaf

    p_NxD = gather(table_VxD)
    rows_state = jax.tree_util.tree_map(gather, opt_state)
    upd_NxD, new_rows_state = tx.update(g_NxD.astype(p_NxD.dtype), rows_state, p_NxD, **extra)
    table_VxD = table_VxD.at[unique_N].set(optax.apply_updates(p_NxD, upd_NxD), mode="drop")

    def scatter(full, rows):
        if _is_row_leaf(full, shape):
            return full.at[unique_N].set(rows, mode="drop")
        return rows

    return table_VxD, jax.tree_util.tree_map(scatter, opt_state, new_rows_state)


def dense_apply(
    tx: optax.GradientTransformation,
    table_VxD: jax.Array,
    opt_state: Any,
    grads_VxD: jax.Array,
    **extra: Any,
) -> tuple[jax.Array, Any]:
    """The dense optax reference: every row is updated (a zero gradient included)."""
    upd_VxD, opt_state = tx.update(grads_VxD.astype(table_VxD.dtype), opt_state, table_VxD, **extra)
    return optax.apply_updates(table_VxD, upd_VxD), opt_state
