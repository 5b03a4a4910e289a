"""Tests `--update auto` (:func:`w2v_jax.step.choose_update`) and `--deterministic`.

``auto`` takes the fused C++ kernel where it implements the run on CPU and the pure-JAX sparse
step otherwise, and the kernel's deterministic schedule for skip-gram on a small vocabulary;
it says why in the first line of training and in config.json. ``--deterministic`` (and auto's
deterministic schedule) makes two runs, and an interrupted-then-resumed run, byte-identical.
Training runs use a 2,000-word corpus, D=8 (about a second each).
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from _helpers import fused_or_skip

from w2v_jax import cli, fused, trainer
from w2v_jax import step as step_lib
from w2v_jax.config import Config, override
from w2v_jax.trainer import train

TINY = ["--min-count", "1", "--sample", "0", "--dim", "8", "--epochs", "2", "--batch-size", "64"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(50)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choices(words, k=20)) for _ in range(100)) + "\n")
    return str(path)


def _choice(**changes):
    cfg = override(Config(), **changes)
    return step_lib.choose_update(cfg, *trainer.resolve(cfg))


# ----------------------------------------------------------------------------- the choice


@pytest.mark.parametrize("model", ["sg", "cbow"])
@pytest.mark.parametrize("loss", ["ns", "hs"])
def test_auto_takes_the_fused_kernel_for_sgns_and_hs_with_sgd_on_cpu(model, loss):
    fused_or_skip()
    update, reason = _choice(model=model, loss=loss)
    assert update == "fused"
    assert reason.startswith("CPU") and "plain SGD" in reason and "C++ kernel" in reason


@pytest.mark.parametrize(
    "changes,why",
    [
        (dict(loss="nce"), "'nce' objective"),
        (dict(loss="softmax"), "'softmax' objective"),
        (dict(optimizer="adagrad"), "plain SGD only"),
        (dict(grad="autodiff"), "autodiff"),
    ],
)
def test_auto_takes_the_sparse_step_where_the_kernel_lacks_the_math(changes, why):
    update, reason = _choice(**changes)
    assert update == "sparse"
    assert why in reason


def test_auto_takes_the_sparse_step_without_the_kernel(monkeypatch):
    monkeypatch.setattr(fused, "fused_available", lambda: False)
    monkeypatch.setattr(fused, "unavailable_reason", lambda: "no C++ compiler found (test)")
    assert _choice() == ("sparse", "the C++ kernel is unavailable (no C++ compiler found (test))")


def test_auto_takes_the_sparse_step_off_cpu(monkeypatch):
    monkeypatch.setattr(step_lib, "_platform", lambda: "gpu")
    assert _choice() == ("sparse", "GPU: the fused kernel runs on CPU only")


def test_explicit_update_is_kept_and_fused_without_its_math_is_an_error():
    for update in ("sparse", "dense", "fused"):
        assert _choice(update=update)[0] == update
    cfg = override(Config(), loss="nce", update="fused")
    with pytest.raises(ValueError, match="--update fused: no fused kernel implements the 'nce'"):
        step_lib.for_config(cfg, *trainer.resolve(cfg))


def test_deterministic_names_its_schedule_and_thread_count():
    fused_or_skip()
    assert _choice(deterministic=True, threads=1) == (
        "fused",
        "CPU, sg SGNS with plain SGD: the C++ kernel on 1 thread, deterministic",
    )
    assert _choice(deterministic=True, threads=3)[1].endswith("on 3 threads, deterministic")
    assert _choice(threads=3)[1].endswith("on 3 threads, Hogwild")
    # the reason names the count the run takes: one thread for CBOW unless --threads says
    assert _choice(deterministic=True, model="cbow")[1].endswith("on 1 thread, deterministic")
    with pytest.raises(ValueError, match="--deterministic runs at most 32 kernel threads"):
        override(Config(), deterministic=True, threads=33)


def test_deterministic_fused_run_records_its_threads_and_its_batch():
    fused_or_skip()
    cfg = step_lib.device_defaults(override(Config(), deterministic=True), "fused")
    assert cfg.train.threads == fused.default_num_threads()
    assert cfg.train.batch_size == step_lib.FUSED_DETERMINISTIC_BATCH
    mine = step_lib.device_defaults(override(Config(), deterministic=True, threads=3), "fused")
    assert mine.train.threads == 3
    cbow = step_lib.device_defaults(override(Config(), deterministic=True, model="cbow"), "fused")
    assert cbow.train.batch_size == step_lib.FUSED_BATCH  # a CBOW example is a whole window
    assert cbow.train.threads == 1  # the schedule's merge costs CBOW more than a thread gains
    two = override(Config(), deterministic=True, model="cbow", threads=2)
    assert step_lib.device_defaults(two, "fused").train.threads == 2
    hogwild = step_lib.device_defaults(Config(), "fused")  # its numbers do not depend on it
    assert (hogwild.train.threads, hogwild.train.batch_size) == (0, step_lib.FUSED_BATCH)
    sparse = step_lib.device_defaults(override(Config(), deterministic=True), "sparse")
    assert sparse.train.threads == 0


# ----------------------------------------------------------------------------- the report


def _update_line(err: str) -> str:
    """The ``update:`` line of a run's stderr, checked to come before any training line: after
    the corpus's ``count+encode:`` lines, if any, and nothing else."""
    lines = err.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("update: "))
    assert all(line.startswith("count+encode: ") for line in lines[:at]), lines[:at]
    return lines[at]


