"""Tests `../w2v_jax/train.py`: six variants learn, the step stays row-sparse, resume is exact."""

import itertools
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax import config as config_lib
from w2v_jax.config import Config, override
from w2v_jax.train import (
    TrainState,
    make_step,
    make_train_step,
    make_train_steps,
    train,
    vocab_sized_ops,
)

TOPICS, WORDS_PER_TOPIC = 3, 8


def _write_topic_corpus(path, n_sentences=600, length=10, seed=0):
    """Sentences drawn from one topic each: same-topic words share every context."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_sentences):
        t = rng.integers(TOPICS)
        words = rng.integers(WORDS_PER_TOPIC, size=length)
        lines.append(" ".join(f"t{t}w{w}" for w in words))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def topic_corpus(tmp_path_factory):
    return _write_topic_corpus(tmp_path_factory.mktemp("corpus") / "topics.txt")


def _cfg(**kw):
    base = dict(
        min_count=1,
        sample=0.0,
        window=3,
        dim=16,
        negative=5,
        epochs=4,
        batch_size=256,
        steps_per_call=4,
        log_every_s=1e9,
        checkpoint_every_s=0.0,
    )
    base.update(kw)
    return override(Config(), **base)


def _topic_margin(result):
    vecs = result.vectors("in")
    unit = vecs.matrix / np.linalg.norm(vecs.matrix, axis=1, keepdims=True)
    topic = np.array([int(w[1]) for w in vecs.words])
    cos = unit @ unit.T
    same = topic[:, None] == topic[None, :]
    off_diag = ~np.eye(len(topic), dtype=bool)
    return cos[same & off_diag].mean(), cos[~same].mean()


VARIANTS = list(itertools.product(["sg", "cbow"], ["ns", "hs", "softmax"]))


@pytest.mark.parametrize("model,loss", VARIANTS)
def test_each_variant_lowers_loss_and_learns_topics(topic_corpus, model, loss):
    result = train(str(topic_corpus), _cfg(model=model, loss=loss), progress=False)
    assert len(result.epoch_loss) == 4
    assert result.epoch_loss[-1] < 0.9 * result.epoch_loss[0], result.epoch_loss
    within, across = _topic_margin(result)
    # Same-topic words share all their contexts, different topics none: after 4 epochs the
    # within-topic cosine is high and clearly above the across-topic one.
    assert within > 0.5 and within - across > 0.4, (within, across)


def _state_and_batch(cfg, vocab_size=50, b=8, c=4, seed=0):
    from w2v_jax.train import init_params, init_state, make_tables

    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(1, 1000, size=vocab_size))[::-1].astype(np.int64)
    tables = make_tables(cfg, counts)
    params = init_params(cfg, vocab_size, jax.random.key(seed))
    # Non-zero output rows so that every gradient term is exercised.
    params = {
        k: v + 0.1 * jax.random.normal(jax.random.key(seed + 1), v.shape, v.dtype)
        for k, v in params.items()
    }
    state = init_state(cfg, params, tables)
    ids = lambda *s: jnp.asarray(rng.integers(0, vocab_size, size=s), jnp.int32)  # noqa: E731
    mask = jnp.asarray((np.arange(b) < b - 2).astype(np.float32))  # two padded rows
    if cfg.model.model == "sg":
        batch = {"center": ids(b), "context": ids(b), "mask": mask}
    else:
        cmask = jnp.asarray((rng.random((b, c)) < 0.7).astype(np.float32))
        batch = {"center": ids(b), "context": ids(b, c), "context_mask": cmask, "mask": mask}
    batch["progress"] = jnp.float32(0.3)
    return state, batch


@pytest.mark.parametrize("model,loss", VARIANTS)
def test_manual_and_autodiff_gradients_give_the_same_update(model, loss):
    cfg = _cfg(model=model, loss=loss, cbow_grad="exact")
    state, batch = _state_and_batch(cfg)
    key = jax.random.key(3)
    s_manual, m_manual = make_step(cfg)(state, batch, key)
    s_auto, m_auto = make_step(override(cfg, grad="autodiff"))(state, batch, key)
    for name in s_manual.params:
        np.testing.assert_allclose(
            s_manual.params[name], s_auto.params[name], rtol=1e-5, atol=1e-7, err_msg=name
        )
    np.testing.assert_allclose(m_manual["loss_sum"], m_auto["loss_sum"], rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_sparse_step_equals_dense_optax_step(optimizer):
    cfg = _cfg(optimizer=optimizer)
    state, batch = _state_and_batch(cfg)
    key = jax.random.key(4)
    s_sparse, _ = make_step(cfg)(state, batch, key)
    dense_cfg = override(cfg, update="dense")
    _, batch = _state_and_batch(dense_cfg)
    from w2v_jax.train import init_state

    dense_state = init_state(dense_cfg, state.params, state.tables)
    s_dense, _ = make_step(dense_cfg)(dense_state, batch, key)
    for name in s_sparse.params:
        np.testing.assert_allclose(
            s_sparse.params[name], s_dense.params[name], rtol=1e-6, atol=1e-9, err_msg=name
        )


def _big_outputs(cfg, vocab_size):
    """Primitives in the step's jaxpr whose output has V rows (V much larger than B)."""
    state, batch = _state_and_batch(cfg, vocab_size=vocab_size)
    jaxpr = jax.make_jaxpr(make_step(cfg))(state, batch, jax.random.key(0))
    found = []

    def walk(jx):
        for eqn in jx.eqns:
            for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
                walk(sub)
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


