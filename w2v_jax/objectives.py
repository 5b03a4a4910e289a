r"""Objectives as values: what the output layer predicts, and the row gradients that train it.

An :class:`Objective` is a bundle of pure functions and names, built once from the config, that
every backend consumes the same way (the pure-JAX step, the sharded step, the fused CPU
kernel's dispatch):

* ``table``: the output table it trains (``outside_vecs`` or ``node_vecs``) and
  ``table_rows(V)``, its row count;
* ``make_consts(counts)``: the constant arrays it needs, built once from the word counts (the
  noise alias table, the Huffman paths, ``log K P_n``);
* ``targets(consts, predicted, key)``: for a batch of predicted words [B], the output rows to
  score as :class:`Targets` (ids, labels, mask, bias), each [B, T];
* ``row_grads(h, rows, targets)``: the per-example loss and the gradients with respect to ``h``
  and to each gathered target row (the hand derivations of :mod:`w2v_jax.gradients`);
* ``row_loss(h, rows, targets)``: the same loss for one example (:mod:`w2v_jax.losses`), the
  reference that :func:`autodiff` and the gradient tests differentiate.

SGNS, NCE and hierarchical softmax are one binary logistic computation over gathered rows
(:func:`w2v_jax.losses.logistic_loss`): labels ``[1, 0..0]`` over the predicted word and K noise
words, or ``1 - code`` over the inner nodes of its Huffman path; NCE adds the score offsets
``log K P_n(w)``. They differ only in :attr:`Objective.targets`. The full softmax has no small
set of targets: it keeps the dense path (``dense_grads``, a [V, D] gradient).

A new loss is a new value: write its per-example loss and hand gradient, pick (or write) a
target builder, and pass the objective to :func:`w2v_jax.train` (``examples/custom_objective.py``).
Nothing downstream branches on a loss name; :func:`from_config` is the one place a name becomes an
objective.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax import config as config_lib
from w2v_jax import gradients, losses, sampling
from w2v_jax import huffman as huffman_lib


class Targets(NamedTuple):
    """The output rows a batch scores, and what each row should say.

    Attributes:
      ids: [B, T] int32 rows of the objective's output table.
      labels: [B, T] int32 in {0, 1}: 1 for the predicted word or the branch taken, 0 for noise
        or the branch not taken.
      mask: [B, T] bool, False on padding (past the end of a Huffman code).
      bias: [B, T] float32 score offsets (NCE's ``log K P_n(w)``), or ``None`` for 0.
    """

    ids: jax.Array
    labels: jax.Array
    mask: jax.Array
    bias: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    """One output-layer loss as a value (see the module docstring).

    Attributes:
      name: a label for logs and configs (``"ns"``, ``"hs"``, ``"nce"``, ``"softmax"``, yours).
      table: name of the output table it trains.
      table_rows: ``V -> rows`` of that table (``V - 1`` inner nodes for HS).
      make_consts: ``counts [V] int64 -> pytree`` of constant host arrays (``None``: none).
      check_vocab: ``V -> None``, raises a one-line ``ValueError`` when V cannot work.
      targets: ``(consts, predicted [B] int32, key) -> Targets`` ([B, T] each), jittable.
      row_grads: ``(h [B, D], rows [B, T, D], Targets) -> (loss [B], dh [B, D], drows [B, T, D])``,
        the hand gradient; ``None`` for a dense objective.
      row_loss: ``(h [D], rows [T, D], Targets of [T]) -> []``, the per-example reference loss.
      dense_grads: ``(h [B, D], predicted [B], U [V, D], weights [B]) -> (loss [B], dh [B, D],
        dU [V, D])`` with ``dU`` the weighted sum; only for objectives with no target rows.
      dense_loss: ``(h [D], predicted [], U [V, D]) -> []``, the per-example reference.
      kernel: the fused CPU kernel family computing exactly this objective (``"sgns"`` or
        ``"hs"``), or ``None``. :mod:`w2v_jax.fused` also checks that ``row_grads`` is still the
        built-in one, so an objective copied with ``dataclasses.replace`` and new math is refused
        by the kernel rather than silently trained with the old math.
      through_scores: the loss reads ``h`` and the target rows only through the scores
        ``s_t = h . u_t`` (true of every built-in: SGNS, NCE, HS). That is what lets
        :func:`split_dims` train tables whose columns are split over devices; set it False for
        a loss that reads the rows otherwise (a penalty on their norm, say).
    """

    name: str
    table: str
    table_rows: Callable[[int], int]
    make_consts: Callable[[np.ndarray], Any]
    check_vocab: Callable[[int], None]
    targets: Callable[..., Targets] | None = None
    row_grads: Callable | None = None
    row_loss: Callable | None = None
    dense_grads: Callable | None = None
    dense_loss: Callable | None = None
    kernel: str | None = None
    through_scores: bool = True

    @property
    def dense(self) -> bool:
        """True for an objective without target rows (the full softmax)."""
        return self.row_grads is None


# ----------------------------------------------------------------------------- target builders


def _all_rows(v: int) -> int:
    return v


def _inner_nodes(v: int) -> int:
    return v - 1


def noise_targets(negative: int) -> Callable[..., Targets]:
    """Targets ``[o, k_1..k_K]`` with labels ``[1, 0..0]``: the predicted word and K noise draws.

    ``consts`` must hold ``noise`` (a :class:`~w2v_jax.sampling.NoiseTable`) and, when it also
    holds ``log_kpn`` [V] float32, the targets carry NCE's offsets ``log K P_n(w)``.
    """

    def targets(consts: dict, predicted_B: jax.Array, key: jax.Array) -> Targets:
        b = predicted_B.shape[0]
        negatives_BxK = sampling.sample_negatives(consts["noise"], key, (b, negative))
        # The positive beside its negatives ([B, K+1]): the SGNS row gradients of one example are
        # one outer product (gradients.neg_sampling_grads), which XLA then fuses into the scatter.
        ids_BxT = jnp.concatenate([predicted_B[:, None], negatives_BxK], axis=1)
        labels_BxT = jnp.zeros(ids_BxT.shape, jnp.int32).at[:, 0].set(1)
        bias = consts["log_kpn"][ids_BxT] if "log_kpn" in consts else None
        return Targets(ids_BxT, labels_BxT, jnp.ones(ids_BxT.shape, bool), bias)

    return targets


def huffman_targets(consts: dict, predicted_B: jax.Array, key: jax.Array) -> Targets:
    """Targets on the Huffman path of each predicted word: ids ``points``, labels ``1 - codes``,
    mask ``j < length`` ([B, L], L the longest code)."""
    del key  # the path is deterministic
    points, codes, lengths = consts["points"], consts["codes"], consts["lengths"]
    depth = points.shape[1]
    path_BxL = jnp.arange(depth)[None, :] < lengths[predicted_B][:, None]
    return Targets(points[predicted_B], 1 - codes[predicted_B], path_BxL)


def noise_consts(counts: np.ndarray, ns_exponent: float) -> dict:
    """``{"noise": NoiseTable}`` of the ``count^ns_exponent`` distribution."""
    return {"noise": sampling.build_noise_table(counts, ns_exponent)}


def huffman_consts(counts: np.ndarray) -> dict:
    """``{"points", "codes", "lengths"}`` of the Huffman tree of ``counts``."""
    hf = huffman_lib.build_huffman(counts)
    return {"points": hf.points, "codes": hf.codes, "lengths": hf.lengths}


# ----------------------------------------------------------------------------- row gradients
# Module-level functions, so that the fused kernels can recognise the math they implement.


def sgns_row_grads(h_BxD, rows_BxTxD, tg: Targets):
    """SGNS rows ``[u_o, u_1..u_K]``: :func:`gradients.neg_sampling_grads` per example.

    Equal to :func:`gradients.logistic_grads` with labels ``[1, 0..0]`` up to float summation
    order (tested); kept in this positive-first form so the trained numbers stay those of
    ``neg_sampling_grads``, the reference.
    """
    del tg
    loss_B, dh_BxD, du_o_BxD, du_k_BxKxD = gradients.neg_sampling_grads_batch(
        h_BxD, rows_BxTxD[:, 0], rows_BxTxD[:, 1:]
    )
    return loss_B, dh_BxD, jnp.concatenate([du_o_BxD[:, None, :], du_k_BxKxD], axis=1)


def sgns_row_loss(h_D, rows_TxD, tg: Targets):
    """:func:`losses.neg_sampling_loss` of one example."""
    del tg
    return losses.neg_sampling_loss(h_D, rows_TxD[0], rows_TxD[1:])


def logistic_row_grads(h_BxD, rows_BxTxD, tg: Targets):
    """HS and NCE: :func:`gradients.logistic_grads` over the targets' labels, mask and bias."""
    return gradients.logistic_grads_batch(h_BxD, rows_BxTxD, tg.labels, tg.mask, tg.bias)


def logistic_row_loss(h_D, rows_TxD, tg: Targets):
    """:func:`losses.logistic_loss` of one example."""
    return losses.logistic_loss(h_D, rows_TxD, tg.labels, tg.mask, tg.bias)


def softmax_dense_grads(h_BxD, predicted_B, U_VxD, w_B):
    """:func:`gradients.naive_softmax_grads_batch` (one [B, V] matmul each way)."""
    return gradients.naive_softmax_grads_batch(h_BxD, predicted_B, U_VxD, w_B)


# ----------------------------------------------------------------------------- the built-ins


def _check_huffman(v: int) -> None:
    if v < 2:
        raise ValueError(f"--loss hs needs at least 2 words in the vocabulary, got V={v}")


def _check_softmax(v: int) -> None:
    limit = config_lib.MAX_SOFTMAX_VOCAB
    if v > limit:
        raise ValueError(
            f"--loss softmax materialises [B, V] logits; V={v} > {limit}. "
            "Use --loss ns, nce or hs, or raise --min-count"
        )


def sgns(negative: int = 5, ns_exponent: float = 0.75) -> Objective:
    """Skip-gram negative sampling (Mikolov et al. 2013b): K noise words per predicted word."""
    if negative < 1:
        raise ValueError(f"--loss ns needs --negative >= 1, got {negative}")
    return Objective(
        name="ns",
        table="outside_vecs",
        table_rows=_all_rows,
        make_consts=lambda counts: noise_consts(counts, ns_exponent),
        check_vocab=lambda v: sampling.check_negatives(v, negative),
        targets=noise_targets(negative),
        row_grads=sgns_row_grads,
        row_loss=sgns_row_loss,
        kernel="sgns",
    )


def nce(negative: int = 5, ns_exponent: float = 0.75) -> Objective:
    """Noise-contrastive estimation (Gutmann & Hyvarinen 2010; Mnih & Teh 2012).

    The SGNS targets with the score offsets ``log(K P_n(w))`` of the same noise distribution.
    """
    if negative < 1:
        raise ValueError(f"--loss nce needs --negative >= 1, got {negative}")

    def make_consts(counts: np.ndarray) -> dict:
        consts = noise_consts(counts, ns_exponent)
        p_n = sampling.noise_distribution(counts, ns_exponent)
        with np.errstate(divide="ignore"):  # a zero-count word is never drawn nor predicted
            consts["log_kpn"] = (math.log(negative) + np.log(p_n)).astype(np.float32)
        return consts

    return Objective(
        name="nce",
        table="outside_vecs",
        table_rows=_all_rows,
        make_consts=make_consts,
        check_vocab=lambda v: sampling.check_negatives(v, negative),
        targets=noise_targets(negative),
        row_grads=logistic_row_grads,
        row_loss=logistic_row_loss,
    )


def hierarchical_softmax() -> Objective:
    """Hierarchical softmax over the Huffman tree of the word counts (Morin & Bengio 2005)."""
    return Objective(
        name="hs",
        table="node_vecs",
        table_rows=_inner_nodes,
        make_consts=huffman_consts,
        check_vocab=_check_huffman,
        targets=huffman_targets,
        row_grads=logistic_row_grads,
        row_loss=logistic_row_loss,
        kernel="hs",
    )


def softmax() -> Objective:
    """The full softmax over all V words: the dense baseline, for small V only."""
    return Objective(
        name="softmax",
        table="outside_vecs",
        table_rows=_all_rows,
        make_consts=lambda counts: None,
        check_vocab=_check_softmax,
        dense_grads=softmax_dense_grads,
        dense_loss=losses.naive_softmax_loss,
    )


def autodiff(objective: Objective) -> Objective:
    """``objective`` with its hand gradients replaced by ``jax.grad`` of its reference loss.

    This is ``--grad autodiff``: the same step, so any difference in the trained tables is the
    difference between the derivation and the chain rule (the tests require none).
    """
    if objective.dense:
        return dataclasses.replace(objective, dense_grads=_autodiff_dense(objective.dense_loss))
    return dataclasses.replace(objective, row_grads=_autodiff_rows(objective.row_loss))


def _autodiff_rows(row_loss: Callable) -> Callable:
    per_example = jax.value_and_grad(row_loss, argnums=(0, 1))

    def row_grads(h_BxD, rows_BxTxD, tg: Targets):
        loss_B, (dh_BxD, drows_BxTxD) = jax.vmap(per_example)(h_BxD, rows_BxTxD, tg)
        return loss_B, dh_BxD, drows_BxTxD

    return row_grads


def _autodiff_dense(dense_loss: Callable) -> Callable:
    batched = jax.vmap(dense_loss, in_axes=(0, 0, None))

    def dense_grads(h_BxD, predicted_B, U_VxD, w_B):
        # One forward pass: differentiate the weighted sum, keep the per-example losses as aux,
        # then undo the weight on dh (the step weights dh itself, as for every objective).
        def total(h, u):
            per_example = batched(h, predicted_B, u)
            return jnp.sum(w_B * per_example), per_example

        (_, loss_B), (dh_BxD, dU) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
            h_BxD, U_VxD
        )
        return loss_B, dh_BxD / jnp.where(w_B > 0, w_B, 1.0)[:, None], dU

    return dense_grads