def test_choice_is_the_first_training_line_and_in_config_json(corpus, tmp_path, capsys):
    fused_or_skip()
    argv = ["train", "--corpus", corpus, "--out", str(tmp_path), "--model", "cbow", *TINY]
    assert cli.main(argv) == 0
    line = _update_line(capsys.readouterr().err)
    assert line.startswith("update: fused (CPU, cbow SGNS with plain SGD: the C++ kernel on ")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["update"] == "auto"
    assert saved["update_resolved"] == "fused"
    assert line == f"update: fused ({saved['update_reason']})"


# ----------------------------------------------------------------------------- auto's schedule


def test_auto_schedule_is_deterministic_for_skipgram_on_a_small_vocabulary(monkeypatch):
    monkeypatch.setattr(fused, "default_num_threads", lambda: 2)
    small = step_lib.AUTO_DETERMINISTIC_MAX_VOCAB
    assert step_lib.auto_deterministic(Config(), small)
    assert not step_lib.auto_deterministic(Config(), small + 1)  # Hogwild: fewer rows shared
    for loss in ("ns", "hs"):
        assert step_lib.auto_deterministic(override(Config(), loss=loss), 9_000)
    # CBOW's deterministic schedule is one thread; one thread is sequential anyway; more than
    # the threads it was measured on; an explicit --update; a run that asked already
    for changes in (
        dict(model="cbow"),
        dict(threads=1),
        dict(threads=step_lib.AUTO_DETERMINISTIC_MAX_THREADS + 1),
        dict(update="fused"),
        dict(deterministic=True),
    ):
        assert not step_lib.auto_deterministic(override(Config(), **changes), 9_000), changes
    assert step_lib.auto_deterministic(override(Config(), threads=4), 9_000)


def _auto_run(corpus, out, *flags):
    argv = ["train", "--corpus", corpus, "--out", str(out), *TINY, "--threads", "2", *flags]
    assert cli.main(argv) == 0
    return json.loads((out / "config.json").read_text()), (out / "vectors.bin").read_bytes()


def test_auto_runs_skipgram_on_a_small_vocabulary_deterministically(corpus, tmp_path, capsys):
    fused_or_skip()
    saved, a = _auto_run(corpus, tmp_path / "a")
    line = _update_line(capsys.readouterr().err)
    assert line.endswith("2 threads, deterministic: faster than Hogwild for V <= 30,000 (here 50))")
    assert saved["train"]["deterministic"] is True and saved["train"]["threads"] == 2
    assert saved["update_reason"] in line
    _, b = _auto_run(corpus, tmp_path / "b")
    assert a == b  # reproducible without asking
    _, same = _auto_run(corpus, tmp_path / "c", "--deterministic")
    assert same == a  # the very run --deterministic gives
    capsys.readouterr()
    saved, _ = _auto_run(corpus, tmp_path / "d", "--model", "cbow")
    assert _update_line(capsys.readouterr().err).endswith("on 2 threads, Hogwild)")
    assert saved["train"]["deterministic"] is False


def test_auto_keeps_hogwild_above_the_vocabulary_limit(corpus, tmp_path, capsys, monkeypatch):
    fused_or_skip()
    monkeypatch.setattr(step_lib, "AUTO_DETERMINISTIC_MAX_VOCAB", 49)
    saved, _ = _auto_run(corpus, tmp_path)
    assert _update_line(capsys.readouterr().err).endswith("on 2 threads, Hogwild)")
    assert saved["train"]["deterministic"] is False


