"""Tests ``../w2v_jax/losses.py``: brute-force values, invariants, numerics, jit/vmap, errors.

Gradients are tested in ``test_gradients.py``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax import huffman, losses

D = 6


def _normal(rng, *shape, scale=1.0):
    return jnp.asarray(scale * rng.normal(size=shape))


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- values


def test_naive_softmax_matches_brute_force_loop():
    V = 7
    rng = np.random.default_rng(0)
    for _ in range(3):
        v_c, U = _normal(rng, D), _normal(rng, V, D)
        for o in range(V):
            scores = [_dot(U[w], v_c) for w in range(V)]
            expected = -math.log(math.exp(scores[o]) / sum(math.exp(s) for s in scores))
            got = losses.naive_softmax_loss(v_c, o, U)
            assert float(got) == pytest.approx(expected, rel=1e-12)


def test_neg_sampling_matches_brute_force_and_repeats_count_twice():
    rng = np.random.default_rng(1)
    v_c, u_o, u_a, u_b = (_normal(rng, D) for _ in range(4))
    u_negs = jnp.stack([u_a, u_b, u_a])  # u_a drawn twice
    expected = -math.log(_sigmoid(_dot(u_o, v_c)))
    expected -= 2 * math.log(_sigmoid(-_dot(u_a, v_c))) + math.log(_sigmoid(-_dot(u_b, v_c)))
    assert float(losses.neg_sampling_loss(v_c, u_o, u_negs)) == pytest.approx(expected, rel=1e-12)


def test_neg_sampling_with_no_negatives_is_log_sigmoid():
    rng = np.random.default_rng(2)
    v_c, u_o = _normal(rng, D), _normal(rng, D)
    got = losses.neg_sampling_loss(v_c, u_o, jnp.zeros((0, D)))
    assert float(got) == pytest.approx(-math.log(_sigmoid(_dot(u_o, v_c))), rel=1e-12)


def test_hierarchical_softmax_matches_brute_force_loop():
    rng = np.random.default_rng(3)
    L = 5
    v_c, nodes = _normal(rng, D), _normal(rng, L, D)
    codes = jnp.array([0, 1, 1, 0, 1])
    mask = jnp.array([True, True, False, True, False])  # partial, not only a prefix
    expected = 0.0
    for j in range(L):
        if mask[j]:
            expected -= math.log(_sigmoid((1 - 2 * int(codes[j])) * _dot(nodes[j], v_c)))
    got = losses.hierarchical_softmax_loss(v_c, nodes, codes, mask)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_hierarchical_softmax_is_a_distribution_over_the_tree():
    """exp(-J) over every word's Huffman path equals the tree's P(w|c), and sums to one."""
    rng = np.random.default_rng(4)
    counts = np.sort(rng.integers(1, 100, size=23))[::-1]
    tree = huffman.build_huffman(counts)
    V, L = tree.codes.shape
    mask = huffman.huffman_path_mask(tree.lengths, L)
    v_c, node_table = _normal(rng, D), _normal(rng, V - 1, D)
    batch_v = jnp.broadcast_to(v_c, (V, D))
    loss_V = losses.hierarchical_softmax_loss_batch(
        batch_v, node_table[tree.points], tree.codes, mask
    )
    p_tree = huffman.hs_path_probabilities(tree, v_c, node_table)
    np.testing.assert_allclose(np.exp(-np.asarray(loss_V)), p_tree, rtol=1e-12)
    assert float(jnp.sum(jnp.exp(-loss_V))) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("mean", [True, False])
def test_cbow_hidden_mean_and_sum(mean):
    rng = np.random.default_rng(5)
    ctx = _normal(rng, 4, D)
    mask = jnp.array([1.0, 0.0, 1.0, 1.0])
    expected = ctx[0] + ctx[2] + ctx[3]
    if mean:
        expected = expected / 3
    np.testing.assert_allclose(losses.cbow_hidden(ctx, mask, mean), expected, rtol=1e-14)
    np.testing.assert_array_equal(
        losses.cbow_hidden(ctx, mask.astype(bool), mean), losses.cbow_hidden(ctx, mask, mean)
    )


@pytest.mark.parametrize("mean", [True, False])
def test_cbow_hidden_padding_is_inert(mean):
    ctx = jnp.array([[1.0, 2.0], [jnp.nan, jnp.inf]])
    np.testing.assert_array_equal(losses.cbow_hidden(ctx, jnp.array([1, 0]), mean), [1.0, 2.0])
    empty = losses.cbow_hidden(ctx, jnp.zeros(2), mean)  # an all-padding row: no 0/0
    np.testing.assert_array_equal(empty, [0.0, 0.0])


# ----------------------------------------------------------------------------- numerics


def _extreme_inputs(dtype, score):
    """Inputs whose every score is +-score (v_c = 10 e_0, rows = +-score/10 e_0)."""
    e0 = jnp.zeros(D, dtype).at[0].set(1)
    v_c = 10 * e0
    row = (score / 10) * e0
    return {
        "softmax": (v_c, 1, jnp.stack([row, -row, row])),
        "ns": (v_c, -row, jnp.stack([row, row])),
        "hs": (v_c, jnp.stack([row, -row, row]), jnp.array([0, 1, 1]), jnp.array([1, 1, 0], bool)),
    }


LOSS_FNS = {
    "softmax": losses.naive_softmax_loss,
    "ns": losses.neg_sampling_loss,
    "hs": losses.hierarchical_softmax_loss,
}


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
@pytest.mark.parametrize("score", [100.0, -100.0])
def test_finite_loss_and_grad_at_score_100_float32(name, score):
    args = _extreme_inputs(jnp.float32, score)[name]
    fn = LOSS_FNS[name]
    loss = fn(*args)
    assert loss.dtype == jnp.float32 and jnp.isfinite(loss)
    assert float(loss) >= 0
    argnums = (0, 2) if name == "softmax" else (0, 1)
    for g in jax.grad(fn, argnums=argnums)(*args):
        assert bool(jnp.all(jnp.isfinite(g)))


def test_wrong_confident_prediction_costs_its_score():
    """log-sigmoid, not an exp table: a wrong prediction at score 100 costs ~100, not inf/6."""
    args = _extreme_inputs(jnp.float32, 100.0)["ns"]  # u_o . v_c = -100, negatives at +100
    assert float(losses.neg_sampling_loss(*args)) == pytest.approx(300.0, rel=1e-6)


# dtype preservation (with strict promotion) is tested for losses and gradients together, in
# test_gradients.py::test_dtype_is_preserved_under_strict_promotion.


# ----------------------------------------------------------------------------- jit and vmap


def _batch_inputs(rng, B=4, K=3, L=5, V=9):
    codes = jnp.array(rng.integers(0, 2, size=(B, L)))
    lengths = rng.integers(1, L + 1, size=B)
    mask = jnp.asarray(np.arange(L)[None, :] < lengths[:, None])
    outside = jnp.array(rng.integers(0, V, size=B))
    return {
        "softmax": (_normal(rng, B, D), outside, _normal(rng, V, D)),
        "ns": (_normal(rng, B, D), _normal(rng, B, D), _normal(rng, B, K, D)),
        "hs": (_normal(rng, B, D), _normal(rng, B, L, D), codes, mask),
    }


BATCH_FNS = {
    "softmax": (losses.naive_softmax_loss_batch, (0, 0, None)),
    "ns": (losses.neg_sampling_loss_batch, (0, 0, 0)),
    "hs": (losses.hierarchical_softmax_loss_batch, (0, 0, 0, 0)),
}


@pytest.mark.parametrize("name", sorted(BATCH_FNS))
def test_batch_equals_loop_and_jit_and_vmap_equal_plain(name):
    args = _batch_inputs(np.random.default_rng(8))[name]
    batch_fn, in_axes = BATCH_FNS[name]
    one = LOSS_FNS[name]
    B = args[0].shape[0]
    loop = jnp.stack(
        [
            one(*(a if ax is None else a[b] for a, ax in zip(args, in_axes, strict=True)))
            for b in range(B)
        ]
    )
    np.testing.assert_allclose(batch_fn(*args), loop, rtol=1e-13)
    np.testing.assert_allclose(jax.jit(batch_fn)(*args), loop, rtol=1e-13)
    np.testing.assert_allclose(jax.jit(jax.vmap(one, in_axes=in_axes))(*args), loop, rtol=1e-13)
    first = tuple(a if ax is None else a[0] for a, ax in zip(args, in_axes, strict=True))
    np.testing.assert_allclose(jax.jit(one)(*first), loop[0], rtol=1e-13)


@pytest.mark.parametrize("name", sorted(BATCH_FNS))
def test_second_call_with_same_shapes_does_not_retrace(name):
    batch_fn, _ = BATCH_FNS[name]
    traces = []

    def counted(*args):
        traces.append(1)  # runs only while tracing
        return batch_fn(*args)

    fn = jax.jit(counted)
    for seed in (9, 10, 11):
        fn(*_batch_inputs(np.random.default_rng(seed))[name]).block_until_ready()
    assert len(traces) == 1


def test_cbow_hidden_under_jit_and_vmap():
    rng = np.random.default_rng(12)
    ctx = _normal(rng, 3, 4, D)
    mask = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], jnp.float32)
    batched = jax.jit(jax.vmap(losses.cbow_hidden, in_axes=(0, 0, None)), static_argnums=2)
    for mean in (True, False):
        loop = jnp.stack([losses.cbow_hidden(ctx[b], mask[b], mean) for b in range(3)])
        np.testing.assert_allclose(batched(ctx, mask, mean), loop, rtol=1e-14)


# ----------------------------------------------------------------------------- bad input

_V = jnp.ones(8)
_ROWS = jnp.ones((3, 8))

BAD_INPUTS = [
    pytest.param(
        losses.neg_sampling_loss,
        (_V, _V, jnp.ones((3, 7))),
        r"u_negs must be \[K, D\] with D=8 matching v_c, got \(3, 7\)",
    ),
    pytest.param(losses.neg_sampling_loss, (_V, jnp.ones(7), _ROWS), r"u_o must be \[D\] with D=8"),
    pytest.param(losses.neg_sampling_loss, (_ROWS, _V, _ROWS), r"v_c must be \[D\], got \(3, 8\)"),
    pytest.param(
        losses.neg_sampling_loss,
        (jnp.ones(8, int), _V, _ROWS),
        "v_c must be a floating-point array",
    ),
    pytest.param(losses.naive_softmax_loss, (_V, 3, _ROWS), r"outside must be in \[0, 3\)"),
    pytest.param(losses.naive_softmax_loss, (_V, -1, _ROWS), r"outside must be in \[0, 3\)"),
    pytest.param(losses.naive_softmax_loss, (_V, 1.0, _ROWS), "outside must be integer"),
    pytest.param(
        losses.naive_softmax_loss, (_V, 1, jnp.ones((3, 4))), r"U must be \[V, D\] with D=8"
    ),
    pytest.param(
        losses.hierarchical_softmax_loss,
        (_V, _ROWS, jnp.array([0, 2, 1]), jnp.ones(3, bool)),
        "codes must be 0 or 1",
    ),
    pytest.param(
        losses.hierarchical_softmax_loss,
        (_V, _ROWS, jnp.array([0, 1]), jnp.ones(3, bool)),
        r"codes must be \[L\] with L=3",
    ),
    pytest.param(
        losses.hierarchical_softmax_loss,
        (_V, _ROWS, jnp.zeros(3), jnp.ones(3, bool)),
        "codes must be integer",
    ),
    pytest.param(
        losses.hierarchical_softmax_loss,
        (_V, _ROWS, jnp.zeros(3, int), jnp.ones(4, bool)),
        r"mask must be \[L\] with L=3",
    ),
    pytest.param(
        losses.cbow_hidden, (_ROWS, jnp.ones(2), True), r"ctx_mask must be \[C\] with C=3"
    ),
    pytest.param(losses.cbow_hidden, (_V, jnp.ones(8), True), r"ctx_vecs must be \[C, D\]"),
    pytest.param(
        losses.naive_softmax_loss_batch,
        (_ROWS, jnp.array([0, 1, 5]), jnp.ones((4, 8))),
        r"outside must be in \[0, 4\)",
    ),
    pytest.param(
        losses.naive_softmax_loss_batch,
        (_ROWS, jnp.array([0, 1]), jnp.ones((4, 8))),
        r"outside must be \[B\] ints with B=3",
    ),
    pytest.param(
        losses.neg_sampling_loss_batch,
        (_ROWS, _ROWS, jnp.ones((2, 5, 8))),
        r"u_negs must be \[B, K, D\] with B=3, D=8",
    ),
    pytest.param(
        losses.hierarchical_softmax_loss_batch,
        (_ROWS, jnp.ones((3, 4, 8)), jnp.full((3, 4), 3), jnp.ones((3, 4), bool)),
        "codes must be 0 or 1",
    ),
]


@pytest.mark.parametrize(("fn", "args", "match"), BAD_INPUTS)
def test_bad_input_names_the_argument(fn, args, match):
    with pytest.raises(ValueError, match=f"^{fn.__name__}: {match}"):
        fn(*args)


def test_shape_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="u_negs must be"):
        jax.jit(losses.neg_sampling_loss)(_V, _V, jnp.ones((3, 7)))
