"""Tests `../w2v_jax/fused.py` and `../w2v_jax/kernels/w2v_kernels.cc` (fused CPU kernels).

References are written here with numpy/jnp in float64 from the same float32 inputs:
* distinct ids + 1 thread: the per-pair SGD equals the batch-synchronous SGNS gradient step;
* repeated ids + 1 thread: a sequential pair-by-pair numpy loop in word2vec.c's order.
Hogwild (> 1 thread) is only compared where no two pairs share a row.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax import fused

pytestmark = pytest.mark.skipif(
    not fused.fused_available(),
    reason=f"fused CPU kernels unavailable: {fused.unavailable_reason()}",
)

F32, I32 = np.float32, np.int32


def _tables(rng, v, d, scale=0.5):
    return (
        (rng.normal(size=(v, d)) * scale).astype(F32),
        (rng.normal(size=(v, d)) * scale).astype(F32),
    )


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _ref_sequential(in_tab, out_tab, pairs, mask, lr, *, mean=True, exact=False):
    """word2vec.c's per-pair loop in float64. pairs: list of (input_rows, target_ids, labels)."""
    w_in = in_tab.astype(np.float64)
    w_out = out_tab.astype(np.float64)
    losses = np.zeros(len(pairs))
    for i, (rows, tgt, lab) in enumerate(pairs):
        if mask[i] == 0 or len(rows) == 0:
            continue
        h = w_in[rows].sum(0)
        if mean:
            h = h / len(rows)
        neu1e = np.zeros_like(h)
        first_f = {}
        for t, lbl in zip(tgt, lab, strict=True):
            f = h @ w_out[t]
            fp = first_f.setdefault(t, f)  # the loss uses the value before this pair's update
            losses[i] += lbl * _softplus(-fp) + (1 - lbl) * _softplus(fp)
            g = (lbl - _sig(f)) * lr * mask[i]
            neu1e += g * w_out[t]
            w_out[t] += g * h
        scale = 1.0 / len(rows) if (mean and exact and len(rows) > 1) else 1.0
        for r in rows:
            w_in[r] += scale * neu1e
    return w_in, w_out, losses


def _ns_pairs(center, context, negatives):
    k = negatives.shape[1]
    return [
        ([int(c)], [int(o), *map(int, n)], [1.0] + [0.0] * k)
        for c, o, n in zip(center, context, negatives, strict=True)
    ]


def _random_batch(rng, v, b, k):
    """(center [B], context [B], negatives [B, K], mask [B] of ones): uniform ids below v."""
    return (
        jnp.asarray(rng.integers(0, v, b).astype(I32)),
        jnp.asarray(rng.integers(0, v, b).astype(I32)),
        jnp.asarray(rng.integers(0, v, (b, k)).astype(I32)),
        jnp.ones(b, jnp.float32),
    )


def _sgns(*args, jit=False, **kw):
    fn = partial(fused.sgns_update, **kw)
    return (jax.jit(fn) if jit else fn)(*args)


# ------------------------------------------------------------------------------------------------
# SGNS skip-gram


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("b,k", [(1, 1), (3, 5), (7, 5)])
def test_sgns_distinct_ids_equals_batch_gradient_step(b, k, jit):
    """All rows distinct: sequential per-pair SGD == one step of the batch gradient."""
    rng = np.random.default_rng(b * 10 + k)
    v, d, lr = 64, 13, 0.3
    cv, ov = _tables(rng, v, d)
    center = rng.permutation(v)[:b].astype(I32)
    outs = rng.permutation(v)[: b * (k + 1)].astype(I32).reshape(b, k + 1)
    context, negatives = outs[:, 0].copy(), outs[:, 1:].copy()
    mask = np.ones(b, F32)
    mask[0] = 0.5
    if b > 2:
        mask[2] = 0.0

    new_cv, new_ov, loss = _sgns(
        jnp.asarray(cv),
        jnp.asarray(ov),
        jnp.asarray(center),
        jnp.asarray(context),
        jnp.asarray(negatives),
        jnp.asarray(mask),
        lr,
        num_threads=1,
        jit=jit,
    )

    # Batch-synchronous reference: gradients at the old parameters (float64 jnp).
    v_c = jnp.asarray(cv, jnp.float64)[center]  # [B, D]
    u_o = jnp.asarray(ov, jnp.float64)[context]  # [B, D]
    u_k = jnp.asarray(ov, jnp.float64)[negatives]  # [B, K, D]
    s_o = jax.nn.sigmoid(jnp.einsum("bd,bd->b", u_o, v_c))  # [B]
    s_k = jax.nn.sigmoid(jnp.einsum("bkd,bd->bk", u_k, v_c))  # [B, K]
    loss_ref = -jnp.log(s_o) - jnp.sum(jnp.log1p(-s_k), axis=1)
    g_v_c = (s_o - 1.0)[:, None] * u_o + jnp.einsum("bk,bkd->bd", s_k, u_k)
    g_u_o = (s_o - 1.0)[:, None] * v_c
    g_u_k = s_k[:, :, None] * v_c[:, None, :]
    step = lr * jnp.asarray(mask, jnp.float64)
    cv_ref = jnp.asarray(cv, jnp.float64).at[center].add(-step[:, None] * g_v_c)
    ov_ref = jnp.asarray(ov, jnp.float64).at[context].add(-step[:, None] * g_u_o)
    ov_ref = ov_ref.at[negatives].add(-step[:, None, None] * g_u_k)

    np.testing.assert_allclose(np.asarray(new_cv), cv_ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.asarray(new_ov), ov_ref, rtol=0, atol=2e-6)
    loss_ref = np.where(mask == 0, 0.0, np.asarray(loss_ref))
    np.testing.assert_allclose(np.asarray(loss), loss_ref, rtol=1e-5, atol=1e-6)
    assert new_cv.dtype == jnp.float32 and loss.shape == (b,)


