"""Tests `../w2v_jax/step.py`: one step for every objective and optimizer, row-sparse, O(1) in V."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import config_step, fused_or_skip

from w2v_jax import hlo, objectives, optim
from w2v_jax import inputs as inputs_lib
from w2v_jax import step as step_lib
from w2v_jax.config import Config, override

VARIANTS = list(itertools.product(["sg", "cbow"], ["ns", "nce", "hs", "softmax"]))


def _cfg(**kw):
    # The pure-JAX step unless a test names another (the default, "auto", is fused on CPU).
    base = dict(
        min_count=1, sample=0.0, window=3, dim=16, negative=5, batch_size=256, update="sparse"
    )
    base.update(kw)
    return override(Config(), **base)


def _counts(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    return np.sort(rng.integers(1, 1000, size=vocab_size))[::-1].astype(np.int64)


def _state_and_batch(cfg, vocab_size=50, b=8, c=4, seed=0, tx=None):
    """``(step, state, consts, batch)`` for ``cfg`` on a random batch with two padded rows."""
    rng = np.random.default_rng(seed)
    step, consts, cfg_tx, objective = config_step(cfg, _counts(vocab_size, seed))
    tx = cfg_tx if tx is None else tx
    params = step_lib.init_params(objective, vocab_size, cfg.model.dim, jax.random.key(seed))
    # Non-zero output rows so that every gradient term is exercised.
    params = {
        k: v + 0.1 * jax.random.normal(jax.random.key(seed + 1), v.shape, v.dtype)
        for k, v in params.items()
    }
    state = step_lib.init_state(params, tx)
    ids = lambda *s: jnp.asarray(rng.integers(0, vocab_size, size=s), jnp.int32)  # noqa: E731
    mask = jnp.asarray((np.arange(b) < b - 2).astype(np.float32))
    if cfg.model.model == "sg":
        batch = {"center": ids(b), "context": ids(b), "mask": mask}
    else:
        cmask = jnp.asarray((rng.random((b, c)) < 0.7).astype(np.float32))
        batch = {"center": ids(b), "context": ids(b, c), "context_mask": cmask, "mask": mask}
    batch["progress"] = jnp.float32(0.3)
    return step, state, consts, batch


@pytest.mark.parametrize("model,loss", VARIANTS)
def test_manual_and_autodiff_gradients_give_the_same_update(model, loss):
    cfg = _cfg(model=model, loss=loss, cbow_grad="exact")
    step, state, consts, batch = _state_and_batch(cfg)
    auto, *_ = config_step(override(cfg, grad="autodiff"), _counts(50))
    key = jax.random.key(3)
    s_manual, m_manual = step(state, consts, batch, key)
    s_auto, m_auto = auto(state, consts, batch, key)
    for name in s_manual.params:
        np.testing.assert_allclose(
            s_manual.params[name], s_auto.params[name], rtol=1e-5, atol=1e-7, err_msg=name
        )
    np.testing.assert_allclose(m_manual["loss_sum"], m_auto["loss_sum"], rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_sparse_step_equals_dense_optax_step(optimizer):
    cfg = _cfg(optimizer=optimizer)
    step, state, consts, batch = _state_and_batch(cfg)
    key = jax.random.key(4)
    s_sparse, _ = step(state, consts, batch, key)
    dense_step, *_ = config_step(override(cfg, update="dense"), _counts(50))
    s_dense, _ = dense_step(state, consts, batch, key)
    for name in s_sparse.params:
        np.testing.assert_allclose(
            s_sparse.params[name], s_dense.params[name], rtol=1e-6, atol=1e-9, err_msg=name
        )


def test_any_optax_rule_is_a_value_the_step_takes():
    # A user's own optax transformation, with its own learning rate and no schedule: the row
    # path must give the dense optax update on the rows it touches.
    cfg = _cfg()
    tx = optax.adagrad(0.1)
    _, state, consts, batch = _state_and_batch(cfg, tx=tx)
    objective, inputs = objectives.from_config(cfg), inputs_lib.from_config(cfg)
    key = jax.random.key(5)
    sparse = step_lib.make_step(objective, inputs, tx, dup_cap=float("inf"))
    dense = step_lib.make_step(objective, inputs, tx, dup_cap=float("inf"), dense=True)
    s_sparse, m = sparse(state, consts, batch, key)
    s_dense, _ = dense(state, consts, batch, key)
    assert np.isnan(m["lr"])  # the rule's learning rate is its own business
    for name in s_sparse.params:
        np.testing.assert_allclose(
            s_sparse.params[name], s_dense.params[name], rtol=1e-6, atol=1e-9, err_msg=name
        )
        assert not np.array_equal(s_sparse.params[name], state.params[name])


def test_scheduled_sgd_is_plain_sgd_at_the_schedule():
    tx = optim.make_optimizer("sgd", 0.5, 0.1)
    g = {"w": jnp.array([1.0, -2.0])}
    upd, _ = tx.update(g, tx.init(g), progress=jnp.float32(0.5))
    np.testing.assert_allclose(upd["w"], [-0.3, 0.6], rtol=1e-6)  # lr = 0.5 - 0.4 * 0.5


def _big_outputs(cfg, vocab_size):
    """Primitives in the step's jaxpr whose output has V rows (V much larger than B)."""
    step, state, consts, batch = _state_and_batch(cfg, vocab_size=vocab_size)
    jaxpr = jax.make_jaxpr(step)(state, consts, batch, jax.random.key(0))
    found = []

    def walk(jx):
        for eqn in jx.eqns:
            for p in eqn.params.values():
                if hasattr(p, "jaxpr") and hasattr(p.jaxpr, "eqns"):
                    walk(p.jaxpr)
                elif hasattr(p, "eqns"):
                    walk(p)
            for v in eqn.outvars:
                shape = getattr(v.aval, "shape", ())
                if len(shape) >= 1 and shape[0] >= vocab_size - 1:
                    found.append(eqn.primitive.name)

    walk(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("model,loss", list(itertools.product(["sg", "cbow"], ["ns", "nce", "hs"])))
def test_step_has_no_vocab_sized_intermediate(model, loss):
    # The only [V, ...] values a row-sparse step may produce are the scattered tables themselves.
    found = _big_outputs(_cfg(model=model, loss=loss), vocab_size=5000)
    assert found and set(found) <= {"scatter-add", "scatter", "pjit", "jit"}, found


@pytest.mark.parametrize(
    "model,loss,optimizer,update",
    [(m, lo, "sgd", "sparse") for m, lo in itertools.product(["sg", "cbow"], ["ns", "hs"])]
    + [
        ("sg", "nce", "sgd", "sparse"),
        ("sg", "ns", "adagrad", "sparse"),
        ("sg", "ns", "sgd", "fused"),
        ("cbow", "hs", "sgd", "fused"),
    ],
)
def test_compiled_step_writes_no_vocab_sized_buffer(model, loss, optimizer, update):
    # What XLA compiles, not only what we trace: a copy of a [V] buffer is O(V) work per step
    # even though the jaxpr has none (the duplicate counter's zeroing scatter once caused three).
    if update == "fused":
        fused_or_skip()
    v = 5003
    cfg = _cfg(model=model, loss=loss, optimizer=optimizer, update=update)
    step, state, consts, batch = _state_and_batch(cfg, vocab_size=v)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), batch)
    stacked["active"] = jnp.array([True, False])  # as the host loop calls it
    single = jax.jit(step, donate_argnums=0)
    for fn, args in [(step_lib.make_steps(step), stacked), (single, batch)]:
        text = fn.lower(state, consts, args, jax.random.key(0)).compile().as_text()
        assert re.search(rf"\[{v},16\]", text), "the tables should appear in the HLO"
        assert hlo.vocab_sized_ops(text, v) == []


