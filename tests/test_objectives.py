"""Tests `../w2v_jax/objectives.py`: every objective's hand gradients, targets and constants.

Parametrised over all built-in objectives (``objectives.BUILTIN``, plus autodiff variants), so a
new objective is checked by adding it there. Gradients in float64 (x64 is on in conftest.py):
hand vs ``jax.grad`` through :func:`objectives.check_gradients`, and ``jax.grad`` vs central
finite differences of the reference loss.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from w2v_jax import gradients, losses, objectives, sampling

K = 4


def _builtin(name):
    return objectives.BUILTIN[name](K, 0.75)


ALL = sorted(objectives.BUILTIN)
ROWS = [n for n in ALL if not _builtin(n).dense]


@pytest.mark.parametrize("scale", [0.05, 0.5, 3.0])
@pytest.mark.parametrize("name", ALL)
def test_hand_gradients_equal_autodiff(name, scale):
    err = objectives.check_gradients(_builtin(name), scale=scale, seed=int(10 * scale))
    assert err <= 1e-9


@pytest.mark.parametrize("name", ALL)
def test_autodiff_objective_is_checked_equal_too(name):
    assert objectives.check_gradients(objectives.autodiff(_builtin(name))) <= 1e-12


def test_check_gradients_catches_a_wrong_gradient():
    sgns = _builtin("ns")

    def wrong(h, rows, tg):
        loss, dh, drows = objectives.sgns_row_grads(h, rows, tg)
        return loss, dh, drows.at[:, 1].multiply(1.01)  # 1% off on the first negative

    with pytest.raises(AssertionError, match="dJ/drows"):
        objectives.check_gradients(dataclasses.replace(sgns, row_grads=wrong))


@pytest.mark.parametrize("name", ROWS)
def test_reference_loss_matches_finite_differences(name):
    objective = _builtin(name)
    rng = np.random.default_rng(1)
    counts = np.arange(30, 0, -1) ** 2
    consts = jax.device_put(objective.make_consts(counts))
    tg = objective.targets(consts, jnp.asarray([3, 7], jnp.int32), jax.random.key(2))
    tg1 = jax.tree.map(lambda x: x[0], tg)
    h = jnp.asarray(rng.normal(0, 0.5, 6))
    rows = jnp.asarray(rng.normal(0, 0.5, (tg.ids.shape[1], 6)))
    check_grads(lambda h, r: objective.row_loss(h, r, tg1), (h, rows), order=1, modes=["rev"])


@pytest.mark.parametrize("name", ROWS)
def test_targets_are_well_formed(name):
    objective = _builtin(name)
    v = 30
    consts = jax.device_put(objective.make_consts(np.arange(v, 0, -1) ** 2))
    predicted = jnp.arange(v, dtype=jnp.int32)
    tg = objective.targets(consts, predicted, jax.random.key(0))
    ids, labels, mask = (np.asarray(x) for x in (tg.ids, tg.labels, tg.mask))
    assert ids.shape == labels.shape == mask.shape and ids.shape[0] == v
    assert ids.min() >= 0 and ids.max() < objective.table_rows(v)
    assert set(np.unique(labels)) <= {0, 1}
    if name == "hs":  # one label per node on the path, the path as long as the code
        lengths = np.asarray(consts["lengths"])
        np.testing.assert_array_equal(mask.sum(1), lengths)
    else:  # the predicted word first, with label 1, then K noise draws with label 0
        np.testing.assert_array_equal(ids[:, 0], np.arange(v))
        np.testing.assert_array_equal(labels[:, 0], 1)
        assert not labels[:, 1:].any() and mask.all() and ids.shape[1] == K + 1


def test_nce_offsets_are_log_k_pn():
    counts = np.array([100, 50, 20, 5, 1])
    consts = _builtin("nce").make_consts(counts)
    p_n = sampling.noise_distribution(counts, 0.75)
    np.testing.assert_allclose(consts["log_kpn"], np.log(K * p_n), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_nce_grads_are_logistic_grads_with_offsets(seed):
    rng = np.random.default_rng(seed)
    v_c, u_o, u_k = (jnp.asarray(rng.normal(0, 1, s)) for s in ((6,), (6,), (K, 6)))
    b_o, b_k = jnp.asarray(rng.normal()), jnp.asarray(rng.normal(0, 1, K))
    loss, dv, du_o, du_k = gradients.nce_grads(v_c, u_o, u_k, b_o, b_k)
    rows = jnp.concatenate([u_o[None], u_k])
    labels = jnp.array([1] + [0] * K)
    bias = jnp.concatenate([b_o[None], b_k])
    want = gradients.logistic_grads(v_c, rows, labels, jnp.ones(K + 1, bool), bias)
    np.testing.assert_allclose(loss, want[0], rtol=1e-12)
    np.testing.assert_allclose(dv, want[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jnp.concatenate([du_o[None], du_k]), want[2], rtol=1e-12)
    # and against jax.grad of nce_loss, argument by argument
    auto = jax.grad(losses.nce_loss, argnums=(0, 1, 2))(v_c, u_o, u_k, b_o, b_k)
    for g, w in zip((dv, du_o, du_k), auto, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-14)


def test_sgns_is_nce_without_offsets_and_hs_is_logistic_bit_for_bit():
    rng = np.random.default_rng(3)
    v_c, u_o, u_k = (jnp.asarray(rng.normal(0, 1, s)) for s in ((6,), (6,), (K, 6)))
    zero = jnp.zeros(())
    for a, b in zip(
        gradients.neg_sampling_grads(v_c, u_o, u_k),
        gradients.nce_grads(v_c, u_o, u_k, zero, jnp.zeros(K)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    nodes = jnp.asarray(rng.normal(0, 1, (5, 6)))
    codes = jnp.array([0, 1, 1, 0, 1])
    mask = jnp.array([True, True, True, False, False])
    hs = gradients.hierarchical_softmax_grads(v_c, nodes, codes, mask)
    lg = gradients.logistic_grads(v_c, nodes, 1 - codes, mask)
    for a, b in zip(hs, lg, strict=True):
        np.testing.assert_array_equal(a, b)


def test_nce_expected_gradient_vanishes_at_the_true_log_probabilities():
    # NCE's fixed point (Gutmann & Hyvarinen 2010): if u_w.v_c = log P(w | c) for every w, the
    # gradient in expectation over the data word o ~ P(.|c) and K noise draws k ~ P_n is zero.
    # One-hot output rows e_w and v_c = log P(.|c) make the scores exactly log P(w | c).
    v = 6
    p_data = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    p_n = sampling.noise_distribution(np.array([50, 30, 20, 10, 5, 1]), 0.75)
    log_kpn = jnp.asarray(np.log(K * p_n))
    v_c = jnp.asarray(np.log(p_data))
    eye = jnp.eye(v)
    none = jnp.zeros((0, v))
    expected = jnp.zeros(v)
    for w in range(v):
        as_data = gradients.nce_grads(v_c, eye[w], none, log_kpn[w], jnp.zeros(0))[1]
        as_noise = gradients.nce_grads(v_c, jnp.zeros(v), eye[w][None], 0.0, log_kpn[w][None])[1]
        expected = expected + p_data[w] * as_data + K * p_n[w] * as_noise
    np.testing.assert_allclose(expected, 0.0, atol=1e-12)
    # while SGNS's expected gradient at the same point is not zero (it estimates a shifted PMI)
    sgns = sum(
        p_data[w] * gradients.neg_sampling_grads(v_c, eye[w], none)[1]
        + K * p_n[w] * gradients.neg_sampling_grads(v_c, jnp.zeros(v), eye[w][None])[1]
        for w in range(v)
    )
    assert np.max(np.abs(sgns)) > 0.1


@pytest.mark.parametrize("name", ALL)
def test_check_vocab_names_the_problem(name):
    objective = _builtin(name)
    with pytest.raises(ValueError, match="--negative|at least 2|softmax"):
        objective.check_vocab(1 if name != "softmax" else 10**9)


def test_from_config_is_the_one_place_a_name_becomes_a_value():
    from w2v_jax.config import Config, override

    assert objectives.from_config(Config()).name == "ns"
    nce = objectives.from_config(override(Config(), loss="nce", negative=3))
    assert nce.table == "outside_vecs" and nce.kernel is None
    auto = objectives.from_config(override(Config(), loss="hs", grad="autodiff"))
    assert auto.row_grads is not objectives.logistic_row_grads


@pytest.mark.parametrize("autodiff", [False, True])
@pytest.mark.parametrize("name", ROWS)
def test_split_dims_gives_each_part_its_columns_of_the_whole_gradient(name, autodiff):
    """Columns [0, 3) and [3, 10) of h and the rows as two parts, each told the other's partial
    scores through ``sum_parts``: each part's loss is the whole loss and its gradients are its
    columns of the whole gradients (float64, to 1e-12)."""
    objective = _builtin(name)
    objective = objectives.autodiff(objective) if autodiff else objective
    rng = np.random.default_rng(4)
    b, d, cut = 5, 10, 3
    consts = jax.device_put(objective.make_consts(np.arange(30, 0, -1) ** 2))
    predicted = jnp.asarray(rng.integers(0, 30, b), jnp.int32)
    tg = objective.targets(consts, predicted, jax.random.key(1))
    h = jnp.asarray(rng.normal(0, 0.7, (b, d)))
    rows = jnp.asarray(rng.normal(0, 0.7, (*tg.ids.shape, d)))
    loss, dh, drows = objective.row_grads(h, rows, tg)
    parts = ((slice(0, cut), slice(cut, d)), (slice(cut, d), slice(0, cut)))
    for mine, other in parts:
        s_other = jnp.einsum("bd,btd->bt", h[:, other], rows[..., other])
        split = objectives.split_dims(objective, lambda s, s_other=s_other: s + s_other)
        got_loss, got_dh, got_drows = split.row_grads(h[:, mine], rows[..., mine], tg)
        np.testing.assert_allclose(got_loss, loss, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_dh, dh[:, mine], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_drows, drows[..., mine], rtol=1e-12, atol=1e-12)
    assert float(jnp.max(jnp.abs(drows))) > 0  # the objective did produce row gradients


def test_split_dims_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="dense"):
        objectives.split_dims(_builtin("softmax"), lambda s: s)
    penalised = dataclasses.replace(_builtin("ns"), through_scores=False)
    with pytest.raises(ValueError, match="through_scores=False"):
        objectives.split_dims(penalised, lambda s: s)
