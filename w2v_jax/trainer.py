r"""The host loop: prepare a run, restore it from a checkpoint, run it.

:func:`train` resolves the config into values once (an objective, an input side, an optimizer,
a step; :mod:`w2v_jax.objectives`, :mod:`w2v_jax.inputs`, :mod:`w2v_jax.optim`,
:mod:`w2v_jax.step`), streams fixed-shape batches from :mod:`w2v_jax.batches`, groups
``steps_per_call`` of them for one ``lax.scan`` call, logs honest window means and writes atomic
checkpoints that make a resumed run bit-identical to an uninterrupted one.

On a mesh of several processes, each process reads only its corpus slices
(``corpus_slices``, one per process by default): it counts and encodes only their bytes
(:func:`w2v_jax.corpus.prepare_slices`), builds only their batches
(:func:`w2v_jax.batches.iterate_slices`) and feeds its own devices' rows of each step; one
small all-gather per call sums the words read everywhere (the learning rate's progress) and
collects every slice's position.

Resuming. A checkpoint records the run's config, the objective and optimizer it used, its
vocabulary and a fingerprint of the encoded corpus (sha256 of the ids). ``resume=True`` refuses,
before anything is written, a corpus or any setting that changes the trajectory, naming each
difference with both values: every field of ``DataConfig``, ``ModelConfig`` and ``TrainConfig``
(``--alpha`` compared as the rate it resolves to) except those in :data:`RESUMABLE_SETTINGS`,
which may change on resume: ``log_every_s``, ``checkpoint_every_s``, and ``threads`` unless
``update`` is ``"fused"`` (only the fused kernel uses threads; Hogwild results depend on them).
A checkpoint already at the end of its last epoch trains nothing: ``steps`` is 0 and
``nothing_trained`` says why, and the checkpoint is not rewritten.

Interrupts. While the loop runs in the main thread, SIGINT and SIGTERM finish the current device
call, write a checkpoint (when ``out`` is given) and raise :class:`TrainingInterrupted`; a second
signal raises it at once, without a new checkpoint (the write is atomic: the old checkpoint or
the new one stays, never a torn file). The previous handlers are back when :func:`train` exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from w2v_jax import batches as batches_lib
from w2v_jax import corpus as corpus_lib
from w2v_jax import inputs as inputs_lib
from w2v_jax import objectives as objectives_lib
from w2v_jax import optim, sharding, threefry
from w2v_jax import step as step_lib
from w2v_jax.checkpoint import (
    ArrayBlocks,
    CheckpointError,
    drain,
    from_state_dict,
    load_checkpoint,
    save_checkpoint,
    state_dict,
)
from w2v_jax.config import Config, default_alpha, flat, from_dict, override, validate
from w2v_jax.vocab import Vocab

CHECKPOINT_NAME = "checkpoint.w2v"


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      config: the validated config of the run.
      vocab: the :class:`~w2v_jax.vocab.Vocab` (row i of every table is ``vocab.words[i]``).
      params: the trained tables as host numpy arrays (on a CPU device, views of its buffers).
        In a run over several processes only process 0 holds them; elsewhere this is empty.
      history: one dict per logging window (loss = mean per example in that window).
      epoch_loss: mean loss per example of each epoch.
      words_per_sec: raw corpus words x epochs / training wall time (compilation included).
      train_seconds: wall time of the training loop (vocabulary and encoding excluded).
      prepare_seconds: wall time of this call before the training loop: reading, counting and
        encoding the corpus (or their caches), the checkpoint, the step and the initial tables.
      steps: steps trained by this call (0 when a resumed run had nothing left to do).
      update, update_reason: the step that ran and why (:func:`w2v_jax.step.choose_update`).
      nothing_trained: why this call trained no step, in words ("" when it trained, or when
        ``max_steps`` stopped it).
    """

    config: Config
    vocab: Any
    params: dict[str, np.ndarray]
    history: list[dict[str, float]]
    epoch_loss: list[float]
    words_per_sec: float
    train_seconds: float
    prepare_seconds: float = 0.0
    steps: int = 0
    update: str = ""
    update_reason: str = ""
    nothing_trained: str = ""

    def vectors(self, which: str = "in"):
        """A :class:`~w2v_jax.vectors.Vectors` of the input, output or summed (w + c) vectors,
        sharing the tables' memory (the run is over: they no longer change)."""
        from w2v_jax.vectors import from_tables

        if not self.params:
            raise ValueError(
                "this process holds no tables: in a run over several processes only process 0 "
                "assembles them (TrainResult.params)"
            )
        center, outside = self.params["center_vecs"], self.params.get("outside_vecs")
        return from_tables(self.vocab.words, center, outside, which, copy=False)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped :func:`train` (a ``KeyboardInterrupt``, so code that handles
    Ctrl-C handles it too).

    Attributes:
      path: the checkpoint written at the interrupt, or ``None`` (no ``out``, or a second signal
        stopped the run at once: then the previous checkpoint, if any, is the one to resume).
      step: the step the checkpoint holds (``None`` after a second signal).
      signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
    """

    def __init__(self, path: Path | None, step: int | None, signum: int):
        super().__init__(path, step, signum)
        self.path, self.step, self.signum = path, step, signum


# ----------------------------------------------------------------------------- metrics


@dataclasses.dataclass
class LossTally:
    """Host-side sums of the step metrics: the open logging window and the open epoch.

    The step returns per-step sums (``loss_sum``, ``examples``); the host adds them here only when
    it pulls them from the device (at logging and checkpoint time), so means are exact over any
    window, whatever the logging period.
    """

    epoch: int
    window_loss: float = 0.0
    window_n: float = 0.0
    epoch_loss: float = 0.0
    epoch_n: float = 0.0
    lr: float = math.nan
    epoch_means: list[float] = dataclasses.field(default_factory=list)

    def add(self, metrics: dict[str, np.ndarray], epoch: int, step: int) -> None:
        """Adds one call's host metrics ([S] each, real steps only) from ``epoch``.

        Raises:
          FloatingPointError: a non-finite loss or gradient (the run has diverged).
        """
        if epoch != self.epoch:  # the previous epoch ended with the previous call
            self.epoch_means.append(self.epoch_loss / max(self.epoch_n, 1.0))
            self.epoch_loss = self.epoch_n = 0.0
            self.epoch = epoch
        ls, n = float(np.sum(metrics["loss_sum"])), float(np.sum(metrics["examples"]))
        if not (math.isfinite(ls) and np.all(np.isfinite(metrics["grad_norm"]))):
            raise FloatingPointError(
                f"non-finite loss or gradient at step {step}: the run diverged; lower --alpha"
            )
        self.window_loss += ls
        self.window_n += n
        self.epoch_loss += ls
        self.epoch_n += n
        if len(metrics["lr"]):
            self.lr = float(metrics["lr"][-1])

    def close_epoch(self) -> None:
        """Records the open epoch's mean at the end of a run (if it saw any example)."""
        if self.epoch_n > 0:
            self.epoch_means.append(self.epoch_loss / self.epoch_n)
        self.epoch_loss = self.epoch_n = 0.0

    def take_window(self) -> float | None:
        """The open window's mean loss per example (``None`` if empty); starts a new window."""
        if self.window_n == 0:
            return None
        mean = self.window_loss / self.window_n
        self.window_loss = self.window_n = 0.0
        return mean

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in ("window_loss", "window_n", "epoch_loss", "epoch_n")}
        out.update({f"epoch_loss_{i}": v for i, v in enumerate(self.epoch_means)})
        return {k: np.asarray(v, np.float64) for k, v in out.items()}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any], epoch: int) -> LossTally:
        per_epoch = [(int(k.rsplit("_", 1)[1]), float(v)) for k, v in d.items() if k[-1].isdigit()]
        means = sorted(per_epoch)
        sums = {k: float(v) for k, v in d.items() if not k[-1].isdigit()}
        return cls(epoch=epoch, epoch_means=[v for _, v in means], **sums)


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _progress_line(row: dict[str, float], epochs: int, total_words: int, words_done: int) -> str:
    wps = row["words_per_sec"]
    eta = (total_words - words_done) / wps if wps > 0 else float("inf")
    lr = f"lr {row['lr']:.5f}  " if math.isfinite(row["lr"]) else ""
    return (
        f"epoch {int(row['epoch']) + 1}/{epochs} {100 * row['progress']:5.1f}%  "
        f"loss {row['loss']:.4f}  {lr}{wps / 1e3:,.0f}k words/s  ETA {_fmt_eta(eta)}"
    )


