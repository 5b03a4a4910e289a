"""Tests `../w2v_jax/optim.py`: row-sparse optax updates against dense optax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax import optim

V, D = 11, 4


def _problem(seed=0, n=9):
    rng = np.random.default_rng(seed)
    table = jnp.asarray(rng.normal(size=(V, D)))
    ids = jnp.asarray(rng.integers(0, V // 2, size=n), jnp.int32)  # repeats; rows >= V//2 untouched
    grads = jnp.asarray(rng.normal(size=(n, D)))
    dense = jnp.zeros((V, D)).at[ids].add(grads)
    return table, ids, grads, dense


def test_linear_decay_endpoints():
    decay = optim.linear_decay
    assert float(decay(jnp.float64(0.0), 0.025, 1e-4)) == pytest.approx(0.025, rel=1e-12)
    assert float(decay(jnp.float64(1.0), 0.025, 1e-4)) == pytest.approx(1e-4, rel=1e-12)
    assert float(decay(jnp.float64(2.0), 0.025, 1e-4)) == pytest.approx(1e-4, rel=1e-12)
    assert float(decay(jnp.float64(0.5), 0.02, 0.0)) == pytest.approx(0.01, rel=1e-12)


def test_combine_duplicates_sums_repeated_ids():
    ids = jnp.asarray([3, 1, 3, 3, 0], jnp.int32)
    g = jnp.arange(10.0).reshape(5, 2)
    uniq, summed = optim.combine_duplicates(ids, g, num_rows=5)
    np.testing.assert_array_equal(uniq, [0, 1, 3, 5, 5])
    np.testing.assert_array_equal(summed[:3], [[8, 9], [2, 3], [0 + 4 + 6, 1 + 5 + 7]])
    np.testing.assert_array_equal(summed[3:], 0)


@pytest.mark.parametrize("name", ["sgd", "adagrad"])
def test_sparse_equals_dense_for_sgd_and_adagrad(name):
    table, ids, grads, dense_g = _problem()
    tx = optim.make_optimizer(name, 0.05, 0.05)  # a constant rate: 0.05 at any progress
    p = jnp.asarray(0.3)
    st_sparse = st_dense = tx.init(table)
    t_sparse = t_dense = table
    for step in range(3):  # several steps, so accumulated optimizer state matters
        t_sparse, st_sparse = optim.sparse_apply(
            tx, t_sparse, st_sparse, ids, grads * (step + 1), progress=p
        )
        t_dense, st_dense = optim.dense_apply(
            tx, t_dense, st_dense, dense_g * (step + 1), progress=p
        )
    # Equal up to float64 rounding: XLA may contract p - lr * g into an FMA in one program
    # and not in the other, so a last-bit difference is allowed, nothing more.
    np.testing.assert_allclose(t_sparse, t_dense, rtol=1e-14, atol=1e-15)
    leaves = zip(
        jax.tree_util.tree_leaves(st_sparse), jax.tree_util.tree_leaves(st_dense), strict=True
    )
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_scatter_add_fast_path_matches_dense_sgd():
    table, ids, grads, dense_g = _problem(seed=1)
    lr = 0.05
    fast = table.at[ids].add(-lr * grads)
    tx = optim.make_optimizer("sgd", lr, lr)
    ref, _ = optim.dense_apply(tx, table, tx.init(table), dense_g, progress=jnp.asarray(0.5))
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-14)


def test_lazy_adam_leaves_untouched_rows_alone():
    table, ids, grads, _ = _problem(seed=2)
    tx = optim.make_optimizer("adam", 0.1)
    st = tx.init(table)
    p = jnp.asarray(0.0)
    t1, st = optim.sparse_apply(tx, table, st, ids, grads, progress=p)
    # Second step touches only row 0: every other row, and its Adam moments, stay as they were.
    t2, st2 = optim.sparse_apply(
        tx, t1, st, jnp.asarray([0], jnp.int32), jnp.ones((1, D)), progress=p
    )
    np.testing.assert_array_equal(t2[1:], t1[1:])
    assert not np.array_equal(t2[0], t1[0])
    mu1 = st.inner_state[0].mu
    mu2 = st2.inner_state[0].mu
    np.testing.assert_array_equal(mu2[1:], mu1[1:])
    assert int(st2.inner_state[0].count) == 2  # the bias-correction count is per table


def test_sentinel_ids_are_ignored():
    table, ids, grads, _ = _problem(seed=3)
    tx = optim.make_optimizer("adagrad", 0.1)
    masked = jnp.where(jnp.arange(ids.shape[0]) % 2 == 0, ids, V)  # every other entry masked
    p = jnp.asarray(0.0)
    out, _ = optim.sparse_apply(tx, table, tx.init(table), masked, grads, progress=p)
    keep = np.asarray(masked) < V
    ref, _ = optim.sparse_apply(tx, table, tx.init(table), ids[keep], grads[keep], progress=p)
    np.testing.assert_array_equal(out, ref)


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="--optimizer"):
        optim.make_optimizer("lbfgs", 0.1)


def test_the_learning_rate_follows_the_schedule_of_progress():
    tx = optim.make_optimizer("adagrad", 0.1, 0.02)
    for p in (0.0, 0.5, 1.0, 2.0):
        assert float(optim.learning_rate(tx, jnp.asarray(p))) == pytest.approx(
            0.1 - 0.08 * min(p, 1.0), rel=1e-6
        )
    table, ids, grads, _ = _problem(seed=4)
    st = tx.init(table)
    _, st = optim.sparse_apply(tx, table, st, ids, grads, progress=jnp.asarray(0.5))
    assert float(st.hyperparams["learning_rate"]) == pytest.approx(0.06, rel=1e-6)
