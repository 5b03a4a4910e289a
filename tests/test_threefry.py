"""Tests `../w2v_jax/threefry.py`: JAX's keys and uniform draws, bit for bit, in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax import step as step_lib
from w2v_jax import threefry

SEEDS = [0, 1, 7, 2**31 + 5, 2**32 - 1]


def _data(key) -> np.ndarray:
    return np.asarray(jax.random.key_data(key))


def test_jax_draws_its_default_keys_as_threefry_does_here():
    """The premise of every other test: JAX's default generator is the partitionable
    Threefry-2x32 (if a JAX release changes it, the callers fall back to jax.random)."""
    assert threefry.matches_jax()
    assert threefry.matches_jax("threefry2x32")
    assert not threefry.matches_jax("rbg")


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_keys_and_their_splits_are_jax_random_s(seed):
    key = jax.random.key(seed)
    assert _data(key).tobytes() == threefry.seed_key(seed).tobytes()
    for num in (1, 2, 3, 8):
        want = _data(jax.random.split(key, num))
        assert want.tobytes() == threefry.split(threefry.seed_key(seed), num).tobytes()
    got = threefry.split_seed(seed, 3)
    assert len(got) == 3
    for k, w in zip(got, jax.random.split(key, 3), strict=True):
        assert str(jax.random.key_impl(k)) == "threefry2x32"
        assert _data(k).tobytes() == _data(w).tobytes()


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_outside_32_bits_is_refused(seed):
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*32\)"):
        threefry.seed_key(seed)


@pytest.mark.parametrize("dim", [1, 3, 7, 50, 100, 300])
@pytest.mark.parametrize("seed", [0, 3])
def test_a_symmetric_uniform_table_is_jax_random_uniform_bit_for_bit(dim, seed):
    """Every bound 0.5 / dim word2vec uses: the value's multiply-add, rounded once in JAX, is
    exact in float64 here (see the docstring), so each float is the same."""
    key = jax.random.split(jax.random.key(seed))[0]
    bound = 0.5 / dim
    want = np.asarray(jax.random.uniform(key, (1001, dim), jnp.float32, -bound, bound))
    got = threefry.symmetric_uniform(_data(key), dim, bound, (0, 1001), (0, dim))
    assert got.dtype == np.float32 and got.shape == (1001, dim)
    assert got.tobytes() == want.tobytes()


def test_blocks_across_chunks_and_columns_are_those_of_the_whole_table(monkeypatch):
    """Chunks that cut rows anywhere, a block of rows and one of columns: the same floats."""
    monkeypatch.setattr(threefry, "_CHUNK", 37)
    key = jax.random.key(11)
    dim, bound = 30, 0.5 / 30
    want = np.asarray(jax.random.uniform(key, (200, dim), jnp.float32, -bound, bound))
    got = threefry.symmetric_uniform(_data(key), dim, bound, (13, 171), (4, 29))
    assert got.tobytes() == want[13:171, 4:29].tobytes()


def test_flat_indices_past_two_to_the_32_use_the_counters_high_word(monkeypatch):
    """Rows of a table of more than 2^32 elements (never materialised): the host draw equals
    the device's block program, whose counters carry into the high word."""
    monkeypatch.setattr(step_lib, "_HOST_INIT_MAX", 0)  # the device path, for reference
    dim = 1000
    rows = (1 << 32) // dim + 10
    lo = (1 << 32) // dim - 2  # its rows straddle flat index 2^32
    key = jax.random.key(5)
    want = np.asarray(step_lib.uniform_rows(key, rows, dim, -0.0005, 0.0005, lo, lo + 5))
    got = threefry.symmetric_uniform(_data(key), dim, 0.0005, (lo, lo + 5), (0, dim))
    assert got.tobytes() == want.tobytes()
    assert not np.array_equal(got[0], got[-1])


def test_the_initial_state_is_made_on_the_host_with_jax_s_values(monkeypatch):
    """init_params and init_state for a small table come from NumPy (no program is traced)
    with the values of jax.random and jnp.zeros."""
    from w2v_jax.config import Config
    from w2v_jax.trainer import resolve

    objective, _, tx = resolve(Config())
    key = jax.random.key(2)
    params = step_lib.init_params(objective, 500, 20, key)
    state = step_lib.init_state(params, tx)
    want = jax.random.uniform(key, (500, 20), jnp.float32, -0.5 / 20, 0.5 / 20)
    assert np.asarray(params["center_vecs"]).tobytes() == np.asarray(want).tobytes()
    out = np.asarray(params[objective.table])
    assert out.shape == (objective.table_rows(500), 20) and out.dtype == np.float32
    assert not out.any()
    assert state.step.dtype == jnp.int32 and int(state.step) == 0
    assert state.scratch.shape == (500,) and not np.asarray(state.scratch).any()

    # a resume takes the shapes of a fresh state by tracing it: the host draw stands aside
    shapes = jax.eval_shape(
        lambda: step_lib.init_state(step_lib.init_params(objective, 500, 20, key), tx)
    )
    assert shapes.params["center_vecs"].shape == (500, 20)

    traced = []
    monkeypatch.setattr(jax.random, "uniform", lambda *a, **k: traced.append(a))
    step_lib.init_params(objective, 500, 20, key)
    assert traced == []  # the host drew it