# ----------------------------------------------------------------------------- batches


def _stack(batches: list, progress: np.ndarray, active: np.ndarray, size: int) -> dict:
    """``size`` stacked batches with their ``progress`` [size] float32 and ``active`` [size]
    bool; a short group is padded with inactive copies of its last batch (skipped by the step,
    see :func:`step.make_steps`)."""
    n = len(batches)
    padded = batches + [batches[-1]] * (size - n)
    out = {k: np.stack([b[i] for b in padded]) for i, k in enumerate(batches[0]._fields)}
    out["progress"] = np.concatenate([progress, np.repeat(progress[-1:], size - n)]).astype(
        np.float32
    )
    out["active"] = np.concatenate([active, np.zeros(size - n, bool)])
    return out


def _grouped(stream: Iterator, size: int) -> Iterator[list]:
    """Lists of ``size`` items of ``stream``; the last may be shorter."""
    group: list = []
    for item in stream:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _with_saved_defaults(cfg: Config, ckpt: dict | None, processes: int) -> Config:
    """``cfg`` with the settings whose default depends on the run (the optimizer, the platform,
    the process count) filled in where the config leaves them unset: on ``--resume`` from the
    checkpoint, so that ``--resume`` alone continues the run as it was (a GPU run's batch size
    on a CPU, say); in a fresh run the starting rate (so ``config.json`` and the checkpoint
    record it) and one corpus slice per process. The batch size and steps per call of a fresh
    run are :func:`w2v_jax.step.device_defaults`'."""
    if ckpt is None:
        fill = {"alpha": cfg.alpha, "corpus_slices": processes}
    else:
        saved = _saved_config(ckpt).train
        names = ("alpha", "batch_size", "steps_per_call", "corpus_slices", "threads")
        fill = {name: getattr(saved, name) for name in names}
        if cfg.train.update == "auto":  # auto's schedule is the one the checkpoint ran
            fill["deterministic"] = saved.deterministic
    # --threads 0: all cores; --deterministic off: auto's choice; every other setting: None
    unset = {"threads": 0, "deterministic": False}
    return override(cfg, **{k: v for k, v in fill.items() if getattr(cfg.train, k) == unset.get(k)})