def test_sgns_gradient_agrees_with_gradients_module_if_present():
    """Cross-check the closed form against w2v_jax.gradients once that module exists."""
    gradients = pytest.importorskip("w2v_jax.gradients")
    if not hasattr(gradients, "neg_sampling_grads"):
        pytest.skip("w2v_jax.gradients has no neg_sampling_grads yet")
    rng = np.random.default_rng(0)
    v, d, k, lr = 20, 6, 4, 0.2
    cv, ov = _tables(rng, v, d)
    ids = rng.permutation(v)[: k + 1].astype(I32)
    center = np.array([3], I32)
    new_cv, new_ov, loss = fused.sgns_update(
        jnp.asarray(cv),
        jnp.asarray(ov),
        jnp.asarray(center),
        jnp.asarray(ids[:1]),
        jnp.asarray(ids[None, 1:]),
        jnp.ones(1, jnp.float32),
        lr,
        num_threads=1,
    )
    try:
        out = gradients.neg_sampling_grads(
            v_c=jnp.asarray(cv[3], jnp.float64),
            u_o=jnp.asarray(ov[ids[0]], jnp.float64),
            u_negs=jnp.asarray(ov[ids[1:]], jnp.float64),
        )
    except TypeError as e:  # signature still moving
        pytest.skip(f"neg_sampling_grads signature differs: {e}")
    ref_loss, g_v_c, g_u_o, g_u_k = out
    np.testing.assert_allclose(float(loss[0]), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(new_cv[3], cv[3] - lr * np.asarray(g_v_c), atol=2e-6)
    np.testing.assert_allclose(new_ov[ids[0]], ov[ids[0]] - lr * np.asarray(g_u_o), atol=2e-6)
    np.testing.assert_allclose(new_ov[ids[1:]], ov[ids[1:]] - lr * np.asarray(g_u_k), atol=2e-6)


@pytest.mark.parametrize("k", [1, 5])
def test_sgns_repeated_ids_equal_sequential_loop(k):
    """Tiny V forces repeats (centers, contexts, negatives == context): word2vec.c's order."""
    rng = np.random.default_rng(k)
    v, d, b, lr = 5, 9, 40, 0.2
    cv, ov = _tables(rng, v, d)
    center = rng.integers(0, v, b).astype(I32)
    context = rng.integers(0, v, b).astype(I32)
    negatives = rng.integers(0, v, (b, k)).astype(I32)
    negatives[0, 0] = context[0]  # a negative equal to the positive is kept
    if k > 1:
        negatives[1, 1] = negatives[1, 0]  # a repeated negative within a pair
    mask = np.ones(b, F32)
    mask[5] = 0.0

    new_cv, new_ov, loss = fused.sgns_update(
        jnp.asarray(cv),
        jnp.asarray(ov),
        jnp.asarray(center),
        jnp.asarray(context),
        jnp.asarray(negatives),
        jnp.asarray(mask),
        lr,
        num_threads=1,
    )
    cv_ref, ov_ref, loss_ref = _ref_sequential(
        cv, ov, _ns_pairs(center, context, negatives), mask, lr
    )
    np.testing.assert_allclose(np.asarray(new_cv), cv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_ov), ov_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(loss), loss_ref, rtol=1e-5, atol=1e-5)
    assert loss[5] == 0.0


def test_compute_loss_false_gives_same_update_and_zero_loss():
    rng = np.random.default_rng(3)
    v, d, b, k = 30, 8, 16, 5
    cv, ov = _tables(rng, v, d)
    args = (*_random_batch(rng, v, b, k), 0.1)
    a = fused.sgns_update(jnp.asarray(cv), jnp.asarray(ov), *args, num_threads=1)
    z = fused.sgns_update(
        jnp.asarray(cv), jnp.asarray(ov), *args, num_threads=1, compute_loss=False
    )
    np.testing.assert_array_equal(a[0], z[0])
    np.testing.assert_array_equal(a[1], z[1])
    np.testing.assert_array_equal(z[2], np.zeros(b, F32))
    assert np.all(np.asarray(a[2]) > 0)


