"""Tests ``../w2v_jax/gradients.py`` against ``jax.grad`` of ``../w2v_jax/losses.py``.

Three sources in float64 (x64 is on in conftest.py): the hand-derived closed forms, ``jax.grad``
of the losses (tight tolerance, about 1e-10 relative), and central finite differences of the
losses (``jax.test_util.check_grads``). Plus the scatter-add contract the trainer relies on:
gathering rows from a table, taking the hand row gradients and scatter-adding them gives
``jax.grad`` with respect to the whole table, with repeated ids.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from w2v_jax import gradients, huffman, losses

D = 6
SCALES = [1e-2, 0.3, 3.0, 30.0]


def _normal(rng, *shape, scale=1.0):
    return jnp.asarray(scale * rng.normal(size=shape))


def _assert_close(got, want, rtol=1e-10):
    """Elementwise relative error <= rtol, with an absolute floor of rtol * max|want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    floor = rtol * max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=floor)


def _softmax_inputs(rng, scale, V=7):
    return _normal(rng, D, scale=scale), int(rng.integers(V)), _normal(rng, V, D, scale=scale)


def _ns_inputs(rng, scale, K=5):
    v_c, u_o = _normal(rng, D, scale=scale), _normal(rng, D, scale=scale)
    u_negs = _normal(rng, K, D, scale=scale)
    u_negs = u_negs.at[3].set(u_negs[1]).at[4].set(u_o)  # a repeat, and the positive itself
    return v_c, u_o, u_negs


def _hs_inputs(rng, scale, L=6):
    v_c, nodes = _normal(rng, D, scale=scale), _normal(rng, L, D, scale=scale)
    codes = jnp.asarray(rng.integers(0, 2, size=L))
    mask = jnp.array([True, True, False, True, True, False])  # partial, with a hole
    return v_c, nodes, codes, mask


# ----------------------------------------------------------------------------- hand == jax.grad


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", [0, 1])
def test_naive_softmax_grads_equal_autodiff(scale, seed):
    v_c, o, U = _softmax_inputs(np.random.default_rng(seed), scale)
    loss, dv_c, dU = gradients.naive_softmax_grads(v_c, o, U)
    want_loss, (want_v, want_U) = jax.value_and_grad(losses.naive_softmax_loss, (0, 2))(v_c, o, U)
    _assert_close(loss, want_loss)
    _assert_close(dv_c, want_v)
    _assert_close(dU, want_U)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", [0, 1])
def test_neg_sampling_grads_equal_autodiff(scale, seed):
    args = _ns_inputs(np.random.default_rng(seed), scale)
    loss, *grads = gradients.neg_sampling_grads(*args)
    want_loss, want = jax.value_and_grad(losses.neg_sampling_loss, (0, 1, 2))(*args)
    _assert_close(loss, want_loss)
    for g, w in zip(grads, want, strict=True):
        _assert_close(g, w)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", [0, 1])
def test_hierarchical_softmax_grads_equal_autodiff(scale, seed):
    args = _hs_inputs(np.random.default_rng(seed), scale)
    loss, dv_c, dnodes = gradients.hierarchical_softmax_grads(*args)
    want_loss, (want_v, want_n) = jax.value_and_grad(losses.hierarchical_softmax_loss, (0, 1))(
        *args
    )
    _assert_close(loss, want_loss)
    _assert_close(dv_c, want_v)
    _assert_close(dnodes, want_n)
    off_path = ~np.asarray(args[3])
    assert np.all(np.asarray(dnodes)[off_path] == 0.0)  # exactly 0, not just small


def test_sgns_closed_form_from_the_issue():
    """dJ/dv_c = -(1 - s(u_o.v_c)) u_o + sum_k (1 - s(-u_k.v_c)) u_k, written out literally."""
    v_c, u_o, u_negs = _ns_inputs(np.random.default_rng(2), 1.0)
    s = jax.nn.sigmoid
    want = -(1 - s(u_o @ v_c)) * u_o + sum((1 - s(-u_k @ v_c)) * u_k for u_k in u_negs)
    _assert_close(gradients.neg_sampling_grads(v_c, u_o, u_negs)[1], want)


# ----------------------------------------------------------------------------- jax.grad == FD


