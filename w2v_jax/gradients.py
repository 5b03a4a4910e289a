r"""Hand-derived gradients of :mod:`w2v_jax.losses`, function by function, in the same order.

Each function returns the loss and the gradient of that loss with respect to every float
argument, as rows: ``dv_c`` [D], ``du_o`` [D], ``du_negs`` [K, D], ``dnode_vecs`` [L, D]. The
caller scatter-adds rows into the tables with ``.at[ids].add(g)``, which is exactly the chain rule
through the gather: when an id appears twice (a repeated negative, a Huffman node shared by two
paths, a word twice in a CBOW window) its row gradients add up. Only the full softmax is
inherently V-wide and returns a dense ``dU`` [V, D].

Docstrings walk each derivation one line at a time; ``docs/derivations.md`` has them in full,
with the differences from word2vec.c. Identities used throughout, for the logistic
:math:`\sigma(x) = 1/(1+e^{-x})`:

.. math::

    \sigma(-x) = 1 - \sigma(x), \qquad
    \frac{d}{dx}\log\sigma(x) = 1 - \sigma(x) = \sigma(-x), \qquad
    \frac{d}{dx}\log\sigma(-x) = -\sigma(x).

Coefficients are written in the cancellation-free form (``sigma(x) - 1`` is computed as
``-sigmoid(-x)``), so they stay finite and accurate at |score| = 100 in float32.

The tests check every function here against ``jax.grad`` of the matching loss (float64, relative
error about 1e-10) and ``jax.grad`` against central finite differences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from w2v_jax import losses

CBOW_RULES = ("word2vec", "exact")  # same values as config.CBOW_GRADS


def naive_softmax_grads(v_c: jax.Array, outside, U: jax.Array):
    r"""Loss and gradients of :func:`w2v_jax.losses.naive_softmax_loss`.

    Derivation (``docs/derivations.md`` section 1). Let :math:`s = U v_c \in \mathbb{R}^V` (so
    :math:`s_w = u_w^\top v_c`), :math:`\hat{y} = \operatorname{softmax}(s)` and :math:`y` the
    one-hot vector of ``o``.

    .. math::

        J &= -s_o + \log \textstyle\sum_w e^{s_w} \\
        \frac{\partial J}{\partial s_w} &= -y_w + \frac{e^{s_w}}{\sum_{w'} e^{s_{w'}}}
            = \hat{y}_w - y_w
            \quad\Longrightarrow\quad \frac{\partial J}{\partial s} = \hat{y} - y \\
        \frac{\partial J}{\partial v_c} &= \sum_w \frac{\partial J}{\partial s_w}
            \frac{\partial s_w}{\partial v_c} = \sum_w (\hat{y}_w - y_w)\, u_w
            = U^\top (\hat{y} - y) \\
        \frac{\partial J}{\partial u_w} &= (\hat{y}_w - y_w)\, v_c
            \quad\Longrightarrow\quad \frac{\partial J}{\partial U} = (\hat{y} - y)\, v_c^\top

    Args:
      v_c: [D] float, center vector.
      outside: int in [0, V), the outside word o.
      U: [V, D] float, output table.

    Returns:
      ``(loss [], dv_c [D], dU [V, D])``.
    """
    losses._check_softmax("naive_softmax_grads", v_c, outside, U)
    scores_V = jnp.dot(U, v_c)
    lse = jax.nn.logsumexp(scores_V)
    loss = lse - scores_V[outside]
    delta_V = jnp.exp(scores_V - lse).at[outside].add(-1)  # y_hat - y
    return loss, delta_V @ U, jnp.outer(delta_V, v_c)


def neg_sampling_grads(v_c: jax.Array, u_o: jax.Array, u_negs: jax.Array):
    r"""Loss and gradients of :func:`w2v_jax.losses.neg_sampling_loss`.

    Derivation (``docs/derivations.md`` section 2). Scores :math:`s_o = u_o^\top v_c` and :math:`s_k
    = u_k^\top v_c`.

    .. math::

        J &= -\log\sigma(s_o) - \sum_k \log\sigma(-s_k) \\
        \frac{\partial J}{\partial s_o} &= -(1 - \sigma(s_o)) = \sigma(s_o) - 1
            = -\sigma(-s_o) =: g_o \\
        \frac{\partial J}{\partial s_k} &= 1 - \sigma(-s_k) = \sigma(s_k) =: g_k \\
        \frac{\partial J}{\partial v_c} &= g_o\, u_o + \sum_k g_k\, u_k
            = -(1 - \sigma(u_o^\top v_c))\, u_o + \sum_k (1 - \sigma(-u_k^\top v_c))\, u_k \\
        \frac{\partial J}{\partial u_o} &= g_o\, v_c = (\sigma(u_o^\top v_c) - 1)\, v_c \\
        \frac{\partial J}{\partial u_k} &= g_k\, v_c = \sigma(u_k^\top v_c)\, v_c

    Row ``k`` of ``du_negs`` is the gradient with respect to that *slot*; a word drawn twice has
    two rows, and their sum (the scatter-add) is the gradient with respect to the word's vector.

    word2vec.c computes the same coefficients (its ``g = (label - f) * alpha`` is ``-alpha`` times
    ours) with :math:`\sigma` read from a 1000-entry table on [-6, 6] and saturated to 0 or 1
    outside it (MAX_EXP = 6); gensim skips those terms instead. We use the exact :math:`\sigma`
    (``docs/derivations.md`` section 7).

    Args:
      v_c: [D] float, center vector.
      u_o: [D] float, outside (positive) vector.
      u_negs: [K, D] float, negative vectors.

    Returns:
      ``(loss [], dv_c [D], du_o [D], du_negs [K, D])``.
    """
    losses._check_neg_sampling("neg_sampling_grads", v_c, u_o, u_negs)
    score_o = jnp.dot(u_o, v_c)
    scores_K = jnp.dot(u_negs, v_c)
    loss = -jax.nn.log_sigmoid(score_o) - jnp.sum(jax.nn.log_sigmoid(-scores_K))
    g_o = -jax.nn.sigmoid(-score_o)  # sigma(s_o) - 1
    g_K = jax.nn.sigmoid(scores_K)  # 1 - sigma(-s_k)
    dv_c = g_o * u_o + g_K @ u_negs
    # dJ/du_t = g_t v_c for every target t = o, k_1..k_K: one outer product, then split, so a
    # caller that puts the rows back side by side ([K+1, D]) gets them without a copy.
    du_targets = jnp.outer(jnp.concatenate([g_o[None], g_K]), v_c)
    return loss, dv_c, du_targets[0], du_targets[1:]


def nce_grads(v_c: jax.Array, u_o: jax.Array, u_negs: jax.Array, log_kpn_o, log_kpn_negs):
    r"""Loss and gradients of :func:`w2v_jax.losses.nce_loss`.

    Derivation (``docs/derivations.md`` section 2b). Shifted scores :math:`x_o = u_o^\top v_c -
    \log K P_n(o)` and :math:`x_k = u_k^\top v_c - \log K P_n(k)`; the offsets are constants, so
    :math:`\partial x_w / \partial v_c = u_w` and :math:`\partial x_w / \partial u_w = v_c` exactly
    as for SGNS, and only the point where the sigmoid is read moves:

    .. math::

        J &= -\log\sigma(x_o) - \sum_k \log\sigma(-x_k) \\
        \frac{\partial J}{\partial x_o} &= \sigma(x_o) - 1 = -\sigma(-x_o) =: g_o, \qquad
        \frac{\partial J}{\partial x_k} = \sigma(x_k) =: g_k \\
        \frac{\partial J}{\partial v_c} &= g_o\, u_o + \sum_k g_k\, u_k, \qquad
        \frac{\partial J}{\partial u_o} = g_o\, v_c, \qquad
        \frac{\partial J}{\partial u_k} = g_k\, v_c

    With all offsets 0 this is :func:`neg_sampling_grads`. A frequent noise word has a large
    :math:`\log K P_n`, so its :math:`g_k = \sigma(u_k^\top v_c - \log K P_n(k))` is smaller than
    in SGNS: NCE pushes frequent words away less, rare ones more.

    Args:
      v_c: [D] float, center vector.
      u_o: [D] float, outside (data) vector.
      u_negs: [K, D] float, noise vectors.
      log_kpn_o: [] float; log_kpn_negs: [K] float, :math:`\log(K P_n(w))`.

    Returns:
      ``(loss [], dv_c [D], du_o [D], du_negs [K, D])``.
    """
    losses._check_nce("nce_grads", v_c, u_o, u_negs, log_kpn_o, log_kpn_negs)
    x_o = jnp.dot(u_o, v_c) - log_kpn_o
    x_K = jnp.dot(u_negs, v_c) - log_kpn_negs
    loss = -jax.nn.log_sigmoid(x_o) - jnp.sum(jax.nn.log_sigmoid(-x_K))
    g_o = -jax.nn.sigmoid(-x_o)  # sigma(x_o) - 1
    g_K = jax.nn.sigmoid(x_K)
    du_targets = jnp.outer(jnp.concatenate([g_o[None], g_K]), v_c)
    return loss, g_o * u_o + g_K @ u_negs, du_targets[0], du_targets[1:]


def hierarchical_softmax_grads(
    v_c: jax.Array, node_vecs: jax.Array, codes: jax.Array, mask: jax.Array
):
    r"""Loss and gradients of :func:`w2v_jax.losses.hierarchical_softmax_loss`.

    Derivation (``docs/derivations.md`` section 3). Scores :math:`s_j = n_j^\top v_c`, signs
    :math:`t_j = 1 - 2c_j`, mask :math:`m_j`.

    .. math::

        J &= -\sum_j m_j \log\sigma(t_j s_j) \\
        \frac{\partial J}{\partial s_j} &= -m_j\, t_j\, \sigma(-t_j s_j) =: g_j \\
        &\text{code } 0\ (t_j = 1):\ g_j = -\sigma(-s_j) = \sigma(s_j) - 1; \quad
         \text{code } 1\ (t_j = -1):\ g_j = \sigma(s_j) \\
        &\text{so } g_j = m_j\,(\sigma(s_j) - (1 - c_j))
         \quad (\text{word2vec.c: } g = (1 - c_j - f)\,\alpha = -\alpha\, g_j) \\
        \frac{\partial J}{\partial v_c} &= \sum_j g_j\, n_j \\
        \frac{\partial J}{\partial n_j} &= g_j\, v_c

    word2vec.c skips a node entirely (no update of :math:`n_j`, nothing added to ``neu1e``) when
    :math:`|s_j| \ge 6` (MAX_EXP), even when its branch is badly wrong; we always apply
    :math:`g_j` (``docs/derivations.md`` section 7).

    Padded slots (:math:`m_j = 0`) get a gradient row of exactly 0, so scattering them onto
    the padding id 0 changes nothing. Inner nodes are distinct along one path, but paths share
    their upper nodes (every path starts at the root), so across a batch the scatter-add sums.

    Args:
      v_c: [D] float, center vector.
      node_vecs: [L, D] float, inner-node vectors along the path.
      codes: [L] int in {0, 1}, branch at each depth.
      mask: [L] bool (nonzero = on the path).

    Returns:
      ``(loss [], dv_c [D], dnode_vecs [L, D])``.
    """
    losses._check_hs("hierarchical_softmax_grads", v_c, node_vecs, codes, mask)
    sign_L = 1 - 2 * jnp.asarray(codes).astype(v_c.dtype)
    x_L = sign_L * jnp.dot(node_vecs, v_c)
    on_path_L = losses._as_bool(mask)
    loss = -jnp.sum(jnp.where(on_path_L, jax.nn.log_sigmoid(x_L), 0))
    g_L = jnp.where(on_path_L, -sign_L * jax.nn.sigmoid(-x_L), 0)
    return loss, g_L @ node_vecs, jnp.outer(g_L, v_c)


def logistic_grads(v_c: jax.Array, rows: jax.Array, labels: jax.Array, mask: jax.Array, bias=None):
    r"""Loss and gradients of :func:`w2v_jax.losses.logistic_loss`, the form SGNS, NCE and HS share.

    Derivation (``docs/derivations.md`` section 3b). Scores :math:`x_t = t_t (r_t^\top v_c - b_t)`
    with signs :math:`t_t = 2 l_t - 1`:

    .. math::

        J &= -\sum_t m_t \log\sigma(x_t) \\
        \frac{\partial J}{\partial (r_t^\top v_c)} &= -m_t\, t_t\, \sigma(-x_t)
            = m_t\,\big(\sigma(r_t^\top v_c - b_t) - l_t\big) =: g_t \\
        \frac{\partial J}{\partial v_c} &= \sum_t g_t\, r_t, \qquad
        \frac{\partial J}{\partial r_t} = g_t\, v_c

    word2vec.c's update for every target is ``g = (label - f) * alpha`` with ``f`` the sigmoid:
    :math:`-\alpha g_t`. :func:`hierarchical_softmax_grads` is this function with labels ``1 -
    codes`` (the same operations, so the same bits); :func:`neg_sampling_grads` and
    :func:`nce_grads` equal it with labels ``[1, 0..0]`` up to float summation order (they add
    the positive's term first).

    Args:
      v_c: [D] float, center vector.
      rows: [T, D] float, target rows.
      labels: [T] int in {0, 1}.
      mask: [T] bool (nonzero = a real target).
      bias: [T] float score offsets, or ``None`` for 0.

    Returns:
      ``(loss [], dv_c [D], drows [T, D])``; padded slots get rows of exactly 0.
    """
    losses._check_logistic("logistic_grads", v_c, rows, labels, mask, bias)
    scores_T = jnp.dot(rows, v_c)
    if bias is not None:
        scores_T = scores_T - bias
    sign_T = 2 * jnp.asarray(labels).astype(v_c.dtype) - 1
    x_T = sign_T * scores_T
    on_T = losses._as_bool(mask)
    loss = -jnp.sum(jnp.where(on_T, jax.nn.log_sigmoid(x_T), 0))
    g_T = jnp.where(on_T, -sign_T * jax.nn.sigmoid(-x_T), 0)
    return loss, g_T @ rows, jnp.outer(g_T, v_c)


def cbow_context_grads(dh: jax.Array, ctx_mask: jax.Array, mean: bool, rule: str) -> jax.Array:
    r"""Gradient rows for the C context slots of CBOW, given :math:`\partial J / \partial h`.

    Derivation (``docs/derivations.md`` section 4), exact rule. :func:`w2v_jax.losses.cbow_hidden`
    is :math:`h = \sum_i w_i x_i` with :math:`w_i = m_i / n` (mean, :math:`n = \max(\sum_i m_i, 1)`)
    or :math:`w_i = m_i` (sum), so :math:`\partial h / \partial x_i = w_i I` and

    .. math::

        \frac{\partial J}{\partial x_i} = w_i\, \frac{\partial J}{\partial h}
        = \begin{cases} \frac{m_i}{n}\, \partial J/\partial h & \text{mean} \\
                        m_i\, \partial J/\partial h & \text{sum.} \end{cases}

    ``rule="word2vec"``: every present slot gets the full :math:`\partial J/\partial h`. This is
    word2vec.c's update (``syn0[last_word] += neu1e`` with ``neu1e`` not divided by ``cw``) and
    gensim's for ``cbow_mean=1``. For the mean it is :math:`n` times the exact gradient: it moves
    every context vector by the step that gradient descent would take on ``h`` itself. For the sum
    the two rules agree. (gensim with ``cbow_mean=0`` instead divides ``neu1e`` by :math:`n`,
    i.e. :math:`1/n` times the exact gradient of the sum; not offered here.) ``rule="exact"`` is
    the true gradient of the mean. The trainer's default is
    ``cfg.model.cbow_grad = "word2vec"``, to match word2vec.c and gensim.

    Padding slots get 0 in both rules. A word present in two slots gets two rows; the
    scatter-add sums them, as the chain rule through the gather requires.

    Args:
      dh: [D] float, :math:`\partial J/\partial h` (the ``dv_c`` of a loss evaluated at ``h``).
      ctx_mask: [C] bool or float, nonzero for a present slot.
      mean: Python bool (static), as passed to ``cbow_hidden``.
      rule: ``"word2vec"`` or ``"exact"`` (static).

    Returns:
      [C, D] gradient rows, one per context slot, in the dtype of ``dh``.
    """
    if rule not in CBOW_RULES:
        raise ValueError(f"cbow_context_grads: rule must be one of {CBOW_RULES}, got {rule!r}")
    if len(jnp.shape(dh)) != 1 or len(jnp.shape(ctx_mask)) != 1:
        raise ValueError(
            "cbow_context_grads: dh must be [D] and ctx_mask [C], "
            f"got {tuple(jnp.shape(dh))} and {tuple(jnp.shape(ctx_mask))}"
        )
    w_C = losses._cbow_slot_weights(ctx_mask, mean and rule == "exact", dh.dtype)
    return w_C[:, None] * dh[None, :]


# ----------------------------------------------------------------------------- batched forms


def naive_softmax_grads_batch(v_c: jax.Array, outside: jax.Array, U: jax.Array, weights):
    r"""Batched :func:`naive_softmax_grads` with matmuls; the one inherently V-wide gradient.

    With :math:`V_c` [B, D] the stacked center vectors, :math:`\hat{Y}` [B, V] the row-wise
    softmax of :math:`V_c U^\top`, :math:`Y` [B, V] the one-hot targets and weights
    :math:`\omega` [B]:

    .. math::

        \frac{\partial J_b}{\partial v_{c,b}} = \big((\hat{Y} - Y)\, U\big)_b, \qquad
        \frac{\partial}{\partial U} \sum_b \omega_b J_b
            = (\hat{Y} - Y)^\top \operatorname{diag}(\omega)\, V_c

    which is the sum over rows of the per-example :math:`(\hat{y} - y)\, v_c^\top`.

    Args:
      v_c: [B, D] float, center vectors.
      outside: [B] int in [0, V).
      U: [V, D] float, output table.
      weights: [B] float, per-example weights (e.g. the batch mask) applied to ``dU`` only.

    Returns:
      ``(loss [B], dv_c [B, D], dU [V, D])``: ``loss`` and ``dv_c`` are per row and unweighted;
      ``dU`` is the weighted sum.
    """
    fn = "naive_softmax_grads_batch"
    losses._check_softmax(fn, v_c, outside, U, batched=True)
    if tuple(jnp.shape(weights)) != tuple(jnp.shape(outside)):
        losses._bad(fn, "weights", f"[B] with B={jnp.shape(v_c)[0]}", tuple(jnp.shape(weights)))
    scores_BxV = jnp.dot(v_c, jnp.transpose(U))
    lse_B = jax.nn.logsumexp(scores_BxV, axis=1)
    outside_B = jnp.asarray(outside)
    loss_B = lse_B - jnp.take_along_axis(scores_BxV, outside_B[:, None], axis=1)[:, 0]
    y_BxV = jax.nn.one_hot(outside_B, U.shape[0], dtype=scores_BxV.dtype)
    delta_BxV = jnp.exp(scores_BxV - lse_B[:, None]) - y_BxV  # Y_hat - Y
    w_Bx1 = jnp.asarray(weights).astype(v_c.dtype)[:, None]
    return loss_B, delta_BxV @ U, delta_BxV.T @ (w_Bx1 * v_c)


def neg_sampling_grads_batch(v_c: jax.Array, u_o: jax.Array, u_negs: jax.Array):
    """:func:`neg_sampling_grads` over a batch: [B, D], [B, D], [B, K, D] -> rows per example.

    Returns ``(loss [B], dv_c [B, D], du_o [B, D], du_negs [B, K, D])``.
    """
    losses._check_neg_sampling("neg_sampling_grads_batch", v_c, u_o, u_negs, batched=True)
    return jax.vmap(neg_sampling_grads)(v_c, u_o, u_negs)


def nce_grads_batch(v_c, u_o, u_negs, log_kpn_o, log_kpn_negs):
    """:func:`nce_grads` over a batch: [B, D], [B, D], [B, K, D], [B], [B, K].

    Returns ``(loss [B], dv_c [B, D], du_o [B, D], du_negs [B, K, D])``.
    """
    losses._check_nce("nce_grads_batch", v_c, u_o, u_negs, log_kpn_o, log_kpn_negs, batched=True)
    return jax.vmap(nce_grads)(v_c, u_o, u_negs, log_kpn_o, log_kpn_negs)


def hierarchical_softmax_grads_batch(
    v_c: jax.Array, node_vecs: jax.Array, codes: jax.Array, mask: jax.Array
):
    """:func:`hierarchical_softmax_grads` over a batch: [B, D], [B, L, D], [B, L], [B, L].

    Returns ``(loss [B], dv_c [B, D], dnode_vecs [B, L, D])``; padded slots are exactly 0.
    """
    losses._check_hs("hierarchical_softmax_grads_batch", v_c, node_vecs, codes, mask, batched=True)
    return jax.vmap(hierarchical_softmax_grads)(v_c, node_vecs, codes, mask)


def logistic_grads_batch(v_c, rows, labels, mask, bias=None):
    """:func:`logistic_grads` over a batch: [B, D], [B, T, D], [B, T], [B, T], [B, T] or None.

    Returns ``(loss [B], dv_c [B, D], drows [B, T, D])``.
    """
    losses._check_logistic("logistic_grads_batch", v_c, rows, labels, mask, bias, batched=True)
    return jax.vmap(logistic_grads)(v_c, rows, labels, mask, bias)