def _saved_config(ckpt: dict) -> Config:
    """The config of the run that wrote ``ckpt``, with what older checkpoints leave unset
    filled in as it was then: one corpus slice, word2vec.c's rate for every optimizer (Adagrad
    included), one kernel thread under ``--deterministic`` (a deterministic run records its
    thread count since the kernel has a deterministic multi-thread schedule), and examples
    shuffled over whole chunks (``shuffle_tokens`` 0)."""
    saved = from_dict(ckpt["config"])
    t = saved.train
    return override(
        saved,
        corpus_slices=t.corpus_slices or 1,
        alpha=t.alpha if t.alpha is not None else default_alpha(saved.model.model, "sgd"),
        threads=1 if t.deterministic and t.threads == 0 else t.threads,
        shuffle_tokens=ckpt["config"].get("data", {}).get("shuffle_tokens", 0),
    )


def _positions_of(ckpt: dict, slices: int, path: Path) -> tuple[batches_lib.Position, ...]:
    """The checkpoint's resume position of each corpus slice."""
    rows = np.asarray(ckpt["position"], np.int64).reshape(-1, 3)
    if rows.shape[0] != slices:
        raise CheckpointError(
            f"checkpoint {path} holds {rows.shape[0]} corpus slice positions, this run reads "
            f"{slices} slices"
        )
    return tuple(batches_lib.Position(*map(int, r)) for r in rows)


def _host_params(state: step_lib.TrainState) -> dict[str, np.ndarray]:
    """The tables as host arrays. Streamed ones (several processes) are assembled block by
    block on process 0 only; the other processes take part in the same gathers and keep none,
    so no host but the one that writes the vectors ever holds the whole tables."""
    out = {}
    for k, v in state.params.items():
        if not isinstance(v, ArrayBlocks):
            out[k] = np.asarray(jax.device_get(v))
        elif jax.process_index() == 0:
            out[k] = sharding.gather_blocks(v)
        else:
            drain({k: v})
    return out


def _epoch(positions) -> int:
    """The epoch of a run whose slices resume at ``positions``: the least advanced one's."""
    return min(p.epoch for p in positions)


