"""Tests `../w2v_jax/sampling.py`: subsampling probabilities, noise distribution, samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from w2v_jax.sampling import (
    NoiseTable,
    build_noise_table,
    check_negatives,
    keep_probs,
    noise_distribution,
    sample_negatives,
    vose_alias,
)

_draw = jax.jit(lambda t, k: sample_negatives(t, k, (4000, 25)))  # one compile per table shape

COUNTS = np.array([5000, 1200, 700, 300, 90, 40, 11, 5, 5, 1], dtype=np.int64)


def test_keep_probs_word2vec_matches_word2vec_c_expression():
    t = 1e-2
    train_words = COUNTS.sum()
    cn = COUNTS.astype(np.float64)
    ran = (np.sqrt(cn / (t * train_words)) + 1) * (t * train_words) / cn  # word2vec.c
    np.testing.assert_allclose(keep_probs(COUNTS, t, "word2vec"), np.minimum(1.0, ran), rtol=1e-12)
    f = cn / train_words
    np.testing.assert_allclose(
        keep_probs(COUNTS, t, "word2vec"), np.minimum(1, np.sqrt(t / f) + t / f), rtol=1e-12
    )


def test_keep_probs_paper_and_off():
    t = 1e-2
    f = COUNTS / COUNTS.sum()
    expected = 1.0 - np.maximum(0.0, 1.0 - np.sqrt(t / f))
    np.testing.assert_allclose(keep_probs(COUNTS, t, "paper"), expected, rtol=1e-12)
    assert keep_probs(COUNTS, t, "paper")[0] < 1.0  # the frequent word is discarded sometimes
    np.testing.assert_array_equal(keep_probs(COUNTS, t, "off"), np.ones(len(COUNTS)))
    np.testing.assert_array_equal(keep_probs(COUNTS, 0.0, "word2vec"), np.ones(len(COUNTS)))


def test_keep_probs_rejects_unknown_rule():
    with pytest.raises(ValueError, match="subsample_rule"):
        keep_probs(COUNTS, 1e-3, "bogus")


@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0])
def test_noise_distribution_is_normalised_power(alpha):
    p = noise_distribution(COUNTS, alpha)
    expected = COUNTS.astype(float) ** alpha
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-12)
    assert p.dtype == np.float64


@pytest.mark.parametrize("alpha", [0.75, 0.0, 1.0])
def test_alias_table_encodes_the_distribution_exactly(alpha):
    counts = np.random.default_rng(3).integers(1, 10_000, size=997)
    table = build_noise_table(counts, alpha, "alias")
    v = counts.shape[0]
    prob = table.prob.astype(np.float64)
    implied = prob.copy()
    np.add.at(implied, table.alias, 1.0 - prob)
    np.testing.assert_allclose(implied / v, noise_distribution(counts, alpha), atol=1e-7)
    assert table.prob.dtype == np.float32 and table.alias.dtype == np.int32
    assert table.kind == "alias"


@pytest.mark.parametrize(
    "counts",
    [
        np.random.default_rng(3).integers(1, 10_000, size=997),
        np.sort(np.random.default_rng(4).zipf(1.3, size=50_000))[::-1],  # a real vocabulary's
        np.full(64, 7),  # every q exactly 1: nothing is paired
        np.array([10**9, 1, 1, 1]),  # one word takes nearly all
        np.array([3]),
    ],
    ids=["random", "zipf", "uniform", "skewed", "one"],
)
def test_alias_loop_in_cpp_gives_the_same_table(counts):
    """The C++ copy of Vose's loop (used once the kernels are loaded) must give the Python
    loop's table bit for bit: the default run's negatives, hence its vectors, depend on it."""
    from w2v_jax import fused

    if not fused.fused_available():
        pytest.skip(f"fused kernels unavailable: {fused.unavailable_reason()}")
    p = noise_distribution(counts, 0.75)
    native = vose_alias(p)
    python = vose_alias(p, native=False)
    assert fused.vose_alias_loaded(p * p.shape[0]) is not None  # the C++ loop did run
    np.testing.assert_array_equal(native[0], python[0])
    np.testing.assert_array_equal(native[1], python[1])
    assert native[0].dtype == np.float64 and native[1].dtype == np.int64


def test_unigram_table_slots_follow_the_distribution():
    counts = np.array([50, 30, 15, 5])
    table = build_noise_table(counts, 1.0, "table", table_size=1000)
    assert table.kind == "table" and table.table.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(table.table, minlength=4), [500, 300, 150, 50])


@pytest.mark.parametrize("kind", ["alias", "table"])
@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0])
def test_negatives_match_count_power_alpha(kind, alpha):
    counts = np.array([900, 400, 250, 120, 60, 33, 20, 9, 5, 5, 2, 1], dtype=np.int64)
    table = jax.device_put(build_noise_table(counts, alpha, kind, table_size=1_000_000))
    neg = _draw(table, jax.random.key(0))
    assert neg.shape == (4000, 25) and neg.dtype == jnp.int32
    observed = np.bincount(np.asarray(neg).ravel(), minlength=len(counts))
    expected = noise_distribution(counts, alpha) * neg.size
    assert observed.shape == (len(counts),)  # no id outside [0, V)
    p = stats.chisquare(observed, expected).pvalue
    assert p > 1e-3, (observed, expected)


def test_sample_negatives_is_a_pytree_function_of_the_key():
    table = build_noise_table(COUNTS, 0.75)
    assert isinstance(table, NoiseTable)
    a = _draw(table, jax.random.key(1))
    b = _draw(table, jax.random.key(1))
    c = _draw(table, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    leaves = jax.tree_util.tree_leaves(table)
    assert len(leaves) == 3


def test_check_negatives_rule():
    check_negatives(6, 5)
    check_negatives(2, 1)
    for v, k in [(1, 1), (5, 5), (3, 10)]:
        with pytest.raises(ValueError, match=r"--negative K=\d+ needs a vocabulary") as e:
            check_negatives(v, k)
        assert "\n" not in str(e.value) and f"V={v}" in str(e.value)
    with pytest.raises(ValueError, match="--negative"):
        check_negatives(100, 0)