@pytest.mark.parametrize("seed", [0, 1])
def test_autodiff_equals_finite_differences(seed):
    rng = np.random.default_rng(seed)
    v_c, o, U = _softmax_inputs(rng, 0.5)
    check_grads(lambda v, u: losses.naive_softmax_loss(v, o, u), (v_c, U), order=1)
    check_grads(losses.neg_sampling_loss, _ns_inputs(rng, 0.5), order=1)
    v_c, nodes, codes, mask = _hs_inputs(rng, 0.5)
    check_grads(
        lambda v, n: losses.hierarchical_softmax_loss(v, n, codes, mask), (v_c, nodes), order=1
    )
    ctx, ctx_mask = _normal(rng, 4, D), jnp.array([1.0, 0.0, 1.0, 1.0])
    check_grads(lambda c: losses.cbow_hidden(c, ctx_mask, True), (ctx,), order=1)


# ----------------------------------------------------------------------------- scatter-add contract


def test_repeated_negatives_scatter_add_to_the_table_gradient():
    """Rows of a table gathered with repeats: scatter-adding hand rows == jax.grad w.r.t. table."""
    rng = np.random.default_rng(3)
    V, B = 5, 4
    center_table, outside_table = _normal(rng, V, D), _normal(rng, V, D)
    center = jnp.array([0, 2, 2, 4])
    context = jnp.array([1, 1, 3, 0])
    negatives = jnp.array([[1, 1, 3], [4, 0, 4], [2, 3, 3], [0, 1, 2]])  # repeats, o itself

    def total(cv, ov):
        return jnp.sum(losses.neg_sampling_loss_batch(cv[center], ov[context], ov[negatives]))

    want_c, want_o = jax.jit(jax.grad(total, (0, 1)))(center_table, outside_table)
    _, dv_c, du_o, du_negs = gradients.neg_sampling_grads_batch(
        center_table[center], outside_table[context], outside_table[negatives]
    )
    got_c = jnp.zeros((V, D)).at[center].add(dv_c)
    got_o = (
        jnp.zeros((V, D))
        .at[context]
        .add(du_o)
        .at[negatives.reshape(-1)]
        .add(du_negs.reshape(B * 3, D))
    )
    _assert_close(got_c, want_c)
    _assert_close(got_o, want_o)


def test_shared_huffman_nodes_scatter_add_and_padding_is_inert():
    rng = np.random.default_rng(4)
    counts = np.sort(rng.integers(1, 50, size=11))[::-1]
    tree = huffman.build_huffman(counts)
    V, L = tree.codes.shape
    mask = huffman.huffman_path_mask(tree.lengths, L)
    center_table, node_table = _normal(rng, V, D), _normal(rng, V - 1, D)
    center = jnp.array([0, 3, 3, 10, 7])
    target = jnp.array([10, 0, 10, 5, 5])  # every path shares the root; padding points are 0
    points, codes, on_path = tree.points[target], tree.codes[target], mask[target]

    def total(cv, nv):
        return jnp.sum(
            losses.hierarchical_softmax_loss_batch(cv[center], nv[points], codes, on_path)
        )

    want_c, want_n = jax.jit(jax.grad(total, (0, 1)))(center_table, node_table)
    _, dv_c, dnodes = gradients.hierarchical_softmax_grads_batch(
        center_table[center], node_table[points], codes, on_path
    )
    _assert_close(jnp.zeros((V, D)).at[center].add(dv_c), want_c)
    _assert_close(jnp.zeros((V - 1, D)).at[points.reshape(-1)].add(dnodes.reshape(-1, D)), want_n)


# ----------------------------------------------------------------------------- batched forms


@pytest.mark.parametrize("B", [1, 3])
def test_naive_softmax_grads_batch_equals_autodiff(B):
    rng = np.random.default_rng(5)
    V = 7
    v_c, U = _normal(rng, B, D), _normal(rng, V, D)
    outside = jnp.asarray(rng.integers(0, V, size=B)).at[0].set(2)
    if B > 1:
        outside = outside.at[1].set(2)  # a repeated target
    weights = jnp.asarray(rng.uniform(size=B)).at[-1].set(0.0)

    loss, dv_c, dU = gradients.naive_softmax_grads_batch(v_c, outside, U, weights)
    _assert_close(loss, losses.naive_softmax_loss_batch(v_c, outside, U))
    per_row = jax.jit(jax.vmap(jax.grad(losses.naive_softmax_loss), in_axes=(0, 0, None)))
    _assert_close(dv_c, per_row(v_c, outside, U))

    def weighted(u):
        return jnp.sum(weights * losses.naive_softmax_loss_batch(v_c, outside, u))

    _assert_close(dU, jax.jit(jax.grad(weighted))(U))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("K", [1, 5])