def test_without_the_kernel_a_real_run_says_sparse_and_why(corpus, tmp_path):
    env = dict(os.environ, W2V_JAX_DISABLE_FUSED="1")
    cmd = [sys.executable, "-m", "w2v_jax.cli", "train", "--corpus", corpus, *TINY]
    r = subprocess.run(cmd + ["--out", str(tmp_path)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    reason = "the C++ kernel is unavailable (RuntimeError: disabled by W2V_JAX_DISABLE_FUSED)"
    assert r.stderr.splitlines()[0] == f"update: sparse ({reason})"
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["update_resolved"], saved["update_reason"]) == ("sparse", reason)


def test_deterministic_with_too_many_threads_is_one_line_exit_2(corpus, tmp_path, capsys):
    argv = ["train", "--corpus", corpus, "--out", str(tmp_path), "--deterministic"]
    assert cli.main([*argv, "--threads", "33", *TINY]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert (
        err == "w2v-jax: error: --deterministic runs at most 32 kernel threads, got --threads 33\n"
    )


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("threads", [1, 3])
def test_deterministic_runs_write_byte_identical_vectors(corpus, tmp_path, capsys, threads):
    # B = 256: three kernel threads take ranges of >= 64 pairs each, so all of them run
    flags = ["--deterministic", "--threads", str(threads), *TINY, "--batch-size", "256"]
    for name in ("a", "b"):
        argv = ["train", "--corpus", corpus, "--out", str(tmp_path / name), *flags]
        assert cli.main(argv) == 0
    a, b = ((tmp_path / n / "vectors.bin").read_bytes() for n in "ab")
    assert a == b
    if fused.fused_available():
        first = capsys.readouterr().err.splitlines()[0]
        assert f"on {threads} thread{'s' if threads > 1 else ''}, deterministic" in first


def test_deterministic_threads_change_the_numbers_not_their_reproducibility(corpus, tmp_path):
    fused_or_skip()
    flags = ["--deterministic", *TINY, "--batch-size", "256"]
    for threads in ("1", "3"):
        argv = ["train", "--corpus", corpus, "--out", str(tmp_path / threads), "--threads", threads]
        assert cli.main([*argv, *flags]) == 0
    one, three = ((tmp_path / n / "vectors.bin").read_bytes() for n in "13")
    assert one != three  # rows shared by the ranges are merged, not applied in order


def _resumable(**changes):
    """A small run with checkpoints to resume (2 kernel threads unless ``changes`` say)."""
    settings = dict(
        min_count=1,
        sample=0.0,
        dim=8,
        epochs=2,
        batch_size=256,
        steps_per_call=2,
        log_every_s=1e9,
        checkpoint_every_s=0.0,
        threads=2,
    )
    return override(Config(), **{**settings, **changes})


@pytest.mark.parametrize("threads", [1, 3])
def test_deterministic_resume_is_byte_identical(corpus, tmp_path, threads):
    cfg = _resumable(threads=threads, deterministic=True)
    full = train(corpus, cfg, progress=False)
    part = train(corpus, cfg, out=tmp_path, progress=False, max_steps=6)
    assert 0 < part.steps < full.steps
    resumed = train(corpus, cfg, out=tmp_path, resume=True, progress=False)
    assert resumed.update == full.update == ("fused" if fused.fused_available() else "sparse")
    for name in full.params:
        assert resumed.params[name].tobytes() == full.params[name].tobytes(), name
        assert not np.array_equal(part.params[name], full.params[name]), name


def test_auto_deterministic_run_resumes_byte_identical_without_asking(corpus, tmp_path):
    fused_or_skip()
    full = train(corpus, _resumable(), progress=False)
    assert full.config.train.deterministic and "faster than Hogwild" in full.update_reason
    part = train(corpus, _resumable(), out=tmp_path, progress=False, max_steps=6)
    assert 0 < part.steps < full.steps
    resumed = train(corpus, _resumable(), out=tmp_path, resume=True, progress=False)
    assert resumed.config.train.deterministic
    for name in full.params:
        assert resumed.params[name].tobytes() == full.params[name].tobytes(), name


def test_auto_resumes_a_hogwild_checkpoint_on_hogwild(corpus, tmp_path, monkeypatch):
    fused_or_skip()
    with monkeypatch.context() as m:  # a run that chose Hogwild (an earlier version, say)
        m.setattr(step_lib, "AUTO_DETERMINISTIC_MAX_VOCAB", 0)
        part = train(corpus, _resumable(), out=tmp_path, progress=False, max_steps=6)
    assert not part.config.train.deterministic
    resumed = train(corpus, _resumable(), out=tmp_path, resume=True, progress=False)
    assert resumed.steps > 0 and not resumed.config.train.deterministic
    assert resumed.update_reason.endswith("Hogwild")