def test_one_thread_is_deterministic_and_inputs_untouched_without_donation():
    rng = np.random.default_rng(4)
    v, d, b, k = 50, 16, 500, 5
    cv, ov = _tables(rng, v, d)
    cv_j, ov_j = jnp.asarray(cv), jnp.asarray(ov)
    args = (*_random_batch(rng, v, b, k), 0.05)
    r1 = fused.sgns_update(cv_j, ov_j, *args, num_threads=1)
    r2 = fused.sgns_update(cv_j, ov_j, *args, num_threads=1)
    for x, y in zip(r1, r2, strict=True):
        np.testing.assert_array_equal(x, y)
    # Not donated: XLA copied the tables before the in-place kernel ran.
    np.testing.assert_array_equal(cv_j, cv)
    np.testing.assert_array_equal(ov_j, ov)


def test_threads_match_one_thread_when_no_rows_are_shared():
    """Hogwild only differs from sequential on shared rows; with none, results are identical."""
    rng = np.random.default_rng(5)
    k, b, d = 5, 1000, 12
    v = b * (k + 1)
    cv, ov = _tables(rng, v, d)
    center = rng.permutation(v)[:b].astype(I32)
    outs = rng.permutation(v).astype(I32).reshape(b, k + 1)
    args = (
        jnp.asarray(center),
        jnp.asarray(outs[:, 0]),
        jnp.asarray(outs[:, 1:].copy()),
        jnp.ones(b, jnp.float32),
        0.1,
    )
    one = fused.sgns_update(jnp.asarray(cv), jnp.asarray(ov), *args, num_threads=1)
    for t in (2, 3):
        many = fused.sgns_update(jnp.asarray(cv), jnp.asarray(ov), *args, num_threads=t)
        for x, y in zip(one, many, strict=True):
            np.testing.assert_array_equal(x, y)


def test_jit_with_donation_updates_in_place_and_reruns():
    rng = np.random.default_rng(6)
    v, d, b, k = 40, 8, 32, 3
    cv, ov = _tables(rng, v, d)
    batches = [_random_batch(rng, v, b, k) for _ in range(3)]
    step = jax.jit(partial(fused.sgns_update, num_threads=1), donate_argnums=(0, 1))
    c_j, o_j = jnp.asarray(cv), jnp.asarray(ov)
    ptr = c_j.unsafe_buffer_pointer(), o_j.unsafe_buffer_pointer()
    for batch in batches:
        old = c_j
        c_j, o_j, loss = step(c_j, o_j, *batch, jnp.float32(0.1))
        assert old.is_deleted()
        assert (c_j.unsafe_buffer_pointer(), o_j.unsafe_buffer_pointer()) == ptr  # aliased
    # Same result as the undonated eager calls.
    c_e, o_e = jnp.asarray(cv), jnp.asarray(ov)
    for batch in batches:
        c_e, o_e, loss_e = fused.sgns_update(c_e, o_e, *batch, 0.1, num_threads=1)
    np.testing.assert_array_equal(c_j, c_e)
    np.testing.assert_array_equal(o_j, o_e)
    np.testing.assert_array_equal(loss, loss_e)


def test_scan_over_steps_with_donation():
    """The kernel composes with lax.scan (several steps per device call)."""
    rng = np.random.default_rng(7)
    v, d, b, k, s = 40, 8, 16, 3, 4
    cv, ov = _tables(rng, v, d)
    xs = (
        jnp.asarray(rng.integers(0, v, (s, b)).astype(I32)),
        jnp.asarray(rng.integers(0, v, (s, b)).astype(I32)),
        jnp.asarray(rng.integers(0, v, (s, b, k)).astype(I32)),
    )

    @partial(jax.jit, donate_argnums=(0, 1))
    def run(c_t, o_t, xs):
        def body(carry, x):
            c_t, o_t = carry
            c_t, o_t, loss = fused.sgns_update(
                c_t, o_t, *x, jnp.ones(b, jnp.float32), jnp.float32(0.1), num_threads=1
            )
            return (c_t, o_t), loss

        (c_t, o_t), losses = jax.lax.scan(body, (c_t, o_t), xs)
        return c_t, o_t, losses

    c_s, o_s, losses = run(jnp.asarray(cv), jnp.asarray(ov), xs)
    c_e, o_e = jnp.asarray(cv), jnp.asarray(ov)
    for i in range(s):
        c_e, o_e, loss = fused.sgns_update(
            c_e, o_e, xs[0][i], xs[1][i], xs[2][i], jnp.ones(b, jnp.float32), 0.1, num_threads=1
        )
        np.testing.assert_array_equal(losses[i], loss)
    np.testing.assert_array_equal(c_s, c_e)
    np.testing.assert_array_equal(o_s, o_e)


