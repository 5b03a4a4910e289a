"""Frozen run configuration: data, model and training knobs with word2vec.c's defaults.

Every default names its source. ``word2vec.c`` refers to tmikolov/word2vec (main() usage text and
globals); gensim refers to ``gensim.models.Word2Vec`` 4.x. Variants are made with
:func:`override`, which routes flat field names to the sub-config that owns them, so a sweep can
write ``override(cfg, window=10, negative=15)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

MODELS = ("sg", "cbow")
LOSSES = ("ns", "nce", "hs", "softmax")  # objectives.BUILTIN
SUBSAMPLE_RULES = ("word2vec", "paper", "off")
OPTIMIZERS = ("sgd", "adagrad", "adam", "rmsprop")
CBOW_GRADS = ("word2vec", "exact")
GRAD_MODES = ("manual", "autodiff")
UPDATE_MODES = ("auto", "sparse", "dense", "fused")  # "auto": step.choose_update
SHARD_LAYOUTS = ("dims", "rows")  # sharding.LAYOUTS: how tables split over devices

# Full softmax materialises [B, V] logits and a dense [V, D] gradient: refuse it past this V.
MAX_SOFTMAX_VOCAB = 50_000

# jax.random.key keeps only the low 32 bits of a seed unless jax_enable_x64 is on (so seeds 0 and
# 2**32 would silently give the same run), raises OverflowError past 64 bits, and the batch stream
# refuses negative seeds: the one range that means the same everywhere is [0, 2**32).
MAX_SEED = 2**32 - 1
# The fused kernel's deterministic schedule keeps a bitmask of threads per row (w2v_kernels.cc).
MAX_DETERMINISTIC_THREADS = 32


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Corpus, vocabulary and batch construction."""

    min_count: int = 5  # word2vec.c -min-count 5
    max_vocab_size: int | None = None  # gensim max_vocab_size; word2vec.c vocab_hash_size*0.7 prune
    max_final_vocab: int | None = None  # gensim max_final_vocab
    sample: float = 1e-3  # t, word2vec.c -sample 1e-3
    subsample_rule: str = "word2vec"  # keep p = min(1, sqrt(t/f) + t/f); "paper": 1 - sqrt(t/f)
    window: int = 5  # W, word2vec.c -window 5
    dynamic_window: bool = True  # b ~ U{1..W} per center, word2vec.c `b = next_random % window`
    ns_exponent: float = 0.75  # noise ~ count^alpha, word2vec.c InitUnigramTable power 0.75
    lowercase: bool = False  # word2vec.c does not lowercase
    max_sentence_len: int = 10_000  # gensim's cut; word2vec.c MAX_SENTENCE_LENGTH 1000
    chunk_tokens: int = 1 << 20  # tokens per chunk, the unit of batching and resume
    # Examples are shuffled within spans of this many corpus tokens, spans in corpus order (0:
    # the whole chunk). word2vec.c and gensim train in corpus order; a span this short matched
    # their quality on text that comes in topical blocks and on an encyclopedia sample alike
    # (BENCHMARKS.md, "The span of the shuffle").
    shuffle_tokens: int = 1 << 16


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and loss."""

    model: str = "sg"  # word2vec.c -cbow 0 is skip-gram (the tool's own default is -cbow 1)
    loss: str = "ns"  # "ns" (SGNS), "nce", "hs" (Huffman hierarchical softmax), "softmax" (full)
    dim: int = 100  # D, word2vec.c -size 100
    negative: int = 5  # K, word2vec.c -negative 5
    cbow_mean: bool = True  # h = mean of context vectors (word2vec.c cbow_mean); False: sum
    cbow_grad: str = "word2vec"  # "word2vec": each context row gets the full neu1e; "exact"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpoints."""

    epochs: int = 5  # word2vec.c -iter 5
    alpha: float | None = None  # None: default_alpha(model, optimizer)
    min_alpha: float = 1e-4  # word2vec.c: alpha never falls below starting_alpha * 1e-4
    optimizer: str = "sgd"  # sgd with linear decay (word2vec.c), or a row-sparse optax rule
    batch_size: int | None = None  # pairs/windows per step; None: 4096 CPU, 16384 fused or GPU (*)
    steps_per_call: int | None = None  # lax.scan length per device call; None: 8 CPU, 16 GPU (*)
    update: str = "auto"  # fused C kernel where it applies on CPU, else "sparse" row scatter-add
    grad: str = "manual"  # "manual": gradients.py; "autodiff": jax.grad of losses.py
    dup_cap: float = 64.0  # a row named n times per batch steps by min(1, cap/n) x its grad sum
    threads: int = 0  # fused kernel threads (like word2vec.c -threads); 0: all cores
    # Bit-reproducible: the fused kernel's deterministic schedule (the same bits for the same
    # thread count, which a run then records), or the pure-JAX step on CPU.
    deterministic: bool = False
    devices: int = 1  # tables split over this many local devices (sharding.py)
    # How the tables split over devices: "dims" (each device every row, D / n columns; only
    # scores move) or "rows" (each device V / n rows; rows move). sharding.Layout.
    shard_by: str = "dims"
    # The batch stream reads the corpus in this many slices, B / slices rows of every step from
    # each (batches.iterate_slices), so each process of a multi-host run reads only its own.
    # None: one per process (1 on one host); resuming keeps the checkpoint's count.
    corpus_slices: int | None = None
    seed: int = 1  # word2vec.c next_random = 1 per thread
    log_every_s: float = 5.0  # progress line period (seconds)
    checkpoint_every_s: float = 600.0  # periodic atomic checkpoint (seconds); 0 disables


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run. Serialise with ``dataclasses.asdict``; rebuild with :func:`from_dict`."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @property
    def alpha(self) -> float:
        """Starting learning rate: explicit, else :func:`default_alpha`."""
        if self.train.alpha is not None:
            return self.train.alpha
        return default_alpha(self.model.model, self.train.optimizer)


