"""Tests `../w2v_jax/trainer.py`: every variant learns, resume is exact, the host loop is honest."""

import itertools
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from _helpers import fused_or_skip

from w2v_jax import config as config_lib
from w2v_jax.config import Config, override
from w2v_jax.trainer import train

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
        update="sparse",  # the pure-JAX step unless a test names another (the default is auto)
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


VARIANTS = list(itertools.product(["sg", "cbow"], ["ns", "nce", "hs", "softmax"]))


@pytest.mark.parametrize("model,loss", VARIANTS)
def test_each_variant_lowers_loss_and_learns_topics(topic_corpus, model, loss):
    # NCE's noise terms pull harder than SGNS's (sigma(s - log K P_n) with log K P_n < 0), and
    # on this 24-word vocabulary every output row is hit ~64 times per batch: CBOW's alpha 0.05
    # is past the synchronous step's stability limit there (the loss explodes), 0.025 is not.
    alpha = 0.025 if (model, loss) == ("cbow", "nce") else None
    result = train(str(topic_corpus), _cfg(model=model, loss=loss, alpha=alpha), progress=False)
    assert len(result.epoch_loss) == 4
    assert result.epoch_loss[-1] < 0.9 * result.epoch_loss[0], result.epoch_loss
    within, across = _topic_margin(result)
    # Same-topic words share all their contexts, different topics none: after 4 epochs the
    # within-topic cosine is high and clearly above the across-topic one.
    assert within > 0.5 and within - across > 0.4, (within, across)


def test_a_result_without_tables_says_why():
    # a process other than 0 of a multi-process run gets no tables (only process 0 assembles)
    from w2v_jax.trainer import TrainResult

    empty = TrainResult(
        config=Config(),
        vocab=None,
        params={},
        history=[],
        epoch_loss=[],
        words_per_sec=0.0,
        train_seconds=0.0,
    )
    with pytest.raises(ValueError, match="only process 0"):
        empty.vectors("in")


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
    cfg = _cfg(epochs=2, optimizer=optimizer, batch_size=128, steps_per_call=2, deterministic=True)
    full = train(str(topic_corpus), cfg, progress=False)
    part = train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=6)
    assert not np.array_equal(part.params["center_vecs"], full.params["center_vecs"])
    resumed = train(str(topic_corpus), cfg, out=tmp_path, resume=True, progress=False)
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)


def test_a_checkpoint_without_a_recorded_rate_resumes_at_the_rate_it_started_with(
    topic_corpus, tmp_path
):
    # Checkpoints record the resolved rate; older ones left it unset when every optimizer
    # started at word2vec.c's 0.025, which their resume must keep (not Adagrad's new default).
    from w2v_jax.checkpoint import load_checkpoint, save_checkpoint

    old_rate = _cfg(epochs=2, optimizer="adagrad", alpha=0.025, batch_size=128, deterministic=True)
    full = train(str(topic_corpus), old_rate, progress=False)
    part = train(str(topic_corpus), old_rate, out=tmp_path, progress=False, max_steps=6)
    assert part.config.train.alpha == 0.025
    path = tmp_path / "checkpoint.w2v"
    ckpt = load_checkpoint(path)
    ckpt["config"]["train"]["alpha"] = None  # as written before the rate was recorded
    save_checkpoint(path, ckpt)
    unset = override(old_rate, alpha=None)
    assert unset.alpha == 0.1
    resumed = train(str(topic_corpus), unset, out=tmp_path, resume=True, progress=False)
    assert resumed.config.train.alpha == 0.025
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)
    fresh = train(str(topic_corpus), unset, progress=False, max_steps=1)
    assert fresh.config.train.alpha == 0.1  # a new run records the default it resolved