@pytest.mark.parametrize("update", ["sparse", "fused"])
def test_inactive_steps_of_a_padded_call_are_skipped(update):
    # The host loop pads a run's last group to steps_per_call with inactive copies, so that the
    # scan compiles once; those steps must leave the state exactly as the real steps left it.
    if update == "fused":
        fused_or_skip()
    cfg = _cfg(update=update, threads=1)
    step, state, consts, batch = _state_and_batch(cfg)
    steps = step_lib.make_steps(step)
    real = jax.tree.map(lambda x: jnp.stack([x, x, x]), batch)
    padded = jax.tree.map(lambda x: jnp.concatenate([x, x[:2]]), real)
    padded["active"] = jnp.array([True, True, True, False, False])
    key = jax.random.key(7)
    s_real, m_real = steps(jax.tree.map(jnp.copy, state), consts, real, key)
    s_pad, m_pad = steps(jax.tree.map(jnp.copy, state), consts, padded, key)
    assert int(s_pad.step) == int(s_real.step) == 3
    for name in s_real.params:
        np.testing.assert_array_equal(s_pad.params[name], s_real.params[name], err_msg=name)
    for name in m_real:
        np.testing.assert_array_equal(m_pad[name][:3], m_real[name], err_msg=name)
        assert not np.any(m_pad[name][3:]), name