def default_alpha(model: str, optimizer: str) -> float:
    """The starting learning rate of ``--model`` trained with ``--optimizer``.

    word2vec.c's 0.025 (skip-gram) and 0.05 (CBOW) for SGD, Adam and RMSprop; four times that
    for Adagrad. Adagrad divides each coordinate's step by the root of its summed squared
    gradients, so at SGD's rate its steps shrink so fast that the tables barely leave their
    common early direction: on the default corpus every neighbour ends at cosine 0.95-1.00
    (BENCHMARKS.md, "Optimizers at their default rates").
    """
    base = 0.05 if model == "cbow" else 0.025
    return 4 * base if optimizer == "adagrad" else base


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
_OWNER = {f.name: sec for sec, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}


def override(cfg: Config, **changes: Any) -> Config:
    """Returns ``cfg`` with flat fields replaced, e.g. ``override(cfg, window=10, loss="hs")``."""
    per_section: dict[str, dict[str, Any]] = {}
    for name, value in changes.items():
        if name not in _OWNER:
            raise ValueError(f"unknown config field {name!r}; known: {sorted(_OWNER)}")
        per_section.setdefault(_OWNER[name], {})[name] = value
    parts = {sec: dataclasses.replace(getattr(cfg, sec), **kw) for sec, kw in per_section.items()}
    return validate(dataclasses.replace(cfg, **parts))


def flat(cfg: Config) -> dict[str, Any]:
    """All fields in one dict (for result rows and command lines)."""
    out: dict[str, Any] = {}
    for sec in _SECTIONS:
        out.update(dataclasses.asdict(getattr(cfg, sec)))
    return out


def from_dict(d: dict[str, Any]) -> Config:
    """Inverse of ``dataclasses.asdict(cfg)``; unknown keys are an error."""
    return validate(Config(**{sec: cls(**d[sec]) for sec, cls in _SECTIONS.items() if sec in d}))


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _check_finite(x: float, flag: str) -> None:
    # Checked before the range checks: nan fails every comparison with a message that does not
    # say why, and inf passes every lower bound ("--alpha must be > 0").
    _check(math.isfinite(x), f"{flag} must be a finite number, got {x}")