def test_a_checkpoint_from_before_shuffle_spans_resumes_only_with_whole_chunk_shuffles(
    topic_corpus, tmp_path
):
    # Checkpoints written before --shuffle-tokens existed shuffled whole chunks: the resume must
    # say so instead of continuing in another order, and resumes exactly with --shuffle-tokens 0.
    from w2v_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    whole = _cfg(epochs=2, batch_size=128, deterministic=True, shuffle_tokens=0)
    full = train(str(topic_corpus), whole, progress=False)
    train(str(topic_corpus), whole, out=tmp_path, progress=False, max_steps=6)
    path = tmp_path / "checkpoint.w2v"
    ckpt = load_checkpoint(path)
    del ckpt["config"]["data"]["shuffle_tokens"]  # as written before the field existed
    save_checkpoint(path, ckpt)
    spans = override(whole, shuffle_tokens=Config().data.shuffle_tokens)
    with pytest.raises(CheckpointError, match=r"--shuffle-tokens: checkpoint 0, now 65536"):
        train(str(topic_corpus), spans, out=tmp_path, resume=True, progress=False)
    resumed = train(str(topic_corpus), whole, out=tmp_path, resume=True, progress=False)
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)


def test_a_resume_without_a_batch_size_keeps_the_checkpoints(topic_corpus, tmp_path):
    # the default batch size depends on the platform (4096 on CPU, 16384 on GPU): a resume that
    # does not name one continues with the run's own instead of refusing the platform's
    cfg = _cfg(epochs=2, batch_size=128, steps_per_call=2, deterministic=True)
    full = train(str(topic_corpus), cfg, progress=False)
    train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=6)
    unset = override(cfg, batch_size=None, steps_per_call=None)
    resumed = train(str(topic_corpus), unset, out=tmp_path, resume=True, progress=False)
    assert (resumed.config.train.batch_size, resumed.config.train.steps_per_call) == (128, 2)
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)


def test_a_deterministic_resume_without_threads_keeps_the_checkpoints(topic_corpus, tmp_path):
    # the deterministic kernel's numbers depend on its thread count, which a run records: a
    # resume that does not name one continues on the run's own, not on this machine's cores
    from w2v_jax.checkpoint import load_checkpoint

    fused_or_skip()
    cfg = _cfg(epochs=2, batch_size=256, steps_per_call=2, deterministic=True, threads=3)
    cfg = override(cfg, update="fused")
    full = train(str(topic_corpus), cfg, progress=False)
    assert full.update == "fused"
    train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=6)
    assert load_checkpoint(tmp_path / "checkpoint.w2v")["config"]["train"]["threads"] == 3
    resumed = train(
        str(topic_corpus), override(cfg, threads=0), out=tmp_path, resume=True, progress=False
    )
    assert resumed.config.train.threads == 3
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)
    with pytest.raises(ValueError, match="--threads: checkpoint 3, now 2"):
        train(
            str(topic_corpus), override(cfg, threads=2), out=tmp_path, resume=True, progress=False
        )


def test_an_older_deterministic_checkpoint_resumes_on_one_thread(topic_corpus, tmp_path):
    # before the kernel had a deterministic multi-thread schedule, --deterministic meant one
    # thread and recorded --threads 0
    from w2v_jax.checkpoint import load_checkpoint, save_checkpoint

    fused_or_skip()
    cfg = _cfg(epochs=2, batch_size=128, steps_per_call=2, deterministic=True, threads=1)
    cfg = override(cfg, update="fused")
    full = train(str(topic_corpus), cfg, progress=False)
    train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=6)
    path = tmp_path / "checkpoint.w2v"
    ckpt = load_checkpoint(path)
    ckpt["config"]["train"]["threads"] = 0
    save_checkpoint(path, ckpt)
    resumed = train(
        str(topic_corpus), override(cfg, threads=0), out=tmp_path, resume=True, progress=False
    )
    assert resumed.config.train.threads == 1
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_adagrad_at_its_default_rate_learns_real_text(model):
    # At SGD's rate (0.025) Adagrad's steps shrink before the vectors leave their common early
    # direction: after 3 epochs on lee the top-200 words sit at mean cosine 0.998 (sg and
    # cbow); at the default (4x) 0.66 / 0.70.
    cfg = override(
        Config(),
        model=model,
        optimizer="adagrad",
        min_count=2,
        dim=32,
        epochs=3,
        update="sparse",
        log_every_s=1e9,
        checkpoint_every_s=0.0,
    )
    result = train("lee", cfg, progress=False)
    assert result.epoch_loss[-1] < 0.9 * result.epoch_loss[0], result.epoch_loss
    top = result.vectors("in").matrix[:200]
    unit = top / np.linalg.norm(top, axis=1, keepdims=True)
    cos = (unit @ unit.T)[~np.eye(len(unit), dtype=bool)]
    assert cos.mean() < 0.85, cos.mean()


