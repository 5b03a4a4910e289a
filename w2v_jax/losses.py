r"""The word2vec losses and the CBOW hidden layer, one example at a time.

Full softmax, SGNS, NCE and hierarchical softmax; the last three are instances of one binary
logistic loss over gathered target rows (:func:`logistic_loss`).

Pure math: no sampling, no I/O, no optimizer. Notation follows CS224N (see ``params.py`` for the
word2vec.c names): ``v_c`` [D] is the input ("center") vector, ``u_o`` [D] the output vector of the
outside word ``o``, ``u_negs`` [K, D] the output vectors of K sampled negatives, ``U`` [V, D] the
whole output table and ``node_vecs`` [L, D] the inner-node vectors on one Huffman path. Every
function takes the rows it needs, already gathered; indices live with the caller, which
scatter-adds the row gradients of :mod:`w2v_jax.gradients` back into the tables.

Each loss is written for a single example; each ``*_batch`` form is ``jax.vmap`` of it over a
leading ``B`` axis and returns the per-example losses ``[B]`` (the caller weights and sums). All
of them work under ``jit``/``vmap``/``grad``. The derivations of the gradients are in
``docs/derivations.md`` and, function by function, in :mod:`w2v_jax.gradients`.

Numerics: every log-probability is a ``jax.nn.log_sigmoid`` or a ``logsumexp``, so loss and
gradient stay finite for scores of any size (|score| = 100 in float32 included); there is no
exp table and no clipping. Results keep the input dtype (float32, float64, bfloat16).

Validation: at the public boundary, shapes are checked always (at trace time under ``jit``, so
they cost nothing per call) and id ranges and code values are checked when the arguments are
concrete (not tracers), raising :class:`ValueError` that names the argument.

References:
  Mikolov et al. 2013, "Efficient Estimation of Word Representations in Vector Space" and
  "Distributed Representations of Words and Phrases and their Compositionality".
  CS224N lecture notes 1 and assignment 2 (word2vec gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------- validation
# Private helpers shared with gradients.py. Shapes are static, so checking them is free under
# jit; value checks (ids, codes) need concrete arrays and are skipped for tracers.


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _bad(fn: str, name: str, expected: str, got) -> None:
    raise ValueError(f"{fn}: {name} must be {expected}, got {got}")


def _dims(lead: tuple, **named: int) -> str:
    parts = ([f"B={lead[0]}"] if lead else []) + [f"{k}={v}" for k, v in named.items()]
    return ", ".join(parts)


def _check_float(fn: str, name: str, x) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        _bad(fn, name, "a floating-point array", f"dtype {jnp.result_type(x)}")


def _check_vectors(fn: str, v_c, batched: bool) -> tuple[tuple, int]:
    """Checks ``v_c`` is [D] (or [B, D]); returns (lead, D) with lead = () or (B,)."""
    shape = np.shape(v_c)
    if len(shape) != 1 + batched:
        _bad(fn, "v_c", "[B, D]" if batched else "[D]", tuple(shape))
    _check_float(fn, "v_c", v_c)
    return tuple(shape[:-1]), shape[-1]


def _check_rows(fn: str, name: str, x, lead: tuple, D: int, letter: str | None) -> int:
    """Checks ``x`` is [*lead, D] or [*lead, letter, D]; returns the ``letter`` size (or 0)."""
    shape = tuple(np.shape(x))
    b = "B, " if lead else ""
    rank = len(lead) + (1 if letter is None else 2)
    ok = len(shape) == rank and shape[: len(lead)] == lead and shape[-1] == D
    if not ok:
        form = f"[{b}D]" if letter is None else f"[{b}{letter}, D]"
        _bad(fn, name, f"{form} with {_dims(lead, D=D)} matching v_c", shape)
    _check_float(fn, name, x)
    return 0 if letter is None else shape[-2]


def _check_ids(fn: str, name: str, ids, lead: tuple, upper: int) -> None:
    """Checks integer ids of shape ``lead`` with values in [0, upper)."""
    shape = tuple(np.shape(ids))
    if shape != lead:
        _bad(fn, name, "an int" if not lead else f"[B] ints with B={lead[0]}", shape)
    if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
        _bad(fn, name, "integer", f"dtype {jnp.result_type(ids)}")
    if _concrete(ids):
        a = np.asarray(ids)
        if a.size and (a.min() < 0 or a.max() >= upper):
            _bad(fn, name, f"in [0, {upper})", f"values in [{a.min()}, {a.max()}]")


def _check_softmax(fn: str, v_c, outside, U, batched: bool = False) -> None:
    lead, D = _check_vectors(fn, v_c, batched)
    shape = tuple(np.shape(U))
    if len(shape) != 2 or shape[1] != D:
        _bad(fn, "U", f"[V, D] with D={D} matching v_c", shape)
    _check_float(fn, "U", U)
    _check_ids(fn, "outside", outside, lead, shape[0])


def _check_neg_sampling(fn: str, v_c, u_o, u_negs, batched: bool = False) -> None:
    lead, D = _check_vectors(fn, v_c, batched)
    _check_rows(fn, "u_o", u_o, lead, D, None)
    _check_rows(fn, "u_negs", u_negs, lead, D, "K")


def _check_nce(fn: str, v_c, u_o, u_negs, log_kpn_o, log_kpn_negs, batched: bool = False) -> None:
    _check_neg_sampling(fn, v_c, u_o, u_negs, batched)
    lead = tuple(np.shape(v_c))[:-1]
    K = np.shape(u_negs)[-2]
    if tuple(np.shape(log_kpn_o)) != lead:
        _bad(fn, "log_kpn_o", "[B]" if lead else "a scalar", tuple(np.shape(log_kpn_o)))
    if tuple(np.shape(log_kpn_negs)) != (*lead, K):
        _bad(
            fn,
            "log_kpn_negs",
            f"[{'B, ' if lead else ''}K] with {_dims(lead, K=K)}",
            tuple(np.shape(log_kpn_negs)),
        )
    _check_float(fn, "log_kpn_o", log_kpn_o)
    _check_float(fn, "log_kpn_negs", log_kpn_negs)


def _check_logistic(fn: str, v_c, rows, labels, mask, bias, batched: bool = False) -> None:
    lead, D = _check_vectors(fn, v_c, batched)
    T = _check_rows(fn, "rows", rows, lead, D, "T")
    for name, x in (("labels", labels), ("mask", mask)) + (
        (("bias", bias),) if bias is not None else ()
    ):
        if tuple(np.shape(x)) != (*lead, T):
            _bad(fn, name, f"[{'B, ' if lead else ''}T] with {_dims(lead, T=T)}", np.shape(x))
    kind = jnp.result_type(labels)
    if not (jnp.issubdtype(kind, jnp.integer) or kind == jnp.bool_):
        _bad(fn, "labels", "integer (0 or 1)", f"dtype {kind}")
    if _concrete(labels):
        a = np.asarray(labels)
        if a.size and not np.isin(a, (0, 1)).all():
            _bad(fn, "labels", "0 or 1", f"values {np.unique(a)[:8].tolist()}")


def _check_hs(fn: str, v_c, node_vecs, codes, mask, batched: bool = False) -> None:
    lead, D = _check_vectors(fn, v_c, batched)
    L = _check_rows(fn, "node_vecs", node_vecs, lead, D, "L")
    for name, x in (("codes", codes), ("mask", mask)):
        if tuple(np.shape(x)) != (*lead, L):
            _bad(fn, name, f"[{'B, ' if lead else ''}L] with {_dims(lead, L=L)}", np.shape(x))
    kind = jnp.result_type(codes)
    if not (jnp.issubdtype(kind, jnp.integer) or kind == jnp.bool_):
        _bad(fn, "codes", "integer (0 or 1)", f"dtype {kind}")
    if _concrete(codes):
        a = np.asarray(codes)
        if a.size and not np.isin(a, (0, 1)).all():
            _bad(fn, "codes", "0 or 1", f"values {np.unique(a)[:8].tolist()}")


def _check_cbow(fn: str, ctx_vecs, ctx_mask) -> None:
    shape = tuple(np.shape(ctx_vecs))
    if len(shape) != 2:
        _bad(fn, "ctx_vecs", "[C, D]", shape)
    _check_float(fn, "ctx_vecs", ctx_vecs)
    if tuple(np.shape(ctx_mask)) != shape[:1]:
        _bad(fn, "ctx_mask", f"[C] with C={shape[0]} matching ctx_vecs", tuple(np.shape(ctx_mask)))


def _as_bool(mask) -> jax.Array:
    """A bool or numeric mask as bool (nonzero = on); leaves bool masks untouched."""
    mask = jnp.asarray(mask)
    return mask if mask.dtype == jnp.bool_ else mask != 0


def _cbow_slot_weights(ctx_mask, mean: bool, dtype) -> jax.Array:
    r"""Per-slot weights ``w`` [C] with :math:`h = \sum_i w_i x_i`.

    ``w_i = m_i / max(n, 1)`` (mean, :math:`n = \sum_i m_i`) or ``w_i = m_i`` (sum), where
    ``m_i = 1`` for a present slot (``ctx_mask != 0``) and 0 otherwise; hence
    :math:`\partial h/\partial x_i = w_i I`. ``max(n, 1)`` keeps an all-padding row at ``h = 0``
    instead of 0/0.
    """
    present_C = _as_bool(ctx_mask).astype(dtype)
    if mean:
        return present_C / jnp.maximum(jnp.sum(present_C), 1)
    return present_C


# ----------------------------------------------------------------------------- losses


def naive_softmax_loss(v_c: jax.Array, outside, U: jax.Array) -> jax.Array:
    r"""Full-softmax cross-entropy of the outside word given the center vector.

    .. math::

        \hat{y} = \operatorname{softmax}(U v_c), \qquad
        J = -\log \hat{y}_o = \log \sum_{w=1}^{V} \exp(u_w^\top v_c) - u_o^\top v_c

    computed as ``logsumexp(scores) - scores[o]``, finite for any score size. This is the one
    loss that touches all V output rows; use it for small V only.

    Args:
      v_c: [D] float, center (input) vector.
      outside: int, index o of the outside word, in [0, V).
      U: [V, D] float, the whole output table (``outside_vecs``).

    Returns:
      [] scalar loss J, in the dtype of the scores.

    References:
      Mikolov et al. 2013 (eq. 2); CS224N notes 1, "naive softmax".
    """
    _check_softmax("naive_softmax_loss", v_c, outside, U)
    scores_V = jnp.dot(U, v_c)
    return jax.nn.logsumexp(scores_V) - scores_V[outside]


def neg_sampling_loss(v_c: jax.Array, u_o: jax.Array, u_negs: jax.Array) -> jax.Array:
    r"""Skip-gram negative-sampling (SGNS) loss for one (center, outside) pair and K negatives.

    .. math::

        J = -\log \sigma(u_o^\top v_c) - \sum_{k=1}^{K} \log \sigma(-u_k^\top v_c)

    Each row of ``u_negs`` is its own term: a word drawn twice as a negative counts twice (its
    two row gradients are summed by the caller's scatter-add). Negatives equal to ``o`` are kept;
    word2vec.c skips them (``if (target == word) continue``), which is a sampler decision.

    Args:
      v_c: [D] float, center (input) vector.
      u_o: [D] float, output vector of the outside (positive) word.
      u_negs: [K, D] float, output vectors of the K negatives (duplicates allowed).

    Returns:
      [] scalar loss J.

    References:
      Mikolov et al. 2013b (eq. 4); CS224N notes 1, "negative sampling".
    """
    _check_neg_sampling("neg_sampling_loss", v_c, u_o, u_negs)
    score_o = jnp.dot(u_o, v_c)
    scores_K = jnp.dot(u_negs, v_c)
    return -jax.nn.log_sigmoid(score_o) - jnp.sum(jax.nn.log_sigmoid(-scores_K))


def nce_loss(
    v_c: jax.Array, u_o: jax.Array, u_negs: jax.Array, log_kpn_o, log_kpn_negs
) -> jax.Array:
    r"""Noise-contrastive estimation (NCE) loss for one (center, outside) pair and K noise words.

    NCE trains a binary classifier to tell the data word from K draws of the noise distribution
    :math:`P_n`. With the model's unnormalised score :math:`s_w = u_w^\top v_c` (its log-partition
    fixed at 0, as Mnih & Teh 2012 do), the posterior that ``w`` came from the data is
    :math:`\sigma(s_w - \log(K P_n(w)))`, so

    .. math::

        J = -\log \sigma\big(u_o^\top v_c - \log K P_n(o)\big)
            - \sum_{k=1}^{K} \log \sigma\big(-(u_k^\top v_c - \log K P_n(k))\big)

    SGNS (:func:`neg_sampling_loss`) is this loss with the offsets :math:`\log K P_n(w)` set to
    0: it no longer estimates :math:`P(o \mid c)`, which is why Mikolov et al. (2013b, Table 1)
    compare the two. The offsets are constants (the noise distribution is fixed), so they have
    no gradient.

    Args:
      v_c: [D] float, center (input) vector.
      u_o: [D] float, output vector of the outside (data) word.
      u_negs: [K, D] float, output vectors of the K noise words (duplicates allowed).
      log_kpn_o: [] float, :math:`\log(K P_n(o))`.
      log_kpn_negs: [K] float, :math:`\log(K P_n(k))` of each noise word.

    Returns:
      [] scalar loss J.

    References:
      Gutmann & Hyvarinen 2010; Mnih & Teh 2012 (eq. 4-6); Mikolov et al. 2013b (section 2.2).
    """
    _check_nce("nce_loss", v_c, u_o, u_negs, log_kpn_o, log_kpn_negs)
    score_o = jnp.dot(u_o, v_c) - log_kpn_o
    scores_K = jnp.dot(u_negs, v_c) - log_kpn_negs
    return -jax.nn.log_sigmoid(score_o) - jnp.sum(jax.nn.log_sigmoid(-scores_K))


def hierarchical_softmax_loss(
    v_c: jax.Array, node_vecs: jax.Array, codes: jax.Array, mask: jax.Array
) -> jax.Array:
    r"""Hierarchical-softmax loss along the (padded) Huffman path of the outside word.

    With inner-node vectors :math:`n_j`, branch codes :math:`c_j \in \{0, 1\}` and the sign
    :math:`t_j = 1 - 2 c_j` (word2vec.c: code 0 means :math:`\sigma(x)`, code 1 means
    :math:`\sigma(-x)`),

    .. math::

        P(o \mid c) = \prod_{j=0}^{\ell_o - 1} \sigma(t_j\, n_j^\top v_c), \qquad
        J = -\sum_{j=0}^{L-1} m_j \log \sigma(t_j\, n_j^\top v_c)

    where :math:`m_j` masks the padding past the code length :math:`\ell_o`. Because
    :math:`\sigma(x) + \sigma(-x) = 1` at every inner node, these probabilities sum to one over
    the V leaves (see ``huffman.hs_path_probabilities``).

    Args:
      v_c: [D] float, center (input) vector.
      node_vecs: [L, D] float, ``node_vecs[points[o]]``: vector of the inner node at each depth.
      codes: [L] int in {0, 1}, branch taken at each depth (``huffman.codes[o]``).
      mask: [L] bool (nonzero = on the path), ``j < lengths[o]``.

    Returns:
      [] scalar loss J.

    References:
      Morin & Bengio 2005; Mikolov et al. 2013b (eq. 3); word2vec.c TrainModelThread (hs branch).
    """
    _check_hs("hierarchical_softmax_loss", v_c, node_vecs, codes, mask)
    sign_L = 1 - 2 * jnp.asarray(codes).astype(v_c.dtype)
    log_p_L = jax.nn.log_sigmoid(sign_L * jnp.dot(node_vecs, v_c))
    return -jnp.sum(jnp.where(_as_bool(mask), log_p_L, 0))


def logistic_loss(
    v_c: jax.Array, rows: jax.Array, labels: jax.Array, mask: jax.Array, bias=None
) -> jax.Array:
    r"""The binary logistic loss over T gathered target rows that SGNS, NCE and HS share.

    Each target row :math:`r_t` is a yes/no question about the predicted word, with label
    :math:`l_t \in \{0, 1\}`, sign :math:`t_t = 2 l_t - 1` and score offset :math:`b_t`:

    .. math::

        J = -\sum_{t=1}^{T} m_t \log \sigma\big(t_t\, (r_t^\top v_c - b_t)\big)

    * SGNS: rows ``[u_o, u_1..u_K]``, labels ``[1, 0..0]``, :math:`b = 0`
      (:func:`neg_sampling_loss`);
    * NCE: the same rows and labels, :math:`b_t = \log K P_n(w_t)` (:func:`nce_loss`);
    * HS: the inner nodes on the Huffman path, labels ``1 - codes``, :math:`b = 0`, ``mask`` the
      path length (:func:`hierarchical_softmax_loss`).

    The fused C++ kernels (``kernels/w2v_kernels.cc``) run this same computation per target.

    Args:
      v_c: [D] float, center (input) vector.
      rows: [T, D] float, output rows of the targets.
      labels: [T] int in {0, 1}.
      mask: [T] bool (nonzero = a real target, 0 = padding).
      bias: [T] float score offsets, or ``None`` for 0.

    Returns:
      [] scalar loss J.
    """
    _check_logistic("logistic_loss", v_c, rows, labels, mask, bias)
    scores_T = jnp.dot(rows, v_c)
    if bias is not None:
        scores_T = scores_T - bias
    sign_T = 2 * jnp.asarray(labels).astype(v_c.dtype) - 1
    log_p_T = jax.nn.log_sigmoid(sign_T * scores_T)
    return -jnp.sum(jnp.where(_as_bool(mask), log_p_T, 0))


def cbow_hidden(ctx_vecs: jax.Array, ctx_mask: jax.Array, mean: bool) -> jax.Array:
    r"""CBOW hidden vector: the mean (or sum) of the present context vectors.

    With :math:`m_i = 1` for a present slot and :math:`n = \max(\sum_i m_i, 1)`,

    .. math::

        h = \frac{1}{n} \sum_{i=1}^{C} m_i\, x_i \quad (\text{mean}), \qquad
        h = \sum_{i=1}^{C} m_i\, x_i \quad (\text{sum})

    CBOW then uses any loss above with ``v_c := h``. The chain rule back to each context row is
    :func:`w2v_jax.gradients.cbow_context_grads`. An all-padding row gives ``h = 0`` (no NaN);
    padding slots contribute nothing even if their rows are not finite.

    Args:
      ctx_vecs: [C, D] float, input vectors of the C context slots.
      ctx_mask: [C] bool or float, nonzero for a present slot.
      mean: Python bool (static under jit), True for word2vec.c's ``cbow_mean`` = 1.

    Returns:
      [D] hidden vector h, in the dtype of ``ctx_vecs``.

    References:
      Mikolov et al. 2013a (CBOW); word2vec.c TrainModelThread (``neu1``, ``cw``).
    """
    _check_cbow("cbow_hidden", ctx_vecs, ctx_mask)
    w_C = _cbow_slot_weights(ctx_mask, mean, ctx_vecs.dtype)
    return w_C @ jnp.where(_as_bool(ctx_mask)[:, None], ctx_vecs, 0)


# ----------------------------------------------------------------------------- batched forms


def naive_softmax_loss_batch(v_c: jax.Array, outside: jax.Array, U: jax.Array) -> jax.Array:
    """:func:`naive_softmax_loss` over a batch: [B, D], [B] int, [V, D] (shared) -> [B]."""
    _check_softmax("naive_softmax_loss_batch", v_c, outside, U, batched=True)
    return jax.vmap(naive_softmax_loss, in_axes=(0, 0, None))(v_c, outside, U)


def neg_sampling_loss_batch(v_c: jax.Array, u_o: jax.Array, u_negs: jax.Array) -> jax.Array:
    """:func:`neg_sampling_loss` over a batch: [B, D], [B, D], [B, K, D] -> [B]."""
    _check_neg_sampling("neg_sampling_loss_batch", v_c, u_o, u_negs, batched=True)
    return jax.vmap(neg_sampling_loss)(v_c, u_o, u_negs)


def nce_loss_batch(v_c, u_o, u_negs, log_kpn_o, log_kpn_negs) -> jax.Array:
    """:func:`nce_loss` over a batch: [B, D], [B, D], [B, K, D], [B], [B, K] -> [B]."""
    _check_nce("nce_loss_batch", v_c, u_o, u_negs, log_kpn_o, log_kpn_negs, batched=True)
    return jax.vmap(nce_loss)(v_c, u_o, u_negs, log_kpn_o, log_kpn_negs)


def hierarchical_softmax_loss_batch(
    v_c: jax.Array, node_vecs: jax.Array, codes: jax.Array, mask: jax.Array
) -> jax.Array:
    """:func:`hierarchical_softmax_loss` over a batch: [B, D], [B, L, D], [B, L], [B, L] -> [B]."""
    _check_hs("hierarchical_softmax_loss_batch", v_c, node_vecs, codes, mask, batched=True)
    return jax.vmap(hierarchical_softmax_loss)(v_c, node_vecs, codes, mask)


def logistic_loss_batch(v_c, rows, labels, mask, bias=None) -> jax.Array:
    """:func:`logistic_loss` over a batch: [B, D], [B, T, D], [B, T], [B, T], [B, T] -> [B]."""
    _check_logistic("logistic_loss_batch", v_c, rows, labels, mask, bias, batched=True)
    return jax.vmap(logistic_loss)(v_c, rows, labels, mask, bias)