# ------------------------------------------------------------------------------------------------
# Boundary checks


def _good_args(v=10, d=4, b=3, k=2):
    return dict(
        center_vecs=jnp.zeros((v, d), jnp.float32),
        outside_vecs=jnp.zeros((v, d), jnp.float32),
        center=jnp.zeros(b, jnp.int32),
        context=jnp.zeros(b, jnp.int32),
        negatives=jnp.zeros((b, k), jnp.int32),
        mask=jnp.ones(b, jnp.float32),
        lr=0.1,
    )


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("center_vecs", jnp.zeros((10, 4), jnp.float64), "center_vecs must be float32"),
        ("outside_vecs", jnp.zeros((10, 5), jnp.float32), "same D"),
        ("center", jnp.zeros(3, jnp.int64), "center must be int32"),
        ("context", jnp.zeros(4, jnp.int32), "context and center lengths"),
        ("negatives", jnp.zeros(3, jnp.int32), "negatives must have rank 2"),
        ("mask", jnp.ones(3, jnp.int32), "mask must be float32"),
        ("lr", jnp.ones(2, jnp.float32), "lr must be a scalar"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(field, value, match):
    args = _good_args()
    args[field] = value
    with pytest.raises(ValueError, match=match):
        fused.sgns_update(**args)


@pytest.mark.parametrize("field", ["center", "context", "negatives"])
def test_out_of_range_ids_raise(field):
    args = _good_args()
    args[field] = args[field].at[1].set(10)
    step = jax.jit(partial(fused.sgns_update, num_threads=1))
    with pytest.raises(Exception, match="outside"):
        jax.block_until_ready(step(**args))


def test_fallback_is_reported_not_raised():
    """Without a compiler (or disabled) the module imports and reports why."""
    code = (
        "from w2v_jax import fused; ok = fused.fused_available(); "
        "print(ok, fused.unavailable_reason())"
    )
    for env in ({"W2V_JAX_DISABLE_FUSED": "1"}, {"W2V_JAX_CXX": "no-such-compiler-w2v"}):
        full_env = {**os.environ, **env, "W2V_JAX_CACHE": "/nonexistent-w2v-cache/x"}
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("False "), out.stdout
        reason = out.stdout.split(" ", 1)[1]
        assert ("W2V_JAX_DISABLE_FUSED" in reason) or ("no C++ compiler" in reason), reason


# ------------------------------------------------------------------------------------------------
# Alias table and in-kernel sampling


def _alias_implied(prob, alias):
    v = prob.shape[0]
    p = prob.astype(np.float64).copy()
    np.add.at(p, alias, 1.0 - prob.astype(np.float64))
    return p / v


def test_alias_table_reproduces_the_distribution():
    rng = np.random.default_rng(8)
    w = rng.pareto(1.0, 1000) + 1e-3
    w[7] = 0.0  # a word with zero weight is never drawn
    prob, alias = fused.alias_table(w)
    assert prob.dtype == np.float32 and alias.dtype == np.int32
    assert np.all((alias >= 0) & (alias < 1000))
    np.testing.assert_allclose(_alias_implied(prob, alias), w / w.sum(), atol=1e-7)
    with pytest.raises(ValueError):
        fused.alias_table([1.0, -1.0])
    with pytest.raises(ValueError):
        fused.alias_table([0.0, 0.0])


def test_alias_sample_follows_the_distribution_chi_square():
    scipy_stats = pytest.importorskip("scipy.stats")
    counts = np.array([900, 400, 250, 120, 60, 30, 10, 5, 3, 1], np.float64)
    w = counts**0.75
    prob, alias = fused.alias_table(w)
    draws = fused.alias_sample(
        jnp.asarray(prob), jnp.asarray(alias), jnp.array([123, 456], jnp.uint32), (50_000, 4)
    )
    observed = np.bincount(np.asarray(draws).ravel(), minlength=w.size)
    expected = w / w.sum() * observed.sum()
    _, p = scipy_stats.chisquare(observed, expected)
    assert p > 1e-3, (observed, expected)


def test_alias_sample_depends_on_seed_not_threads():
    prob, alias = fused.alias_table(np.arange(1, 301, dtype=np.float64) ** 0.75)
    p, a = jnp.asarray(prob), jnp.asarray(alias)
    seed = jnp.array([1, 2], jnp.uint32)
    one = fused.alias_sample(p, a, seed, (20_000, 5), num_threads=1)
    two = fused.alias_sample(p, a, seed, (20_000, 5), num_threads=2)
    np.testing.assert_array_equal(one, two)
    other = fused.alias_sample(p, a, jnp.array([1, 3], jnp.uint32), (20_000, 5))
    assert np.mean(np.asarray(one) == np.asarray(other)) < 0.2
    # The first rows of a longer draw are the same draws (counter = i*K + k).
    np.testing.assert_array_equal(fused.alias_sample(p, a, seed, (100, 5)), one[:100])


@pytest.mark.parametrize("jit", [False, True])
def test_sampled_update_equals_explicit_negatives(jit):
    rng = np.random.default_rng(9)
    v, d, b, k = 60, 10, 300, 5
    cv, ov = _tables(rng, v, d)
    prob, alias = fused.alias_table(rng.random(v) + 0.1)
    p, a = jnp.asarray(prob), jnp.asarray(alias)
    seed = fused.seed_words(jax.random.key(0))
    center = jnp.asarray(rng.integers(0, v, b).astype(I32))
    context = jnp.asarray(rng.integers(0, v, b).astype(I32))
    mask = jnp.ones(b, jnp.float32).at[3].set(0.0)
    negatives = fused.alias_sample(p, a, seed, (b, k))
    explicit = fused.sgns_update(
        jnp.asarray(cv), jnp.asarray(ov), center, context, negatives, mask, 0.1, num_threads=1
    )
    fn = partial(fused.sgns_update_sampled, negative=k, num_threads=1)
    sampled = (jax.jit(fn) if jit else fn)(
        jnp.asarray(cv), jnp.asarray(ov), center, context, mask, p, a, seed, 0.1
    )
    for x, y in zip(explicit, sampled, strict=True):
        np.testing.assert_array_equal(x, y)


def test_sampled_update_rejects_bad_seed_and_alias():
    args = _good_args()
    del args["negatives"]
    prob, alias = fused.alias_table(np.ones(10))
    with pytest.raises(ValueError, match="seed must be uint32"):
        fused.sgns_update_sampled(
            **args,
            alias_prob=jnp.asarray(prob),
            alias_idx=jnp.asarray(alias),
            seed=jnp.array([1, 2], jnp.int32),
            negative=2,
        )
    with pytest.raises(ValueError, match="alias table is longer"):
        fused.sgns_update_sampled(
            **args,
            alias_prob=jnp.ones(11, jnp.float32),
            alias_idx=jnp.zeros(11, jnp.int32),
            seed=jnp.array([1, 2], jnp.uint32),
            negative=2,
        )


# ------------------------------------------------------------------------------------------------
# Hierarchical softmax and CBOW


def _random_paths(rng, v, n_nodes, path_len):
    """Padded [V, L] points/codes and lengths; the kernel needs no real Huffman tree."""
    points = np.zeros((v, path_len), I32)
    codes = np.zeros((v, path_len), I32)
    lengths = rng.integers(1, path_len + 1, v).astype(I32)
    for w in range(v):
        n = lengths[w]
        points[w, :n] = rng.choice(n_nodes, n, replace=False)
        codes[w, :n] = rng.integers(0, 2, n)
    return points, codes, lengths


def test_sg_hs_equals_sequential_loop():
    rng = np.random.default_rng(10)
    v, d, b, path_len, lr = 12, 7, 50, 5, 0.2
    cv, _ = _tables(rng, v, d)
    nv = (rng.normal(size=(v - 1, d)) * 0.5).astype(F32)
    points, codes, lengths = _random_paths(rng, v, v - 1, path_len)
    center = rng.integers(0, v, b).astype(I32)
    context = rng.integers(0, v, b).astype(I32)
    mask = np.ones(b, F32)
    mask[1] = 0.0
    new_cv, new_nv, loss = fused.sg_hs_update(
        jnp.asarray(cv),
        jnp.asarray(nv),
        jnp.asarray(center),
        jnp.asarray(context),
        jnp.asarray(points),
        jnp.asarray(codes),
        jnp.asarray(lengths),
        jnp.asarray(mask),
        lr,
        num_threads=1,
    )
    pairs = [
        ([int(c)], list(points[o, : lengths[o]]), list(1.0 - codes[o, : lengths[o]]))
        for c, o in zip(center, context, strict=True)
    ]
    cv_ref, nv_ref, loss_ref = _ref_sequential(cv, nv, pairs, mask, lr)
    np.testing.assert_allclose(np.asarray(new_cv), cv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_nv), nv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(loss), loss_ref, rtol=1e-5, atol=1e-5)