@pytest.mark.parametrize("model,loss", list(itertools.product(["sg", "cbow"], ["ns", "hs"])))
def test_step_has_no_vocab_sized_intermediate(model, loss):
    # The only [V, ...] values a row-sparse step may produce are the scattered tables themselves.
    found = _big_outputs(_cfg(model=model, loss=loss), vocab_size=5000)
    assert found and set(found) <= {"scatter-add", "scatter", "pjit", "jit"}, found


@pytest.mark.parametrize(
    "model,loss,optimizer,update",
    [(m, lo, "sgd", "sparse") for m, lo in itertools.product(["sg", "cbow"], ["ns", "hs"])]
    + [
        ("sg", "ns", "adagrad", "sparse"),
        ("sg", "ns", "sgd", "fused"),
        ("cbow", "hs", "sgd", "fused"),
    ],
)
def test_compiled_step_writes_no_vocab_sized_buffer(model, loss, optimizer, update):
    # What XLA compiles, not only what we trace: a copy of a [V] buffer is O(V) work per step
    # even though the jaxpr has none (the duplicate counter's zeroing scatter once caused three).
    if update == "fused":
        _fused_or_skip()
    v = 5003
    cfg = _cfg(model=model, loss=loss, optimizer=optimizer, update=update)
    state, batch = _state_and_batch(cfg, vocab_size=v)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), batch)
    stacked["active"] = jnp.array([True, False])  # as the host loop calls it
    for fn, args in [(make_train_steps(cfg), stacked), (make_train_step(cfg), batch)]:
        hlo = fn.lower(state, args, jax.random.key(0)).compile().as_text()
        assert re.search(rf"\[{v},16\]", hlo), "the tables should appear in the HLO"
        assert vocab_sized_ops(hlo, v) == []


@pytest.mark.parametrize("update", ["sparse", "fused"])
def test_inactive_steps_of_a_padded_call_are_skipped(update):
    # The host loop pads a run's last group to steps_per_call with inactive copies, so that the
    # scan compiles once; those steps must leave the state exactly as the real steps left it.
    if update == "fused":
        _fused_or_skip()
    cfg = _cfg(update=update, threads=1)
    state, batch = _state_and_batch(cfg)
    steps = make_train_steps(cfg)
    real = jax.tree.map(lambda x: jnp.stack([x, x, x]), batch)
    padded = jax.tree.map(lambda x: jnp.concatenate([x, x[:2]]), real)
    padded["active"] = jnp.array([True, True, True, False, False])
    key = jax.random.key(7)
    s_real, m_real = steps(jax.tree.map(jnp.copy, state), real, key)
    s_pad, m_pad = steps(jax.tree.map(jnp.copy, state), padded, key)
    assert int(s_pad.step) == int(s_real.step) == 3
    for name in s_real.params:
        np.testing.assert_array_equal(s_pad.params[name], s_real.params[name], err_msg=name)
    for name in m_real:
        np.testing.assert_array_equal(m_pad[name][:3], m_real[name], err_msg=name)
        assert not np.any(m_pad[name][3:]), name