def test_a_sliced_run_resumes_bit_identical_and_keeps_its_slices(topic_corpus, tmp_path):
    # corpus_slices changes the batch stream (a multi-host run's, reproduced on one device).
    cfg = _cfg(epochs=2, batch_size=126, steps_per_call=2, deterministic=True, corpus_slices=3)
    full = train(str(topic_corpus), cfg, progress=False)
    assert full.config.train.corpus_slices == 3 and len(full.epoch_loss) == 2
    plain = train(str(topic_corpus), override(cfg, corpus_slices=None), progress=False)
    assert plain.config.train.corpus_slices == 1
    assert not np.array_equal(plain.params["center_vecs"], full.params["center_vecs"])
    train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=6)
    with pytest.raises(ValueError, match="--corpus-slices: checkpoint 3, now 2"):
        train(str(topic_corpus), override(cfg, corpus_slices=2), out=tmp_path, resume=True)
    # not given: the checkpoint's count
    unset = override(cfg, corpus_slices=None)
    resumed = train(str(topic_corpus), unset, out=tmp_path, resume=True, progress=False)
    assert resumed.config.train.corpus_slices == 3
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name], err_msg=name)


def test_resume_refuses_a_different_run(topic_corpus, tmp_path):
    cfg = _cfg(epochs=1)
    train(str(topic_corpus), cfg, out=tmp_path, progress=False, max_steps=2)
    with pytest.raises(ValueError, match="different run"):
        train(str(topic_corpus), override(cfg, dim=8), out=tmp_path, resume=True, progress=False)


@pytest.fixture(scope="module")
def stopped_run(topic_corpus, tmp_path_factory):
    """A run folder whose checkpoint stopped after one call (update sparse, sgd)."""
    out = tmp_path_factory.mktemp("stopped")
    cfg = _cfg(epochs=1, update="sparse")
    train(str(topic_corpus), cfg, out=out, progress=False, max_steps=1)
    return out, cfg, topic_corpus


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "changes,named",
    [
        (dict(alpha=0.05), "--alpha: checkpoint 0.025, now 0.05"),
        (dict(min_alpha=1e-3), "--min-alpha: checkpoint 0.0001, now 0.001"),
        (dict(dup_cap=8.0), "--dup-cap: checkpoint 64.0, now 8.0"),
        (dict(optimizer="adagrad"), "--optimizer: checkpoint sgd, now adagrad"),
        (dict(update="dense"), "--update: checkpoint sparse, now dense"),
        (
            dict(window=2, sample=1e-4),
            "--sample: checkpoint 0.0, now 0.0001; --window: checkpoint 3, now 2",
        ),
        (dict(corpus=True), "corpus: checkpoint "),
    ],
)
def test_resume_names_each_difference_and_writes_nothing(stopped_run, tmp_path, changes, named):
    out, cfg, corpus = stopped_run
    if changes.pop("corpus", False):
        corpus = _write_topic_corpus(tmp_path / "other.txt", seed=1)
    before = _snapshot(out)
    with pytest.raises(ValueError, match="was written by a different run") as e:
        train(str(corpus), override(cfg, **changes), out=out, resume=True, progress=False)
    assert named in str(e.value)
    assert _snapshot(out) == before


def test_resume_may_change_the_periods_and_threads_of_a_jax_step(stopped_run, tmp_path):
    out, cfg, corpus = stopped_run
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "checkpoint.w2v").write_bytes((out / "checkpoint.w2v").read_bytes())
    cfg = override(cfg, log_every_s=0.5, checkpoint_every_s=7.0, threads=2)
    assert train(str(corpus), cfg, out=folder, resume=True, progress=False).steps > 0