def _slices_read(cfg: Config, mesh) -> tuple[range, range | None]:
    """``(slices, rows)``: the corpus slices this process reads and the rows of each global
    batch they fill (``None``: all of them, when every process reads every slice).

    On one process every slice. On several, process p reads its block of ``S / P`` slices,
    which fill exactly its devices' rows; where the slices do not split evenly over the
    processes (a run resumed on another process count, say), every process reads all of them
    and keeps its devices' rows, as one process would.
    """
    s, b = cfg.train.corpus_slices, cfg.train.batch_size
    if mesh is None or jax.process_count() == 1:
        return range(s), None
    p, n = jax.process_index(), jax.process_count()
    rows = sharding.process_rows(mesh, b)
    if s % n == 0 and rows is not None:
        mine = range(p * s // n, (p + 1) * s // n)
        if rows == range(mine.start * b // s, mine.stop * b // s):
            return mine, rows
    return range(s), None


# ----------------------------------------------------------------------------- checkpoints


def _run_identity(cfg: Config, objective, tx, update: str) -> dict[str, str]:
    """What a checkpoint records about values that are not in the config (``update`` is the
    step that ran, ``auto`` resolved)."""
    return {"objective": objective.name, "optimizer": type(tx).__name__, "update": update}


def corpus_fingerprint(corpus: corpus_lib.CorpusSlices, name: str) -> dict[str, Any]:
    """What a checkpoint records about the corpus: its digest (sha256 of the encoded ids,
    sentence bounds and raw word count, :func:`w2v_jax.corpus.encoded_digest`; of each byte
    slice's, for a corpus read by byte slices), plus its size and a name for messages."""
    return {"sha256": corpus.digest, "words": sum(corpus.tokens), "name": name}


def _prepare(source, cfg: Config, vocab, read: range, apart: bool, objective, progress: bool):
    """The vocabulary and the corpus in ``corpus_slices`` slices, this process's ``read``.

    A run in several slices of a corpus that can be cut by bytes (plain-text files, the default
    tokenizer) reads only its own slices' bytes (``apart``: the processes share their counts);
    otherwise the whole corpus is counted and encoded and cut into slices of equal tokens. Both
    are cached for the next run."""
    show = corpus_lib.progress_printer(cfg.train.log_every_s) if progress else None
    slices, data = cfg.train.corpus_slices, cfg.data
    if vocab is not None:
        objective.check_vocab(len(vocab.words))
    if slices > 1 and corpus_lib.splits_by_bytes(source, data):
        share = sharding.allgather_bytes if apart else None
        vocab, sliced = corpus_lib.prepare_slices(
            source, data, slices=slices, read=read, share=share, vocab=vocab, progress=show
        )
        objective.check_vocab(len(vocab.words))
        return vocab, sliced
    if vocab is None:  # one pass counts and encodes
        vocab, encoded = corpus_lib.prepare_corpus(source, data, progress=show)
        objective.check_vocab(len(vocab.words))
    else:
        encoded = corpus_lib.encode_corpus(source, vocab, progress=show)
    digest = corpus_lib.encoded_digest(encoded)
    return vocab, corpus_lib.cut_encoded(encoded, slices, data.chunk_tokens, digest)


def _checkpoint_payload(cfg, identity, corpus, vocab, state, positions, words_done, tally) -> dict:
    host = jax.device_get(
        {"params": state.params, "opt_state": state.opt_state, "step": state.step}
    )
    return {
        "format": 2,
        "config": dataclasses.asdict(cfg),
        "identity": identity,
        "corpus": corpus,
        "vocab": {
            "words": list(vocab.words),
            "counts": np.asarray(vocab.counts),
            "total_words": int(vocab.total_words),
        },
        "params": host["params"],
        "opt_state": state_dict(host["opt_state"]),
        "step": np.asarray(host["step"]),
        # [3] for one slice (the layout before slices existed), else [slices, 3]
        "position": np.asarray(positions, np.int64).reshape(
            (3,) if len(positions) == 1 else (-1, 3)
        ),
        "words_done": int(words_done),
        "accumulators": tally.state_dict(),
    }


# Settings that may change on --resume: they do not change the trajectory. ``threads`` and
# ``deterministic`` (the kernel's thread count) join them unless the run's update is "fused";
# ``update`` itself is compared as the step that ran (identity), so "auto" equals what it chose.
RESUMABLE_SETTINGS = ("log_every_s", "checkpoint_every_s", "devices", "shard_by")
_FUSED_ONLY = ("threads", "deterministic")
# How a setting is named in messages, where it is not "--" + the field with dashes.
_SETTING_NAMES = {
    "dynamic_window": "dynamic_window (--fixed-window)",
    "cbow_mean": "cbow_mean (--cbow-sum)",
    "max_sentence_len": "max_sentence_len",
    "chunk_tokens": "chunk_tokens",
}
# The identity's values, where the config does not name them (objective=, tx= arguments).
_IDENTITY_NAMES = {"objective": "objective (objective=)", "optimizer": "optimizer (tx=)"}


def _trajectory_settings(cfg: Config, update: str) -> dict[str, Any]:
    """The settings a resume must keep, by field name (``alpha``: the rate it resolves to)."""
    values = {**flat(cfg), "alpha": cfg.alpha}
    skip = {*RESUMABLE_SETTINGS, "update", *(_FUSED_ONLY if update != "fused" else ())}
    return {k: v for k, v in values.items() if k not in skip}


def _differences(saved: dict, now: dict, names: dict[str, str] = _SETTING_NAMES) -> list[str]:
    """``"--alpha: checkpoint 0.025, now 0.05"`` for each key whose values differ."""
    return [
        f"{names.get(k, '--' + k.replace('_', '-'))}: checkpoint {saved[k]}, now {now[k]}"
        for k in now
        if k in saved and saved[k] != now[k]
    ]


def _refuse(path: Path, differences: list[str]) -> None:
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was written by a different run ({'; '.join(differences)}); "
            "resume with its settings, or use another --out, or drop --resume"
        )


def _check_resumable(ckpt: dict, cfg: Config, identity: dict, path: Path) -> None:
    """A checkpoint resumes only the run that wrote it: every setting that changes the
    trajectory, the objective, the optimizer and the update must match (see the module doc).

    Raises:
      CheckpointError: naming each difference with both values.
    """
    ckpt_cfg = _saved_config(ckpt)
    saved_id = {"update": ckpt_cfg.train.update, **ckpt.get("identity", {})}
    # The step that ran decides whether threads matter; a change of update is named anyway.
    fused = "fused" in (saved_id["update"], identity["update"])
    update = "fused" if fused else identity["update"]
    saved = _trajectory_settings(ckpt_cfg, update)
    now = _trajectory_settings(cfg, update)
    differences = _differences(saved, now)
    # A --loss or --optimizer difference already names the objective's or optimizer's change.
    flag = {"objective": "loss", "optimizer": "optimizer"}
    ids = {k: v for k, v in identity.items() if saved.get(flag.get(k)) == now.get(flag.get(k))}
    _refuse(path, differences + _differences(saved_id, ids, _IDENTITY_NAMES))


def _check_corpus(ckpt: dict, corpus: dict[str, Any], path: Path) -> None:
    """The corpus must be the one the checkpoint was trained on (same encoded ids)."""
    saved = ckpt.get("corpus")  # absent in checkpoints written before it was recorded
    if saved is not None and saved["sha256"] != corpus["sha256"]:

        def show(c: dict) -> str:
            return f"{c['name']} ({int(c['words']):,} words, sha256 {c['sha256'][:12]})"

        _refuse(path, [f"corpus: checkpoint {show(saved)}, now {show(corpus)}"])


def _vocab_of(ckpt: dict) -> Vocab:
    v = ckpt["vocab"]
    return Vocab(
        words=tuple(v["words"]),
        counts=np.asarray(v["counts"], np.int64),
        total_words=int(v["total_words"]),
    )


def _restore(
    template: step_lib.TrainState, ckpt: dict, path: Path, *, on_host: bool = False
) -> step_lib.TrainState:
    """The checkpoint's state in the structure of ``template`` (abstract leaves suffice), on the
    default device, or as host arrays (``on_host``, for :func:`sharding.shard_state` to split
    without a whole-table copy on one device)."""
    put = np.asarray if on_host else jax.device_put
    params = {k: put(np.asarray(a)) for k, a in ckpt["params"].items()}
    try:
        opt_state = from_state_dict(template.opt_state, ckpt["opt_state"])
    except (ValueError, KeyError, TypeError) as e:  # a tx= whose state has another layout
        raise CheckpointError(
            f"checkpoint {path} holds the state of another optimizer than this run's ({e})"
        ) from None
    return step_lib.TrainState(
        params=params,
        opt_state=jax.tree.map(put, opt_state),
        step=put(np.asarray(ckpt["step"], np.int32)),
        scratch=put(np.zeros(template.scratch.shape, np.float32)),
    )


# ----------------------------------------------------------------------------- signals


class _StopOnSignals:
    """Within ``with``: the first SIGINT or SIGTERM sets ``signum`` (the loop stops after the
    current call); a second raises :class:`TrainingInterrupted` at once. Installed only in the
    main thread (Python runs handlers there); the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise TrainingInterrupted(None, None, signum)
        self.signum = signum

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            # None: a handler not installed from Python; the default is the closest we can do.
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


# ----------------------------------------------------------------------------- train


def _local_mesh(n: int):
    """A mesh of this process's first ``n`` devices, or a clear error when there are fewer."""
    local = jax.local_devices()
    if len(local) < n:
        platform = local[0].platform
        hint = (
            " (on CPU, `w2v-jax train --devices N` sets them up; from Python set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax)"
            if platform == "cpu"
            else ""
        )
        raise ValueError(f"--devices {n}: this process has {len(local)} {platform} device(s){hint}")
    return sharding.make_mesh(local[:n])


def _sharded_step(cfg: Config, mesh, objective, inputs, tx):
    """``(update, reason, step)`` on a mesh: the pure-JAX row step, tables split by
    ``cfg.train.shard_by``."""
    n = mesh.devices.size
    if cfg.train.update not in ("auto", "sparse"):
        raise ValueError(
            f"--update {cfg.train.update} runs on one device; on {n} devices "
            "the step is the pure-JAX row step (--update auto or sparse)"
        )
    layout = sharding.layout_named(cfg.train.shard_by)
    layout.check_mesh(n, cfg.model.dim)
    step = sharding.make_sharded_step(
        mesh, objective, inputs, tx, dup_cap=cfg.train.dup_cap, layout=layout
    )
    reason = f"the pure-JAX row step, tables split over {n} devices by {layout.splits}"
    return "sparse", reason, step


def _named_corpus(corpus: str | Path) -> bool:
    """A named corpus (``wiki-sample``, ...) rather than a path (a path takes precedence)."""
    return str(corpus) in corpus_lib.NAMED_CORPORA and not Path(corpus).exists()


def _resolve(corpus: str | Path, cfg: Config):
    return corpus_lib.resolve_corpus(
        corpus, lowercase=cfg.data.lowercase, max_sentence_len=cfg.data.max_sentence_len
    )


def resolve(cfg: Config, *, objective=None, tx=None):
    """``(objective, inputs, tx)``: the values ``cfg`` names, unless given (done once per run)."""
    objective = objective if objective is not None else objectives_lib.from_config(cfg)
    tx = tx if tx is not None else optim.from_config(cfg)
    return objective, inputs_lib.from_config(cfg), tx


def train(
    corpus: Any = "wiki-sample",
    config: Config | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callable[[dict[str, float]], None]] = (),
    vocab: Any = None,
    max_steps: int | None = None,
    tx: Any = None,
    objective: objectives_lib.Objective | None = None,
    mesh: Any = None,
) -> TrainResult:
    """Trains word2vec on ``corpus`` (a path, a folder, or a named corpus such as ``wiki-sample``).

    Args:
      corpus: anything :func:`w2v_jax.corpus.resolve_corpus` accepts, or a ``CorpusSource``.
      config: the run's :class:`~w2v_jax.config.Config`; ``None`` means word2vec.c's defaults.
      out: run folder for ``checkpoint.w2v``; ``None`` writes no checkpoint.
      resume: continue from ``out/checkpoint.w2v``; the result is bit-identical to a run that
        was never interrupted (same machine, same config).
      progress: print a progress line (words/s, loss, lr, ETA) to stderr every ``log_every_s``.
      callbacks: called with each logging row (a dict), e.g. by experiment scripts.
      vocab: a prebuilt vocabulary (skips the counting pass).
      max_steps: stop after this many steps (for tests and profiling).
      tx: an optimizer value instead of ``config``'s ``--optimizer``: any element-wise optax
        transformation (``optax.adagrad(0.1)``; its own learning rate), or
        :func:`w2v_jax.optim.make_optimizer` for word2vec's linear decay.
      objective: an :class:`~w2v_jax.objectives.Objective` instead of ``config``'s ``--loss``.
      mesh: a ``jax.sharding.Mesh`` to split the tables over, by dimensions or by vocabulary
        rows as ``config``'s ``shard_by`` says (:mod:`w2v_jax.sharding`; all processes' devices
        in a multi-host run); ``None`` with ``devices > 1`` in the config makes a mesh of that
        many local devices. The step is the pure-JAX row step's model and update under
        ``shard_map``; checkpoints depend on neither the device count nor the layout (resume on
        another mesh, another layout, or on one device).

    Returns:
      A :class:`TrainResult`.
    """
    # Prepare: resolve every name of the config into a value, once.
    # batch_size/steps_per_call None: the checkpoint's on --resume, else the platform's and the
    # step's (step.device_defaults; 4096 x 8 on CPU, 16384 x 8 for the fused kernel).
    t_call = time.perf_counter()
    cfg = validate(config if config is not None else Config())
    source = corpus
    if isinstance(corpus, (str, Path)) and _named_corpus(corpus):
        # A named corpus is prepared before JAX starts its runtime threads (device_defaults
        # below does): gensim's WikiCorpus forks worker processes, unsafe in a threaded process.
        source = _resolve(corpus, cfg)
    ckpt_path = Path(out) / CHECKPOINT_NAME if out is not None else None
    ckpt = None
    if resume:
        if ckpt_path is None:
            raise ValueError("--resume needs --out (the folder holding checkpoint.w2v)")
        # several processes: each maps the file and reads only the rows of its own shards
        ckpt = load_checkpoint(ckpt_path, mmap=jax.process_count() > 1)
    mesh = mesh if mesh is not None or cfg.train.devices == 1 else _local_mesh(cfg.train.devices)
    # the corpus slices before device_defaults, whose batch size every slice must divide
    cfg = _with_saved_defaults(cfg, ckpt, jax.process_count() if mesh is not None else 1)
    objective, inputs, tx = resolve(cfg, objective=objective, tx=tx)
    if ckpt is not None:
        vocab = _vocab_of(ckpt)

    def settle(cfg: Config, vocab_size: int | None):
        """The step, once what chooses it is known: ``auto``'s kernel schedule depends on the
        vocabulary's size. Prints the choice and checks that a checkpoint can resume it."""
        if mesh is None:
            resumed = None if ckpt is None else ckpt.get("identity", {}).get("update")
            fresh = vocab_size if ckpt is None else None  # a resume keeps the saved schedule
            cfg, update, why = step_lib.resolve_update(
                cfg, objective, inputs, tx, resumed=resumed, vocab_size=fresh
            )
            cfg = step_lib.device_defaults(cfg, update)
            one_step = step_lib.for_config(cfg, objective, inputs, tx, update=update)
        else:
            cfg = step_lib.device_defaults(cfg)
            update, why, one_step = _sharded_step(cfg, mesh, objective, inputs, tx)
        if progress:
            print(f"update: {update} ({why})", file=sys.stderr, flush=True)
        identity = _run_identity(cfg, objective, tx, update)
        if ckpt is not None:
            _check_resumable(ckpt, cfg, identity, ckpt_path)
        return cfg, update, why, one_step, identity

    # A fresh run without a vocabulary learns its size from the corpus; any other run settles
    # first, so that a checkpoint that cannot be resumed is refused before the corpus is read.
    # A step that cannot run is refused before it either way.
    early = mesh is not None or vocab is not None
    if early:
        size = None if vocab is None else len(vocab.words)
        cfg, update, update_reason, one_step, identity = settle(cfg, size)
    else:
        step_lib.for_config(cfg, objective, inputs, tx)

    if isinstance(source, (str, Path)):  # a path: read once the run's settings are checked
        source = _resolve(source, cfg)
    multi = mesh is not None and jax.process_count() > 1
    if multi:  # every process must train the same run: refuse before any other collective
        sharding.check_same_everywhere(
            {
                "config": flat(cfg),
                "corpus files": corpus_lib.files_identity(source),
                "objective and optimizer": identity,
                "checkpoint step": None if ckpt is None else int(ckpt["step"]),
            }
        )
    read, rows = _slices_read(cfg, mesh)
    vocab, sliced = _prepare(source, cfg, vocab, read, rows is not None, objective, progress)
    if not early:
        cfg, update, update_reason, one_step, identity = settle(cfg, len(vocab.words))
    corpus_id = corpus_fingerprint(sliced, str(getattr(source, "name", corpus)))
    if ckpt is not None:
        _check_corpus(ckpt, corpus_id, ckpt_path)
    if multi:
        sharding.check_same_everywhere(
            {
                "corpus": corpus_id,
                "vocabulary": (vocab.words, np.asarray(vocab.counts).tolist()),
            }
        )
    consts = objective.make_consts(vocab.counts)
    consts = jax.device_put(consts) if mesh is None else sharding.replicate(consts, mesh)

    # Restore (or start).
    layout = sharding.layout_named(cfg.train.shard_by)
    init_key, step_key = threefry.split_seed(cfg.train.seed)
    vocab_size = len(vocab.words)
    table_rows = {"center_vecs": vocab_size, objective.table: objective.table_rows(vocab_size)}

    def fresh_state() -> step_lib.TrainState:
        params = step_lib.init_params(objective, vocab_size, cfg.model.dim, init_key)
        return step_lib.init_state(params, tx)

    slices = cfg.train.corpus_slices
    positions = (batches_lib.START,) * slices  # where each corpus slice resumes
    words_done = 0
    tally = LossTally(epoch=0)
    if ckpt is not None:  # the structure of a fresh state, the checkpoint's values
        state = _restore(jax.eval_shape(fresh_state), ckpt, ckpt_path, on_host=mesh is not None)
        positions = _positions_of(ckpt, slices, ckpt_path)
        words_done = int(ckpt["words_done"])
        tally = LossTally.from_state_dict(ckpt["accumulators"], epoch=_epoch(positions))
        if mesh is not None:
            state = sharding.shard_state(state, mesh, layout=layout)
        ckpt["params"] = ckpt["opt_state"] = None  # the host copies: not held through the run
    elif mesh is not None:  # each device makes its own rows, nobody the whole
        state = sharding.init_state(
            objective, vocab_size, cfg.model.dim, init_key, tx, mesh, layout=layout
        )
    else:
        state = fresh_state()
    tally.epoch = _epoch(positions)
    sync = mesh is not None and sharding.needs_sync(mesh)

    def saved_state() -> step_lib.TrainState:
        """The state as one device would hold it (no padding rows), for checkpoints. Over
        several processes each split leaf streams in row blocks, so no process holds the whole
        state (gathering it would put every table on every device); one process gathers it to
        host, which is faster there (BENCHMARKS.md)."""
        if mesh is None:
            return state
        dim = cfg.model.dim
        if multi:
            return sharding.streamed_state(state, table_rows, dim=dim)
        whole = sharding.unshard_state(state)
        return sharding.unpad_state(whole, table_rows, len(vocab.words), dim)

    # Run.
    steps_fn = step_lib.make_steps(one_step)
    stream = batches_lib.prefetch(
        batches_lib.iterate_slices(
            sliced,
            vocab,
            cfg.data,
            batch_size=cfg.train.batch_size,
            seed=cfg.train.seed,
            model=cfg.model.model,
            epochs=cfg.train.epochs,
            slices=slices,
            read=read,
            start=positions[read.start : read.stop],
            pad_forever=multi,  # a process done early pads until every process is done
        )
    )
    total_words = cfg.train.epochs * sum(sliced.raw_words)
    history: list[dict[str, float]] = []
    pending: list[tuple[dict, int, int]] = []  # (device metrics, epoch, real steps) not pulled
    t0 = time.perf_counter()
    words_at_start, steps_at_start = words_done, int(state.step)
    last_log = last_ckpt = t0
    apart = rows is not None  # this process reads only its slices, for its own rows

    def pull() -> None:
        """Moves pending device metrics into the tally (the only sync point)."""
        for metrics, ep, n_real in jax.device_get(pending):
            tally.add({k: v[:n_real] for k, v in metrics.items()}, ep, int(state.step))
        pending.clear()

    def log(now: float) -> None:
        pull()
        loss = tally.take_window()
        if loss is None:  # nothing trained since the last line: no empty row
            return
        elapsed = now - t0
        row = {
            "step": float(state.step),
            "epoch": float(min(_epoch(positions), cfg.train.epochs - 1)),
            "progress": words_done / max(total_words, 1),
            "loss": loss,
            "lr": tally.lr,
            "words_per_sec": (words_done - words_at_start) / max(elapsed, 1e-9),
            "elapsed": elapsed,
        }
        history.append(row)
        for cb in callbacks:
            cb(row)
        if progress:
            line = _progress_line(row, cfg.train.epochs, total_words, words_done)
            print(line, file=sys.stderr, flush=True)

    def checkpoint() -> None:
        pull()
        payload = _checkpoint_payload(
            cfg, identity, corpus_id, vocab, saved_state(), positions, words_done, tally
        )
        if jax.process_index() == 0:  # one writer; every process takes part in each gather
            save_checkpoint(ckpt_path, payload)
        else:
            drain(payload)

    groups = _grouped(stream, cfg.train.steps_per_call)
    # The generators are closed here, not by the garbage collector: a second signal that lands
    # during their cleanup then propagates as TrainingInterrupted instead of being printed as
    # an "exception ignored" traceback.
    with _StopOnSignals() as stop, contextlib.closing(stream), contextlib.closing(groups):
        for group in groups:
            if max_steps is not None and int(state.step) >= max_steps:
                break
            ep = _epoch(positions)
            words = np.asarray([sum(info.words_done) for _, info in group], np.int64)
            real = np.asarray([info.real for _, info in group])
            mine = np.asarray(group[-1][1].positions, np.int64)
            if apart:  # every process learns every slice's progress: one tiny all-gather
                words, real, mine = sharding.gather_progress(words, real, mine)
            if not real.any():  # every process has read all its slices (multi-host padding)
                break
            positions = tuple(batches_lib.Position(*map(int, p)) for p in mine)
            n_real = int(real.sum())  # real steps come first: a slice that is done stays done
            batch = _stack(
                [b for b, _ in group], words / max(total_words, 1), real, cfg.train.steps_per_call
            )
            if mesh is not None:
                batch = sharding.shard_batches(
                    batch, mesh, batch_size=cfg.train.batch_size if apart else None
                )
            state, metrics = steps_fn(state, consts, batch, step_key)
            if sync:
                jax.block_until_ready(metrics)
            pending.append((metrics, ep, n_real))
            words_done = int(words[n_real - 1])
            now = time.perf_counter()
            if now - last_log >= cfg.train.log_every_s:
                log(now)
                last_log = now
            every = cfg.train.checkpoint_every_s
            due = ckpt_path is not None and every > 0 and now - last_ckpt >= every
            signum = stop.signum
            if multi:  # process 0's clock decides, any process's signal stops all
                due, signum = sharding.agree(due, signum)
            if due:
                checkpoint()
                last_ckpt = time.perf_counter()
            # After the last step the run is done: it finishes (its outputs are moments away).
            if signum is not None and _epoch(positions) < cfg.train.epochs:
                if ckpt_path is not None:
                    checkpoint()  # a second signal here keeps the old file (atomic write)
                raise TrainingInterrupted(ckpt_path, int(state.step), signum)
    jax.block_until_ready(state.params)
    log(time.perf_counter())
    tally.close_epoch()
    steps = int(state.step) - steps_at_start
    if ckpt_path is not None and steps > 0:  # nothing trained: the checkpoint stays as it was
        checkpoint()
    seconds = time.perf_counter() - t0
    nothing_trained = ""
    if steps == 0 and (max_steps is None or steps_at_start < max_steps):
        epochs = cfg.train.epochs
        nothing_trained = (
            f"nothing to train: the checkpoint is already at the end of epoch {epochs}/{epochs}"
            if ckpt is not None
            else f"nothing to train: the corpus gives no training example "
            f"({sum(sliced.tokens):,} in-vocabulary words in {sum(sliced.sentences):,} "
            f"sentences; a sentence needs two of them)"
        )
    return TrainResult(
        config=cfg,
        vocab=vocab,
        params=_host_params(saved_state()),
        history=history,
        epoch_loss=tally.epoch_means,
        words_per_sec=(words_done - words_at_start) / max(seconds, 1e-9),
        train_seconds=seconds,
        prepare_seconds=t0 - t_call,
        steps=steps,
        update=update,
        update_reason=update_reason,
        nothing_trained=nothing_trained,
    )