def test_row_grads_batch_equal_per_example(B, K):
    rng = np.random.default_rng(6)
    ns = [_ns_inputs(rng, 1.0, K=max(K, 5)) for _ in range(B)]
    ns = [(v, u, n[:K]) for v, u, n in ns]
    hs = [_hs_inputs(rng, 1.0) for _ in range(B)]
    for batch_fn, one_fn, examples in (
        (gradients.neg_sampling_grads_batch, gradients.neg_sampling_grads, ns),
        (gradients.hierarchical_softmax_grads_batch, gradients.hierarchical_softmax_grads, hs),
    ):
        stacked = [jnp.stack(a) for a in zip(*examples, strict=True)]
        got = batch_fn(*stacked)
        for b, ex in enumerate(examples):
            for g, w in zip(got, one_fn(*ex), strict=True):
                _assert_close(g[b], w, rtol=1e-13)


# ----------------------------------------------------------------------------- CBOW


CBOW_OUTPUTS = {
    "ns": (gradients.neg_sampling_grads, losses.neg_sampling_loss, _ns_inputs),
    "hs": (gradients.hierarchical_softmax_grads, losses.hierarchical_softmax_loss, _hs_inputs),
    "softmax": (gradients.naive_softmax_grads, losses.naive_softmax_loss, _softmax_inputs),
}


@pytest.mark.parametrize("loss_name", sorted(CBOW_OUTPUTS))
@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("mask", [[1, 0, 1, 1, 1], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1]])
def test_cbow_exact_rule_is_the_gradient_and_word2vec_rule_scales_it(loss_name, mean, mask):
    rng = np.random.default_rng(7)
    grads_fn, loss_fn, make = CBOW_OUTPUTS[loss_name]
    _, *rest = make(rng, 1.0)
    ctx = _normal(rng, len(mask), D)
    ctx_mask = jnp.asarray(mask, jnp.float64)

    def loss_of_ctx(c):
        return loss_fn(losses.cbow_hidden(c, ctx_mask, mean), *rest)

    want = jax.grad(loss_of_ctx)(ctx)
    dh = grads_fn(losses.cbow_hidden(ctx, ctx_mask, mean), *rest)[1]
    exact = gradients.cbow_context_grads(dh, ctx_mask, mean, "exact")
    _assert_close(exact, want)

    word2vec = gradients.cbow_context_grads(dh, ctx_mask > 0, mean, "word2vec")
    n = sum(mask)
    _assert_close(word2vec, n * exact if mean else exact, rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(word2vec)[np.asarray(mask) == 0], 0.0)


@pytest.mark.parametrize("rule", gradients.CBOW_RULES)
def test_cbow_all_padding_gives_zero_rows(rule):
    out = gradients.cbow_context_grads(jnp.ones(D), jnp.zeros(3), True, rule)
    np.testing.assert_array_equal(out, np.zeros((3, D)))


def test_cbow_rules_match_config_choices():
    from w2v_jax import config

    assert set(gradients.CBOW_RULES) == set(config.CBOW_GRADS)
    assert config.ModelConfig().cbow_grad == "word2vec"


# ----------------------------------------------------------------------------- numerics, jit


def _extreme(dtype, score):
    e0 = jnp.zeros(D, dtype).at[0].set(1)
    v_c, row = 10 * e0, (score / 10) * e0
    return {
        "softmax": (gradients.naive_softmax_grads, (v_c, 1, jnp.stack([row, -row, row]))),
        "ns": (gradients.neg_sampling_grads, (v_c, -row, jnp.stack([row, row]))),
        "hs": (
            gradients.hierarchical_softmax_grads,
            (v_c, jnp.stack([row, -row, row]), jnp.array([0, 1, 1]), jnp.array([1, 1, 0], bool)),
        ),
    }