def test_sg_hs_rejects_bad_paths():
    rng = np.random.default_rng(11)
    v, d, path_len = 6, 4, 3
    points, codes, lengths = _random_paths(rng, v, v - 1, path_len)
    codes[2, 0] = 2
    args = (
        jnp.zeros((v, d), jnp.float32),
        jnp.zeros((v - 1, d), jnp.float32),
        jnp.zeros(4, jnp.int32),
        jnp.full(4, 2, jnp.int32),
        jnp.asarray(points),
        jnp.asarray(codes),
        jnp.asarray(lengths),
        jnp.ones(4, jnp.float32),
        0.1,
    )
    with pytest.raises(Exception, match="Huffman entry"):
        jax.block_until_ready(fused.sg_hs_update(*args))


def _cbow_batch(rng, v, b, c):
    context = rng.integers(0, v, (b, c)).astype(I32)
    cmask = (rng.random((b, c)) < 0.7).astype(F32)
    cmask[0] = 0.0  # no context at all: skipped
    cmask[1] = 0.0
    cmask[1, 2] = 1.0  # a single context word
    return context, cmask


@pytest.mark.parametrize("mean,exact", [(True, False), (True, True), (False, False)])
def test_cbow_ns_equals_sequential_loop(mean, exact):
    rng = np.random.default_rng(12)
    v, d, b, c, k, lr = 9, 6, 40, 4, 3, 0.1
    cv, ov = _tables(rng, v, d)
    center = rng.integers(0, v, b).astype(I32)
    context, cmask = _cbow_batch(rng, v, b, c)
    negatives = rng.integers(0, v, (b, k)).astype(I32)
    mask = np.ones(b, F32)
    mask[4] = 0.0
    new_cv, new_ov, loss = fused.cbow_ns_update(
        jnp.asarray(cv),
        jnp.asarray(ov),
        jnp.asarray(center),
        jnp.asarray(context),
        jnp.asarray(cmask),
        jnp.asarray(negatives),
        jnp.asarray(mask),
        lr,
        cbow_mean=mean,
        exact_grad=exact,
        num_threads=1,
    )
    pairs = [
        (
            [int(x) for x, m in zip(ctx, cm, strict=True) if m > 0],
            [int(o), *map(int, n)],
            [1.0] + [0.0] * k,
        )
        for ctx, cm, o, n in zip(context, cmask, center, negatives, strict=True)
    ]
    cv_ref, ov_ref, loss_ref = _ref_sequential(cv, ov, pairs, mask, lr, mean=mean, exact=exact)
    np.testing.assert_allclose(np.asarray(new_cv), cv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_ov), ov_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(loss), loss_ref, rtol=1e-5, atol=1e-5)
    assert loss[0] == 0.0