def test_softmax_is_the_one_dense_loss():
    found = _big_outputs(_cfg(loss="softmax"), vocab_size=500)
    assert "dot_general" in found


def test_second_call_does_not_retrace():
    cfg = _cfg()
    step, state, consts, batch = _state_and_batch(cfg)
    traces = []

    def counted(state, consts, batch, key):
        traces.append(1)
        return step(state, consts, batch, key)

    jitted = jax.jit(counted, donate_argnums=0)
    state, _ = jitted(state, consts, batch, jax.random.key(0))
    state, _ = jitted(state, consts, batch, jax.random.key(0))
    assert len(traces) == 1
    assert isinstance(state, step_lib.TrainState) and int(state.step) == 2


def _step_with(cfg, combine: bool):
    objective, inputs, tx = (
        objectives.from_config(cfg),
        inputs_lib.from_config(cfg),
        optim.from_config(cfg),
    )
    return step_lib.make_step(
        objective, inputs, tx, dup_cap=cfg.train.dup_cap, combine_duplicates=combine
    )


@pytest.mark.parametrize("dup_cap", [4.0, float("inf")])
@pytest.mark.parametrize("model,loss", [("sg", "ns"), ("sg", "hs"), ("cbow", "hs")])
def test_combined_duplicates_give_the_plain_scatter_tables(model, loss, dup_cap):
    # The GPU's update (rows of repeated ids summed, then one scatter of unique rows) against
    # the CPU's plain scatter-add: V=7 and B=64 repeat every row many times, and cap 4 makes
    # the duplicate cap bite, so its per-entry scale must come before the sum.
    cfg = _cfg(model=model, loss=loss, dup_cap=dup_cap)
    _, state, consts, batch = _state_and_batch(cfg, vocab_size=7, b=64)
    key = jax.random.key(9)
    plain, _ = jax.jit(_step_with(cfg, False))(state, consts, batch, key)
    combined, _ = jax.jit(_step_with(cfg, True))(state, consts, batch, key)
    for name in plain.params:
        assert not np.array_equal(plain.params[name], state.params[name]), name
        np.testing.assert_allclose(
            combined.params[name], plain.params[name], rtol=1e-5, atol=1e-7, err_msg=name
        )
    np.testing.assert_array_equal(combined.scratch, 0.0)


@pytest.mark.parametrize("model,loss", [("sg", "ns"), ("cbow", "hs")])
def test_combined_duplicates_write_no_vocab_sized_buffer(model, loss):
    v = 5003
    cfg = _cfg(model=model, loss=loss)
    _, state, consts, batch = _state_and_batch(cfg, vocab_size=v)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), batch)
    stacked["active"] = jnp.array([True, False])
    steps = step_lib.make_steps(_step_with(cfg, True))
    text = steps.lower(state, consts, stacked, jax.random.key(0)).compile().as_text()
    assert re.search(rf"\[{v},16\]", text), "the tables should appear in the HLO"
    assert hlo.vocab_sized_ops(text, v) == []


def test_device_defaults_fill_only_what_the_config_leaves_open(monkeypatch):
    cpu = step_lib.device_defaults(Config())
    assert (cpu.train.batch_size, cpu.train.steps_per_call) == (4096, 8)
    # the fused kernel's batch is only its call size (pairs are applied one by one)
    fused = step_lib.device_defaults(Config(), "fused")
    assert (fused.train.batch_size, fused.train.steps_per_call) == (16384, 8)
    assert (
        step_lib.device_defaults(override(Config(), batch_size=4096), "fused").train.batch_size
        == 4096
    )
    monkeypatch.setattr(step_lib, "_platform", lambda: "gpu")
    gpu = step_lib.device_defaults(Config())
    assert (gpu.train.batch_size, gpu.train.steps_per_call) == (16384, 16)
    mine = step_lib.device_defaults(override(Config(), batch_size=4095, devices=3))
    assert (mine.train.batch_size, mine.train.steps_per_call) == (4095, 16)
    three = step_lib.device_defaults(override(Config(), devices=3))
    assert three.train.batch_size % 3 == 0 and three.train.batch_size >= 16384
    sliced = step_lib.device_defaults(override(Config(), devices=2, corpus_slices=3))
    assert sliced.train.batch_size == 16386  # the least multiple of 2 and 3 from 16384