@pytest.mark.parametrize("name", ["softmax", "ns", "hs"])
@pytest.mark.parametrize("score", [100.0, -100.0])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_finite_at_score_100(name, score, dtype):
    fn, args = _extreme(dtype, score)[name]
    for out in fn(*args):
        assert out.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_dtype_is_preserved_under_strict_promotion(dtype):
    """Losses and gradients keep the input dtype, with no silent upcast under strict promotion.

    Traced abstractly (``jax.eval_shape``): dtypes are decided at trace time, nothing compiles.
    """
    B, K, L, V, C = 2, 3, 4, 5, 3

    def f(*shape, kind=dtype):  # an abstract array: shape and dtype only
        return jax.ShapeDtypeStruct(shape, kind)

    softmax = (f(D), f(kind=jnp.int32), f(V, D))
    ns = (f(D), f(D), f(K, D))
    hs = (f(D), f(L, D), f(L, kind=jnp.int32), f(L, kind=jnp.bool_))
    softmax_b = (f(B, D), f(B, kind=jnp.int32), f(V, D))
    ns_b = (f(B, D), f(B, D), f(B, K, D))
    hs_b = (f(B, D), f(B, L, D), f(B, L, kind=jnp.int32), f(B, L, kind=jnp.bool_))
    cases = [
        (losses.naive_softmax_loss, softmax),
        (gradients.naive_softmax_grads, softmax),
        (losses.neg_sampling_loss, ns),
        (gradients.neg_sampling_grads, ns),
        (losses.hierarchical_softmax_loss, hs),
        (gradients.hierarchical_softmax_grads, hs),
        (losses.naive_softmax_loss_batch, softmax_b),
        (gradients.naive_softmax_grads_batch, (*softmax_b, f(B))),
        (losses.neg_sampling_loss_batch, ns_b),
        (gradients.neg_sampling_grads_batch, ns_b),
        (losses.hierarchical_softmax_loss_batch, hs_b),
        (gradients.hierarchical_softmax_grads_batch, hs_b),
        (functools.partial(losses.cbow_hidden, mean=True), (f(C, D), f(C))),
        (functools.partial(losses.cbow_hidden, mean=False), (f(C, D), f(C, kind=jnp.bool_))),
        (functools.partial(gradients.cbow_context_grads, mean=True, rule="exact"), (f(D), f(C))),
    ]
    with jax.numpy_dtype_promotion("strict"):
        for fn, args in cases:
            for out in jax.tree_util.tree_leaves(jax.eval_shape(fn, *args)):
                assert out.dtype == dtype


@pytest.mark.parametrize("name", ["softmax", "ns", "hs"])
def test_jit_and_vmap_equal_plain(name):
    fn, args = _extreme(jnp.float64, 0.7)[name]
    plain = fn(*args)
    jitted = jax.jit(fn)(*args)
    in_axes = tuple(None if isinstance(a, int) else 0 for a in args)
    stacked = tuple(a if isinstance(a, int) else jnp.stack([a, a]) for a in args)
    mapped = jax.vmap(fn, in_axes=in_axes)(*stacked)
    for p, j, m in zip(plain, jitted, mapped, strict=True):
        _assert_close(j, p, rtol=1e-14)
        _assert_close(m[1], p, rtol=1e-14)


def test_second_call_does_not_retrace():
    traces = []

    def step(v_c, u_o, u_negs, ctx_mask):
        traces.append(1)  # runs only while tracing
        _, dv_c, du_o, du_negs = gradients.neg_sampling_grads_batch(v_c, u_o, u_negs)
        d_ctx = jax.vmap(gradients.cbow_context_grads, in_axes=(0, 0, None, None))(
            dv_c, ctx_mask, True, "word2vec"
        )
        return d_ctx, du_o, du_negs

    fn = jax.jit(step)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        fn(_normal(rng, 3, D), _normal(rng, 3, D), _normal(rng, 3, 4, D), jnp.ones((3, 4)))
    assert len(traces) == 1


# ----------------------------------------------------------------------------- bad input


def test_bad_input_names_the_function_and_argument():
    v, rows = jnp.ones(D), jnp.ones((3, D))
    cases = [
        (gradients.neg_sampling_grads, (v, v, jnp.ones((3, D + 1))), "neg_sampling_grads: u_negs"),
        (gradients.naive_softmax_grads, (v, 3, rows), r"naive_softmax_grads: outside must be in"),
        (
            gradients.hierarchical_softmax_grads,
            (v, rows, jnp.array([0, 1, 2]), jnp.ones(3, bool)),
            "hierarchical_softmax_grads: codes must be 0 or 1",
        ),
        (
            gradients.naive_softmax_grads_batch,
            (rows, jnp.array([0, 1, 2]), rows, jnp.ones(2)),
            r"naive_softmax_grads_batch: weights must be \[B\] with B=3",
        ),
        (gradients.cbow_context_grads, (v, jnp.ones(3), True, "mean"), "rule must be one of"),
        (gradients.cbow_context_grads, (rows, jnp.ones(3), True, "exact"), "dh must be"),
    ]
    for fn, args, match in cases:
        with pytest.raises(ValueError, match=match):
            fn(*args)