def test_cbow_ns_sampled_equals_explicit_negatives():
    rng = np.random.default_rng(13)
    v, d, b, c, k = 30, 6, 200, 4, 5
    cv, ov = _tables(rng, v, d)
    prob, alias = fused.alias_table(rng.random(v) + 0.1)
    p, a = jnp.asarray(prob), jnp.asarray(alias)
    seed = jnp.array([7, 8], jnp.uint32)
    center = jnp.asarray(rng.integers(0, v, b).astype(I32))
    context, cmask = (jnp.asarray(x) for x in _cbow_batch(rng, v, b, c))
    mask = jnp.ones(b, jnp.float32)
    explicit = fused.cbow_ns_update(
        jnp.asarray(cv),
        jnp.asarray(ov),
        center,
        context,
        cmask,
        fused.alias_sample(p, a, seed, (b, k)),
        mask,
        0.1,
        num_threads=1,
    )
    sampled = fused.cbow_ns_update_sampled(
        jnp.asarray(cv),
        jnp.asarray(ov),
        center,
        context,
        cmask,
        mask,
        p,
        a,
        seed,
        0.1,
        negative=k,
        num_threads=1,
    )
    for x, y in zip(explicit, sampled, strict=True):
        np.testing.assert_array_equal(x, y)


def test_cbow_hs_equals_sequential_loop():
    rng = np.random.default_rng(14)
    v, d, b, c, path_len, lr = 10, 5, 40, 4, 4, 0.15
    cv, _ = _tables(rng, v, d)
    nv = (rng.normal(size=(v - 1, d)) * 0.5).astype(F32)
    points, codes, lengths = _random_paths(rng, v, v - 1, path_len)
    center = rng.integers(0, v, b).astype(I32)
    context, cmask = _cbow_batch(rng, v, b, c)
    mask = np.ones(b, F32)
    new_cv, new_nv, loss = fused.cbow_hs_update(
        jnp.asarray(cv),
        jnp.asarray(nv),
        jnp.asarray(center),
        jnp.asarray(context),
        jnp.asarray(cmask),
        jnp.asarray(points),
        jnp.asarray(codes),
        jnp.asarray(lengths),
        jnp.asarray(mask),
        lr,
        num_threads=1,
    )
    pairs = [
        (
            [int(x) for x, m in zip(ctx, cm, strict=True) if m > 0],
            list(points[o, : lengths[o]]),
            list(1.0 - codes[o, : lengths[o]]),
        )
        for ctx, cm, o in zip(context, cmask, center, strict=True)
    ]
    cv_ref, nv_ref, loss_ref = _ref_sequential(cv, nv, pairs, mask, lr)
    np.testing.assert_allclose(np.asarray(new_cv), cv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_nv), nv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(loss), loss_ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The deterministic multi-thread schedule