@pytest.mark.parametrize("where", ["device", "host"])
@pytest.mark.parametrize(
    "rows,dim,block",
    [(1000, 7, 64), (835, 100, 1000), (5, 3, 4), (3, 50, 1 << 20), (4097, 33, 2048)],
)
def test_blockwise_uniform_init_is_jax_random_uniform_bit_for_bit(
    monkeypatch, rows, dim, block, where
):
    """Blocks of any size, the last one overlapping, give jax.random.uniform's exact bits; so
    does the draw on the host that small tables take."""
    monkeypatch.setattr(step_lib, "_INIT_BLOCK", block)
    monkeypatch.setattr(step_lib, "_HOST_INIT_MAX", rows * dim if where == "host" else 0)
    for seed in (0, 7):
        key = jax.random.split(jax.random.key(seed))[0]
        want = jax.random.uniform(key, (rows, dim), jnp.float32, -0.5 / dim, 0.5 / dim)
        got = step_lib.uniform_table(key, rows, dim, -0.5 / dim, 0.5 / dim)
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


@pytest.mark.parametrize("impl", ["threefry4x32", "rbg"])
def test_other_generators_take_jax_random_uniform(monkeypatch, impl):
    """Keys of a generator other than the partitionable Threefry-2x32 are drawn whole by
    jax.random.uniform, never by the blocks (which hash two key words) nor on the host."""
    monkeypatch.setattr(step_lib, "_INIT_BLOCK", 64)
    key = jax.random.key(4, impl=impl)
    want = jax.random.uniform(key, (50, 7), jnp.float32, -0.5 / 7, 0.5 / 7)
    got = step_lib.uniform_table(key, 50, 7, -0.5 / 7, 0.5 / 7)
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


@pytest.mark.parametrize("where", ["device", "host"])
@pytest.mark.parametrize("lo,hi,c0,c1", [(0, 835, 0, 34), (17, 700, 34, 67), (3, 4, 99, 100)])
def test_a_block_of_rows_and_columns_is_that_of_the_uniform_table(
    monkeypatch, lo, hi, c0, c1, where
):
    """What a device splitting the table by dimensions draws: its columns of the rows, bit for
    bit those of the whole draw, in blocks of any size, on the device or on the host."""
    monkeypatch.setattr(step_lib, "_INIT_BLOCK", 1000)
    monkeypatch.setattr(step_lib, "_HOST_INIT_MAX", 1 << 30 if where == "host" else 0)
    rows, dim = 835, 100
    key = jax.random.split(jax.random.key(3))[0]
    want = np.asarray(jax.random.uniform(key, (rows, dim), jnp.float32, -0.005, 0.005))
    got = step_lib.uniform_rows(key, rows, dim, -0.005, 0.005, lo, hi, (c0, c1))
    assert np.asarray(got).tobytes() == want[lo:hi, c0:c1].tobytes()


def test_blockwise_uniform_init_keeps_its_temporaries_to_a_block(monkeypatch):
    """The compiled block program allocates O(block), not O(table): its temp buffers are far
    smaller than the table (jax.random.uniform's whole-table temporaries are several times it)."""
    monkeypatch.setattr(step_lib, "_INIT_BLOCK", 1 << 12)
    rows, dim = 1 << 14, 64
    table = jnp.zeros((rows, dim), jnp.float32)
    k1, k2 = jax.random.key_data(jax.random.key(0))
    block_rows = (1 << 12) // dim
    compiled = step_lib._uniform_block.lower(
        table, k1, k2, 0, 0, 0, block_rows, -0.5 / dim, 0.5 / dim, dim, 0
    ).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < table.nbytes // 16, temp
    whole = (
        jax.jit(lambda k: jax.random.uniform(k, (rows, dim), jnp.float32, -0.5 / dim, 0.5 / dim))
        .lower(jax.random.key(0))
        .compile()
    )
    assert whole.memory_analysis().temp_size_in_bytes > table.nbytes  # what the blocks avoid