def test_vocab_sized_ops_flags_a_table_copy():
    v = 5003
    table = jnp.zeros((v, 4), jnp.float32)
    ids = jnp.arange(8, dtype=jnp.int32)

    def copy_then_scatter(t, i):  # t is not donated: XLA must copy it to update it
        return t.at[i].add(1.0), t[i]

    hlo = jax.jit(copy_then_scatter).lower(table, ids).compile().as_text()
    assert vocab_sized_ops(hlo, v)
    donated = jax.jit(lambda t, i: t.at[i].add(1.0), donate_argnums=0)
    assert vocab_sized_ops(donated.lower(table, ids).compile().as_text(), v) == []


def test_softmax_is_the_one_dense_loss():
    found = _big_outputs(_cfg(loss="softmax"), vocab_size=500)
    assert "dot_general" in found


def test_second_call_does_not_retrace():
    cfg = _cfg()
    traces = []
    step = make_step(cfg)

    def counted(state, batch, key):
        traces.append(1)
        return step(state, batch, key)

    jitted = jax.jit(counted, donate_argnums=0)
    state, batch = _state_and_batch(cfg)
    state, _ = jitted(state, batch, jax.random.key(0))
    state, _ = jitted(state, batch, jax.random.key(0))
    assert len(traces) == 1
    assert isinstance(state, TrainState) and int(state.step) == 2


def test_same_seed_same_vectors(topic_corpus):
    cfg = _cfg(epochs=1)
    a = train(str(topic_corpus), cfg, progress=False)
    b = train(str(topic_corpus), cfg, progress=False)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    c = train(str(topic_corpus), override(cfg, seed=2), progress=False)
    assert not np.array_equal(a.params["center_vecs"], c.params["center_vecs"])


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_resume_is_bit_identical(topic_corpus, tmp_path, optimizer):
    cfg = _cfg(epochs=2, optimizer=optimizer, batch_size=128, steps_per_call=2)
    full = train(str(topic_corpus), cfg, progress=False)
    part = train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=6)
    assert not np.array_equal(part.params["center_vecs"], full.params["center_vecs"])
    resumed = train(str(topic_corpus), cfg, out=tmp_path, resume=True, progress=False)
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)


def test_resume_refuses_a_different_run(topic_corpus, tmp_path):
    cfg = _cfg(epochs=1)
    train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=2)
    with pytest.raises(ValueError, match="different run"):
        train(str(topic_corpus), override(cfg, dim=8), out=tmp_path, resume=True, progress=False)


def _cli(*args):
    return [sys.executable, "-m", "w2v_jax.cli", "train", *args]