def validate(cfg: Config) -> Config:
    """Fails fast, naming the field (and CLI flag) at fault. Returns ``cfg`` unchanged."""
    d, m, t = cfg.data, cfg.model, cfg.train
    _check_finite(d.sample, "--sample")
    _check_finite(d.ns_exponent, "--ns-exponent")
    _check_finite(cfg.alpha, "--alpha")
    _check_finite(t.min_alpha, "--min-alpha")
    _check_finite(t.log_every_s, "log_every_s")
    _check_finite(t.checkpoint_every_s, "--checkpoint-every")
    _check(t.log_every_s >= 0, f"log_every_s must be >= 0, got {t.log_every_s}")
    _check(
        t.checkpoint_every_s >= 0, f"--checkpoint-every must be >= 0, got {t.checkpoint_every_s}"
    )
    _check(
        isinstance(t.seed, numbers.Integral) and 0 <= t.seed <= MAX_SEED,
        f"--seed must be an integer in [0, {MAX_SEED}] (2**32 - 1), got {t.seed}",
    )
    _check(m.model in MODELS, f"--model must be one of {MODELS}, got {m.model!r}")
    _check(m.loss in LOSSES, f"--loss must be one of {LOSSES}, got {m.loss!r}")
    _check(m.dim >= 1, f"--dim must be >= 1, got {m.dim}")
    _check(m.negative >= 0, f"--negative must be >= 0, got {m.negative}")
    _check(m.loss not in ("ns", "nce") or m.negative >= 1, f"--loss {m.loss} needs --negative >= 1")
    _check(m.cbow_grad in CBOW_GRADS, f"cbow_grad must be one of {CBOW_GRADS}")
    _check(d.window >= 1, f"--window must be >= 1, got {d.window}")
    _check(d.min_count >= 1, f"--min-count must be >= 1, got {d.min_count}")
    _check(d.sample >= 0, f"--sample must be >= 0, got {d.sample}")
    _check(d.subsample_rule in SUBSAMPLE_RULES, f"subsample_rule must be one of {SUBSAMPLE_RULES}")
    _check(d.max_sentence_len >= 2, "max_sentence_len must be >= 2")
    _check(d.shuffle_tokens >= 0, f"--shuffle-tokens must be >= 0, got {d.shuffle_tokens}")
    _check(t.epochs >= 1, f"--epochs must be >= 1, got {t.epochs}")
    # (*) None: the device's choice, resolved once by train() (step.device_defaults)
    _check(
        t.batch_size is None or t.batch_size >= 1, f"--batch-size must be >= 1, got {t.batch_size}"
    )
    _check(t.steps_per_call is None or t.steps_per_call >= 1, "steps_per_call must be >= 1")
    _check(cfg.alpha > 0, f"--alpha must be > 0, got {cfg.alpha}")
    _check(0 <= t.min_alpha <= cfg.alpha, "--min-alpha must be in [0, alpha]")
    _check(t.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}")
    _check(t.update in UPDATE_MODES, f"--update must be one of {UPDATE_MODES}")
    _check(t.grad in GRAD_MODES, f"--grad must be one of {GRAD_MODES}")
    _check(t.threads >= 0, f"--threads must be >= 0 (0: all cores), got {t.threads}")
    _check(t.devices >= 1, f"--devices must be >= 1, got {t.devices}")
    _check(t.shard_by in SHARD_LAYOUTS, f"--shard-by must be one of {SHARD_LAYOUTS}")
    _check(
        t.batch_size is None or t.batch_size % t.devices == 0,
        f"--batch-size {t.batch_size} must be a multiple of --devices {t.devices} "
        "(each device takes B / devices examples)",
    )
    _check(
        t.corpus_slices is None or t.corpus_slices >= 1,
        f"--corpus-slices must be >= 1, got {t.corpus_slices}",
    )
    _check(
        t.batch_size is None or t.corpus_slices is None or t.batch_size % t.corpus_slices == 0,
        f"--batch-size {t.batch_size} must be a multiple of --corpus-slices {t.corpus_slices} "
        "(each slice gives B / slices rows of every step)",
    )
    _check(
        not (t.deterministic and t.threads > MAX_DETERMINISTIC_THREADS),
        f"--deterministic runs at most {MAX_DETERMINISTIC_THREADS} kernel threads, "
        f"got --threads {t.threads}",
    )
    _check(t.dup_cap >= 1, f"--dup-cap must be >= 1 (inf: plain sum), got {t.dup_cap}")
    return cfg