def test_resume_of_a_finished_run_trains_nothing_and_keeps_its_checkpoint(topic_corpus, tmp_path):
    cfg = _cfg(epochs=1, update="sparse")
    assert train(str(topic_corpus), cfg, out=tmp_path, progress=False).nothing_trained == ""
    before = _snapshot(tmp_path)
    again = train(str(topic_corpus), cfg, out=tmp_path, resume=True, progress=False)
    assert again.steps == 0
    assert again.nothing_trained == (
        "nothing to train: the checkpoint is already at the end of epoch 1/1"
    )
    assert _snapshot(tmp_path) == before


def test_a_corpus_without_a_training_example_trains_nothing(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join("abcdefgh") + "\n")  # one word per sentence
    result = train(str(tmp_path / "c.txt"), _cfg(), progress=False)
    assert result.steps == 0
    assert result.nothing_trained.startswith("nothing to train: the corpus gives no training")


def test_signal_handlers_are_restored(topic_corpus):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train(str(topic_corpus), _cfg(epochs=1), progress=False, max_steps=1)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _cli(*args):
    return [sys.executable, "-m", "w2v_jax.cli", "train", *args]


def _common(topic_corpus):
    return [
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
        "--deterministic",
    ]


ENV = dict(os.environ, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def reference_vectors(topic_corpus, tmp_path_factory):
    """vectors.txt of an uninterrupted ``w2v-jax train`` with :func:`_common`'s flags."""
    out = tmp_path_factory.mktemp("ref")
    ref = subprocess.run(
        _cli(*_common(topic_corpus), "--out", str(out)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ref.returncode == 0, ref.stderr
    return (out / "vectors.txt").read_text()


def _resume(topic_corpus, run):
    res = subprocess.run(
        _cli(*_common(topic_corpus), "--out", str(run), "--resume"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    return (run / "vectors.txt").read_text()


def test_killed_run_resumes_bit_identical(topic_corpus, tmp_path, reference_vectors):
    common, env = _common(topic_corpus), ENV
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
    assert _resume(topic_corpus, run) == reference_vectors


def _start_training(topic_corpus, run, *flags):
    """A ``w2v-jax train`` subprocess, returned once its first progress line is out."""
    args = [a for a in _common(topic_corpus) if a != "--quiet"]
    proc = subprocess.Popen(
        _cli(*args, "--out", str(run), "--log-every", "0", *flags),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if line.startswith("epoch "):
            return proc
    proc.wait()
    pytest.fail(f"no progress line (status {proc.returncode})")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_writes_a_checkpoint_and_resumes_bit_identical(
    topic_corpus, tmp_path, reference_vectors, sig, code
):
    from w2v_jax.checkpoint import load_checkpoint

    run = tmp_path / "run"
    proc = _start_training(topic_corpus, run, "--checkpoint-every", "0")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    step = int(load_checkpoint(run / "checkpoint.w2v")["step"])
    assert last.startswith(
        f"w2v-jax: interrupted at step {step}; checkpoint written to {run / 'checkpoint.w2v'}; "
        "resume with: w2v-jax train --corpus "
    ), last
    assert last.endswith(" --checkpoint-every 0 --resume")
    assert step > 0 and not (run / "vectors.txt").exists()
    assert _resume(topic_corpus, run) == reference_vectors


def test_second_interrupt_stops_at_once_and_keeps_a_loadable_checkpoint(
    topic_corpus, tmp_path, reference_vectors
):
    from w2v_jax.checkpoint import load_checkpoint

    run = tmp_path / "run"
    # A checkpoint after every call: the second signal often lands inside a write.
    proc = _start_training(topic_corpus, run, "--checkpoint-every", "1e-6")
    while not (run / "checkpoint.w2v").exists():  # a previous checkpoint to keep
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "w2v-jax: interrupted" in err
    load_checkpoint(run / "checkpoint.w2v")  # the old one or the new one, never torn
    assert _resume(topic_corpus, run) == reference_vectors


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
        (dict(loss="glove"), "--loss"),
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
    monkeypatch.setattr(config_lib, "MAX_SOFTMAX_VOCAB", 10)
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
    # Adagrad's own scale is 4x SGD's (config.default_alpha); the other rules keep word2vec.c's
    assert override(cfg, optimizer="adagrad").alpha == 0.1
    assert override(cfg, optimizer="adagrad", model="cbow").alpha == 0.2
    assert override(cfg, optimizer="adam").alpha == 0.025
    assert override(cfg, optimizer="adagrad", alpha=0.3).alpha == 0.3
    assert cfg.train.min_alpha == 1e-4 and cfg.model.dim == 100
    assert config_lib.from_dict(__import__("dataclasses").asdict(cfg)) == cfg


@pytest.mark.parametrize("model,loss", list(itertools.product(["sg", "cbow"], ["ns", "hs"])))
def test_fused_update_learns_topics_and_is_deterministic_on_one_thread(topic_corpus, model, loss):
    fused_or_skip()
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
    fused_or_skip()
    cfg = _cfg(model=model, loss=loss, update="fused", threads=2, epochs=3)
    a = train(str(topic_corpus), cfg, progress=False)
    assert np.all(np.isfinite(a.params["center_vecs"]))
    assert a.epoch_loss[-1] < 0.9 * a.epoch_loss[0], a.epoch_loss
    within, across = _topic_margin(a)
    assert within > 0.5 and within - across > 0.4, (within, across)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(loss="softmax"), "no fused kernel implements the 'softmax' objective"),
        (dict(loss="nce"), "no fused kernel implements the 'nce' objective"),
        (dict(optimizer="adam"), "plain SGD only"),
        (dict(grad="autodiff"), "autodiff or changed math"),
    ],
)
def test_fused_refuses_what_it_cannot_do_before_reading_the_corpus(tmp_path, changes, match):
    fused_or_skip()
    missing = tmp_path / "no-such-corpus.txt"  # never read: the step is refused first
    with pytest.raises(ValueError, match=match):
        train(str(missing), _cfg(update="fused", **changes), progress=False)


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


# ----------------------------------------------------------------------------- several devices


def _mesh(n):
    import jax

    from w2v_jax import sharding

    if len(jax.devices()) < n:
        pytest.skip(f"needs {n} devices (conftest.py asks XLA for 4 CPU devices)")
    return sharding.make_mesh(jax.devices()[:n])


def _assert_same_tables(a, b, rtol=2e-4, atol=2e-6):
    assert a.params.keys() == b.params.keys()
    for name in a.params:
        np.testing.assert_allclose(
            a.params[name], b.params[name], rtol=rtol, atol=atol, err_msg=name
        )


@pytest.mark.parametrize(
    "model,loss,optimizer",
    [
        ("sg", "ns", "sgd"),
        ("cbow", "hs", "sgd"),
        ("sg", "nce", "adagrad"),
        ("cbow", "ns", "adagrad"),
    ],
)
def test_train_on_2_and_4_devices_gives_the_one_device_tables(topic_corpus, model, loss, optimizer):
    # The same run, tables split by dimensions or by vocabulary rows over 2 and 4 devices: the
    # same model and update on every device count, so the same tables up to float summation order.
    cfg = _cfg(model=model, loss=loss, optimizer=optimizer, epochs=1, alpha=0.025)
    one = train(str(topic_corpus), cfg, progress=False)
    for layout, what in (("dims", "dimensions"), ("rows", "vocabulary rows")):
        for n in (2, 4):
            cfg_n = override(cfg, shard_by=layout)
            many = train(str(topic_corpus), cfg_n, progress=False, mesh=_mesh(n))
            assert many.update == "sparse"
            assert f"{n} devices by {what}" in many.update_reason
            _assert_same_tables(many, one)
            assert many.epoch_loss == pytest.approx(one.epoch_loss, rel=1e-5)


@pytest.mark.parametrize(
    "first,then,n", [("dims", "rows", 2), ("dims", "dims", 1), ("rows", "dims", 2)]
)
def test_a_run_on_4_devices_resumes_on_2_and_on_1(topic_corpus, tmp_path, first, then, n):
    # The checkpoint holds the tables as one device would: any layout, any device count resumes.
    cfg = _cfg(epochs=2, batch_size=128, steps_per_call=2)
    full = train(str(topic_corpus), cfg, progress=False)
    part = train(
        str(topic_corpus),
        override(cfg, shard_by=first),
        out=tmp_path,
        progress=False,
        max_steps=6,
        mesh=_mesh(4),
    )
    assert part.steps == 6
    mesh = _mesh(n) if n > 1 else None
    rest = train(
        str(topic_corpus),
        override(cfg, shard_by=then),
        out=tmp_path,
        resume=True,
        progress=False,
        mesh=mesh,
    )
    assert rest.steps > 0
    _assert_same_tables(rest, full)


def test_auto_on_one_device_resumes_a_mesh_run_with_its_step(topic_corpus, tmp_path):
    # On one CPU device auto would pick the fused kernel for SGNS + SGD; a checkpoint written by
    # the pure-JAX step on a mesh continues with that step, not with a refusal.
    cfg = _cfg(epochs=2, batch_size=128, steps_per_call=2)
    full = train(str(topic_corpus), cfg, progress=False)
    auto = _cfg(epochs=2, batch_size=128, steps_per_call=2, update="auto")
    train(str(topic_corpus), auto, out=tmp_path, progress=False, max_steps=6, mesh=_mesh(2))
    rest = train(str(topic_corpus), auto, out=tmp_path, resume=True, progress=False)
    assert rest.update == "sparse" and "checkpoint" in rest.update_reason
    _assert_same_tables(rest, full)


def test_devices_config_builds_the_mesh_or_says_why_not(topic_corpus):
    cfg = _cfg(epochs=1, devices=2)
    result = train(str(topic_corpus), cfg, progress=False, max_steps=2)
    assert "2 devices" in result.update_reason
    with pytest.raises(ValueError, match="--devices 64: this process has"):
        train(str(topic_corpus), _cfg(devices=64, batch_size=64 * 4), progress=False)
    with pytest.raises(ValueError, match="multiple of --devices 3"):
        _cfg(devices=3, batch_size=256)
    with pytest.raises(ValueError, match="runs on one device"):
        train(str(topic_corpus), _cfg(devices=2, update="dense"), progress=False)
    with pytest.raises(ValueError, match="--dim 2 < 4 devices"):
        train(str(topic_corpus), _cfg(devices=4, dim=2), progress=False)
    with pytest.raises(ValueError, match="--shard-by must be one of"):
        _cfg(shard_by="columns")


class _FakeDevice:
    def __init__(self, process_index: int):
        self.process_index = process_index


@pytest.mark.parametrize(
    "owners, slices, me, want_slices, want_rows",
    [
        ((0, 0, 1, 1), 2, 1, range(1, 2), range(48, 96)),  # 2 hosts x 2 devices: its half
        ((0, 0, 1, 1), 4, 0, range(0, 2), range(0, 48)),  # 2 slices per host
        ((0, 1, 2, 3), 4, 2, range(2, 3), range(48, 72)),
        ((0, 0, 1, 1), 1, 1, range(0, 1), None),  # a 1-slice run resumed on 2 hosts: reads all
        ((0, 0, 1, 1), 3, 0, range(0, 3), None),  # slices that do not split over the hosts
        ((0, 1, 0, 1), 2, 0, range(0, 2), None),  # a mesh that interleaves the hosts
    ],
)
def test_each_process_reads_only_the_slices_of_its_rows(
    monkeypatch, owners, slices, me, want_slices, want_rows
):
    from types import SimpleNamespace

    from w2v_jax import trainer

    monkeypatch.setattr(jax, "process_count", lambda: len(set(owners)))
    monkeypatch.setattr(jax, "process_index", lambda: me)
    mesh = SimpleNamespace(devices=np.array([_FakeDevice(p) for p in owners]))
    cfg = _cfg(batch_size=96, corpus_slices=slices)
    read, rows = trainer._slices_read(cfg, mesh)
    assert read == want_slices and rows == want_rows