def _ranges_merged(call, tables, mask, t, touched, mean_rows=(None, None)):
    """The deterministic schedule by its definition, from one-thread calls.

    Range w = pairs [w B / t, (w+1) B / t) runs alone from the call's tables (``call(mask)``
    with the other ranges masked out). A row that one range touches takes that range's value; a
    row that several touch becomes its old value plus their changes, summed in range order
    (times 1/n for the rows of ``mean_rows[table]``, a set). ``touched(table, lo, hi)`` is the
    set of rows of that table the live pairs in [lo, hi) use.
    """
    b = mask.shape[0]
    bounds = [(b * w // t, b * (w + 1) // t) for w in range(t)]
    outs = []
    for lo, hi in bounds:
        m = np.zeros_like(mask)
        m[lo:hi] = mask[lo:hi]
        outs.append([np.asarray(x) for x in call(m)])
    merged = []
    for k, base in enumerate(tables):
        new = base.copy()
        sets = [touched(k, lo, hi) for lo, hi in bounds]
        for r in range(base.shape[0]):
            ws = [w for w in range(t) if r in sets[w]]
            if len(ws) == 1:
                new[r] = outs[ws[0]][k][r]
            elif ws:
                acc = np.zeros(base.shape[1], F32)
                for w in ws:
                    acc += outs[w][k][r] - base[r]
                mean = mean_rows[k] is not None and r in mean_rows[k]
                new[r] = base[r] + (acc * F32(1.0 / len(ws)) if mean else acc)
        merged.append(new)
    loss = np.sum([o[-1] for o in outs], axis=0, dtype=F32)
    return (*merged, loss)


def _live(mask, lo, hi):
    return [i for i in range(lo, hi) if mask[i] != 0]


def _scheduled(update, arrays, lr, **kw):
    """``call(mask, threads=1)``: ``update`` on fresh copies of ``arrays`` with ``mask`` last,
    under the deterministic schedule (the ``call`` of :func:`_ranges_merged`)."""

    def call(m, threads=1):
        args = (jnp.asarray(x) for x in (*arrays, m))
        return update(*args, lr, num_threads=threads, deterministic=True, **kw)

    return call


@pytest.mark.parametrize("t", [2, 3])
def test_deterministic_sgns_is_its_ranges_merged_in_thread_order(t):
    rng = np.random.default_rng(20)
    v, d, b, k = 40, 12, 64 * 3 + 17, 5  # every range holds >= 64 pairs, so t threads run
    cv, ov = _tables(rng, v, d)
    center = rng.integers(0, v, b).astype(I32)
    context = rng.integers(0, v, b).astype(I32)
    negatives = rng.integers(0, v, (b, k)).astype(I32)
    mask = np.ones(b, F32)
    mask[[5, 100]] = 0.0

    call = _scheduled(fused.sgns_update, (cv, ov, center, context, negatives), 0.1)

    def touched(table, lo, hi):
        live = _live(mask, lo, hi)
        if table == 0:
            return set(center[live].tolist())
        return set(context[live].tolist()) | set(negatives[live].ravel().tolist())

    want = _ranges_merged(call, (cv, ov), mask, t, touched)
    got = call(mask, threads=t)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(x), y)
    # Rows shared by ranges exist here (V = 40), so this differs from one thread.
    assert not np.array_equal(np.asarray(got[1]), np.asarray(call(mask)[1]))


def test_deterministic_cbow_ns_is_its_ranges_merged_in_thread_order():
    rng = np.random.default_rng(21)
    v, d, b, c, k, t = 30, 6, 200, 4, 3, 3
    cv, ov = _tables(rng, v, d)
    center = rng.integers(0, v, b).astype(I32)
    context, cmask = _cbow_batch(rng, v, b, c)
    negatives = rng.integers(0, v, (b, k)).astype(I32)
    mask = np.ones(b, F32)

    arrays = (cv, ov, center, context, cmask, negatives)
    call = _scheduled(fused.cbow_ns_update, arrays, 0.1, cbow_mean=True, exact_grad=True)

    def touched(table, lo, hi):
        live = [i for i in _live(mask, lo, hi) if cmask[i].any()]  # no context: skipped
        if table == 0:
            return {
                int(x) for i in live for x, m in zip(context[i], cmask[i], strict=True) if m > 0
            }
        return set(center[live].tolist()) | set(negatives[live].ravel().tolist())

    want = _ranges_merged(call, (cv, ov), mask, t, touched)
    for x, y in zip(call(mask, threads=t), want, strict=True):
        np.testing.assert_array_equal(np.asarray(x), y)


def test_deterministic_hs_averages_the_hot_nodes_and_sums_the_rest():
    rng = np.random.default_rng(22)
    v, d, b, path_len, t = 80, 8, 300, 6, 2
    n_nodes = v - 1
    cv, _ = _tables(rng, v, d)
    nv = (rng.normal(size=(n_nodes, d)) * 0.5).astype(F32)
    points, codes, lengths = _random_paths(rng, v, n_nodes, path_len)
    center = rng.integers(0, v, b).astype(I32)
    context = rng.integers(0, v, b).astype(I32)
    mask = np.ones(b, F32)

    call = _scheduled(fused.sg_hs_update, (cv, nv, center, context, points, codes, lengths), 0.2)

    def touched(table, lo, hi):
        live = _live(mask, lo, hi)
        if table == 0:
            return set(center[live].tolist())
        return {int(p) for i in live for p in points[context[i], : lengths[context[i]]]}

    hot = set(range(n_nodes - 64, n_nodes))  # the kernel's 64 nodes nearest the root
    want = _ranges_merged(call, (cv, nv), mask, t, touched, mean_rows=(None, hot))
    got = [np.asarray(x) for x in call(mask, threads=t)]
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[2], want[2])
    cold = sorted(set(range(n_nodes)) - hot)
    np.testing.assert_array_equal(got[1][cold], want[1][cold])
    # the mean's 1/n may be fused into one multiply-add: equal up to one rounding
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)