def test_killed_run_resumes_bit_identical(topic_corpus, tmp_path):
    common = [
        "--corpus",
        str(topic_corpus),
        "--min-count",
        "1",
        "--sample",
        "0",
        "--dim",
        "8",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--steps-per-call",
        "1",
        "--quiet",
        "--format",
        "text",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    ref = subprocess.run(
        _cli(*common, "--out", str(tmp_path / "ref")),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cli(*common, "--out", str(run), "--checkpoint-every", "1e-6"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (run / "checkpoint.w2v").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "vectors.txt").exists(), "the run finished before it could be killed"
    res = subprocess.run(
        _cli(*common, "--out", str(run), "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    assert (run / "vectors.txt").read_text() == (tmp_path / "ref" / "vectors.txt").read_text()


def test_gensim_loads_our_vectors(topic_corpus, tmp_path):
    from gensim.models import KeyedVectors

    result = train(str(topic_corpus), _cfg(epochs=1), progress=False)
    vecs = result.vectors("sum")
    vecs.save_word2vec_format(tmp_path / "v.bin", binary=True)
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    assert list(kv.index_to_key) == list(result.vocab.words)
    np.testing.assert_array_equal(
        kv.vectors, result.params["center_vecs"] + result.params["outside_vecs"]
    )


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(loss="nce"), "--loss"),
        (dict(dim=0), "--dim"),
        (dict(negative=-1), "--negative"),
        (dict(window=0), "--window"),
        (dict(epochs=0), "--epochs"),
    ],
)
def test_bad_config_fails_fast(changes, match):
    with pytest.raises(ValueError, match=match):
        override(Config(), **changes)


def test_softmax_refuses_a_huge_vocabulary(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["w2v_jax.train"], "MAX_SOFTMAX_VOCAB", 10)
    path = _write_topic_corpus(tmp_path / "c.txt", n_sentences=50)
    with pytest.raises(ValueError, match="--loss softmax"):
        train(str(path), _cfg(loss="softmax"), progress=False)


def test_defaults_are_word2vec():
    cfg = Config()
    assert (cfg.data.window, cfg.model.negative, cfg.data.sample, cfg.data.min_count) == (
        5,
        5,
        1e-3,
        5,
    )
    assert cfg.alpha == 0.025 and override(cfg, model="cbow").alpha == 0.05
    assert cfg.train.min_alpha == 1e-4 and cfg.model.dim == 100
    assert config_lib.from_dict(__import__("dataclasses").asdict(cfg)) == cfg


def _fused_or_skip():
    from w2v_jax import fused

    if not fused.fused_available():
        pytest.skip(f"fused kernel unavailable: {fused.unavailable_reason()}")


@pytest.mark.parametrize("model,loss", list(itertools.product(["sg", "cbow"], ["ns", "hs"])))
def test_fused_update_learns_topics_and_is_deterministic_on_one_thread(topic_corpus, model, loss):
    _fused_or_skip()
    cfg = _cfg(model=model, loss=loss, update="fused", threads=1, epochs=3)
    a = train(str(topic_corpus), cfg, progress=False)
    assert a.epoch_loss[-1] < 0.9 * a.epoch_loss[0], a.epoch_loss
    within, across = _topic_margin(a)
    assert within > 0.5 and within - across > 0.4, (within, across)
    b = train(str(topic_corpus), cfg, progress=False)
    np.testing.assert_array_equal(a.params["center_vecs"], b.params["center_vecs"])


@pytest.mark.parametrize("model,loss", list(itertools.product(["sg", "cbow"], ["ns", "hs"])))
def test_fused_update_learns_topics_on_several_threads(topic_corpus, model, loss):
    # Hogwild on 2 threads. For HS, V = 24 < 64 makes every Huffman node a private per-thread
    # copy merged by averaging at the end of each call (kernels/w2v_kernels.cc, "Hot output
    # rows"): the merge must still learn as well as one thread does.
    _fused_or_skip()
    cfg = _cfg(model=model, loss=loss, update="fused", threads=2, epochs=3)
    a = train(str(topic_corpus), cfg, progress=False)
    assert np.all(np.isfinite(a.params["center_vecs"]))
    assert a.epoch_loss[-1] < 0.9 * a.epoch_loss[0], a.epoch_loss
    within, across = _topic_margin(a)
    assert within > 0.5 and within - across > 0.4, (within, across)


def test_fused_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="--update fused"):
        override(Config(), update="fused", loss="softmax")
    with pytest.raises(ValueError, match="--update fused"):
        override(Config(), update="fused", optimizer="adam")


def test_log_rows_are_window_means_and_never_empty(topic_corpus):
    rows = []
    cfg = _cfg(epochs=2, log_every_s=0.0)  # a row after every call
    result = train(str(topic_corpus), cfg, progress=False, callbacks=[rows.append])
    assert rows and rows == result.history
    assert all(r["loss"] > 0 and 0 <= r["epoch"] < 2 for r in rows)
    assert rows[-1]["progress"] == pytest.approx(1.0, abs=0.05)
    # The epoch means are means of the per-example losses, so they lie within the row range.
    losses = [r["loss"] for r in rows]
    assert min(losses) <= result.epoch_loss[-1] <= max(losses)