def split_dims(objective: Objective, sum_parts: Callable[[jax.Array], jax.Array]) -> Objective:
    r"""``objective`` for tables whose D columns are split into parts (one per device).

    Each part holds ``h`` and the target rows at its own columns only. A loss that reads them
    through the scores :math:`s_t = h^\top u_t` alone (``objective.through_scores``) needs just
    those: the parts' partial dots summed by ``sum_parts`` (a ``psum`` over the mesh axis, [B, T]
    floats). By the chain rule, with :math:`g_t = \partial J / \partial s_t`,

    .. math::

        \frac{\partial J}{\partial h} = \sum_t g_t u_t, \qquad
        \frac{\partial J}{\partial u_t} = g_t h,

    so each part's gradients are its own columns of these. :math:`g` comes from the objective's
    own ``row_grads`` at D = 1, with ``h = [1]`` and rows ``[s_t]``: there its row gradients are
    :math:`g_t \cdot 1`, and the scores (biases and masks included) are the true ones. The
    numbers equal the unsplit objective's up to the order of the sum over D.
    """
    if objective.dense or not objective.through_scores:
        raise ValueError(
            f"the {objective.name!r} objective cannot train tables split by dimensions: "
            + ("it is dense (a [V, D] gradient)" if objective.dense else "through_scores=False")
        )
    row_grads = objective.row_grads

    def split_row_grads(h_BxD, rows_BxTxD, tg: Targets):
        s_BxT = sum_parts(jnp.einsum("bd,btd->bt", h_BxD, rows_BxTxD))
        ones_Bx1 = jnp.ones((h_BxD.shape[0], 1), h_BxD.dtype)
        loss_B, _, g_BxTx1 = row_grads(ones_Bx1, s_BxT[..., None], tg)
        g_BxT = g_BxTx1[..., 0]
        dh_BxD = jnp.einsum("bt,btd->bd", g_BxT, rows_BxTxD)
        return loss_B, dh_BxD, g_BxT[..., None] * h_BxD[:, None, :]

    return dataclasses.replace(objective, row_grads=split_row_grads, kernel=None)