def test_deterministic_sampled_draws_the_same_negatives_and_repeats_bit_for_bit():
    rng = np.random.default_rng(23)
    v, d, b, k = 50, 10, 4000, 5
    cv, ov = _tables(rng, v, d)
    prob, alias = fused.alias_table(rng.random(v) + 0.1)
    p, a = jnp.asarray(prob), jnp.asarray(alias)
    seed = fused.seed_words(jax.random.key(3))
    center = jnp.asarray(rng.integers(0, v, b).astype(I32))
    context = jnp.asarray(rng.integers(0, v, b).astype(I32))
    mask = jnp.ones(b, jnp.float32)
    kw = dict(num_threads=4, deterministic=True)
    explicit = fused.sgns_update(
        jnp.asarray(cv),
        jnp.asarray(ov),
        center,
        context,
        fused.alias_sample(p, a, seed, (b, k)),
        mask,
        0.05,
        **kw,
    )
    for _ in range(3):  # 4 threads on any number of cores: no timing reaches the numbers
        sampled = fused.sgns_update_sampled(
            jnp.asarray(cv),
            jnp.asarray(ov),
            center,
            context,
            mask,
            p,
            a,
            seed,
            0.05,
            negative=k,
            **kw,
        )
        for x, y in zip(explicit, sampled, strict=True):
            np.testing.assert_array_equal(x, y)


def test_concurrent_callers_and_changing_thread_counts_give_the_same_bits():
    """The kernels' worker threads outlive a call and serve one call at a time; callers that
    overlap (XLA threads, simulated devices) or change the thread count get the numbers a lone
    call gives. The deterministic schedule makes those numbers exact for any timing."""
    import threading

    rng = np.random.default_rng(29)
    v, d, b, k = 40, 8, 3000, 5
    cv, ov = _tables(rng, v, d)
    args = (*_random_batch(rng, v, b, k), 0.05)

    def call(t):
        out = fused.sgns_update(
            jnp.asarray(cv), jnp.asarray(ov), *args, num_threads=t, deterministic=True
        )
        return [np.asarray(x) for x in out]

    alone = {t: call(t) for t in (2, 3, 4)}
    got: dict[tuple[int, int], list] = {}

    def worker(i):
        for r in range(4):
            t = 2 + (i + r) % 3
            got[(i, r)] = (t, call(t))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
        assert not th.is_alive(), "a kernel call did not return"
    assert len(got) == 12
    for t, out in got.values():
        for x, y in zip(alone[t], out, strict=True):
            np.testing.assert_array_equal(x, y)


def test_deterministic_rejects_a_bad_alias_entry():
    rng = np.random.default_rng(24)
    v, d, b = 20, 4, 512
    cv, ov = _tables(rng, v, d)
    prob, alias = fused.alias_table(np.ones(v))
    alias[3], prob[3] = 99, 0.0  # column 3 always takes its (out-of-range) alias
    with pytest.raises(Exception, match="alias_idx holds out-of-range entries"):
        fused.sgns_update_sampled(
            jnp.asarray(cv),
            jnp.asarray(ov),
            jnp.asarray(rng.integers(0, v, b).astype(I32)),
            jnp.asarray(rng.integers(0, v, b).astype(I32)),
            jnp.ones(b, jnp.float32),
            jnp.asarray(prob),
            jnp.asarray(alias),
            jnp.array([1, 2], jnp.uint32),
            0.1,
            negative=5,
            num_threads=2,
            deterministic=True,
        )