BUILTIN: dict[str, Callable[..., Objective]] = {
    "ns": sgns,
    "nce": nce,
    "hs": lambda negative, ns_exponent: hierarchical_softmax(),
    "softmax": lambda negative, ns_exponent: softmax(),
}


def from_config(cfg) -> Objective:
    """The objective a :class:`~w2v_jax.config.Config` names (``--loss``, ``--grad``)."""
    if cfg.model.loss not in BUILTIN:
        raise ValueError(f"--loss must be one of {sorted(BUILTIN)}, got {cfg.model.loss!r}")
    objective = BUILTIN[cfg.model.loss](cfg.model.negative, cfg.data.ns_exponent)
    return autodiff(objective) if cfg.train.grad == "autodiff" else objective


# ----------------------------------------------------------------------------- checking


def check_gradients(
    objective: Objective,
    *,
    vocab_size: int = 40,
    dim: int = 6,
    batch: int = 5,
    scale: float = 0.5,
    seed: int = 0,
    rtol: float | None = None,
) -> float:
    r"""Checks an objective's hand gradients against ``jax.grad`` of its reference loss.

    On random tables and a random batch of predicted words (targets drawn by the objective
    itself): the per-example losses, :math:`\partial J/\partial h` and the gradient of every
    target row (or the dense :math:`\partial J/\partial U`) must agree with ``jax.grad`` of
    ``row_loss`` (``dense_loss``) within ``rtol`` relative to the largest entry. The tests run it
    on every built-in objective; ``examples/custom_objective.py`` runs it on a new one.

    Args:
      objective: the objective to check.
      vocab_size, dim, batch: sizes of the random problem.
      scale: standard deviation of the random vectors (scores of order ``scale^2 * dim``).
      seed: seeds the tables, the batch and the targets' key.
      rtol: tolerance; default 1e-9 under float64 (``jax_enable_x64``), 1e-4 under float32.

    Returns:
      The largest relative error seen.

    Raises:
      AssertionError: naming the quantity that disagrees.
    """
    x64 = bool(jax.config.read("jax_enable_x64"))
    dtype = jnp.float64 if x64 else jnp.float32
    rtol = (1e-9 if x64 else 1e-4) if rtol is None else rtol
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(1, 1000, size=vocab_size))[::-1].astype(np.int64)
    consts = jax.device_put(objective.make_consts(counts))
    h_BxD = jnp.asarray(rng.normal(0, scale, (batch, dim)), dtype)
    table = jnp.asarray(rng.normal(0, scale, (objective.table_rows(vocab_size), dim)), dtype)
    predicted_B = jnp.asarray(rng.integers(0, vocab_size, batch), jnp.int32)

    if objective.dense:
        w_B = jnp.asarray(rng.uniform(0.5, 1.5, batch), dtype)
        got = objective.dense_grads(h_BxD, predicted_B, table, w_B)
        per_example = jax.vmap(objective.dense_loss, in_axes=(0, 0, None))
        want_loss = per_example(h_BxD, predicted_B, table)
        want_dh = jax.vmap(jax.grad(objective.dense_loss), in_axes=(0, 0, None))(
            h_BxD, predicted_B, table
        )
        want_dU = jax.grad(lambda u: jnp.sum(w_B * per_example(h_BxD, predicted_B, u)))(table)
        want = (want_loss, want_dh, want_dU)
        names = ("loss", "dJ/dh", "dJ/dU")
    else:
        tg = objective.targets(consts, predicted_B, jax.random.key(seed))
        rows_BxTxD = table[tg.ids]
        got = objective.row_grads(h_BxD, rows_BxTxD, tg)
        value_and_grad = jax.value_and_grad(objective.row_loss, argnums=(0, 1))
        want_loss, (want_dh, want_drows) = jax.vmap(value_and_grad)(h_BxD, rows_BxTxD, tg)
        want = (want_loss, want_dh, want_drows)
        names = ("loss", "dJ/dh", "dJ/drows")

    worst = 0.0
    for name, g, w in zip(names, got, want, strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            raise AssertionError(f"{objective.name}: {name} has shape {g.shape}, want {w.shape}")
        err = float(np.max(np.abs(g - w), initial=0.0)) / max(float(np.max(np.abs(w))), 1e-30)
        worst = max(worst, err)
        if not err <= rtol:
            raise AssertionError(
                f"{objective.name}: hand {name} differs from jax.grad by {err:.2e} (rtol {rtol})"
            )
    return worst
