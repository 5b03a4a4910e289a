r"""Subsampling of frequent words and the noise distribution for negative sampling.

Host side (numpy, float64): :func:`keep_probs` and :func:`noise_distribution`, each built once
per vocabulary. Device side (JAX): :class:`NoiseTable`, a pytree built on host by
:func:`build_noise_table`, and :func:`sample_negatives`, which draws a fixed ``[B, K]`` int32
array of negatives from a PRNG key inside ``jit``.

Subsampling (Mikolov et al. 2013, "Distributed Representations of Words and Phrases"):
with ``f = count / total`` and threshold ``t`` (``sample``), a token of the word is kept with
probability

* ``"word2vec"`` (word2vec.c, gensim): ``min(1, sqrt(t/f) + t/f)``; word2vec.c writes it as
  ``(sqrt(cn / (sample * train_words)) + 1) * (sample * train_words) / cn``;
* ``"paper"``: ``1 - max(0, 1 - sqrt(t/f))`` = ``min(1, sqrt(t/f))``;
* ``"off"`` (or ``sample == 0``): 1.

``total`` is the sum of the counts of the vocabulary that is kept (after ``min_count``), as
word2vec.c's ``train_words`` (summed in SortVocab) and gensim's ``retain_total``.

Noise distribution: ``P_n(w) = count(w)^alpha / sum_v count(v)^alpha`` (alpha 0.75 in word2vec.c
InitUnigramTable; 0 is uniform, 1 the unigram distribution).

Two device samplers were measured (``python bench/pipeline.py --negatives``; the numbers are in
BENCHMARKS.md):

* ``"table"``: word2vec.c's unigram table, ``table[i] = w`` for ``round(P_n(w) * N)`` slots.
  word2vec.c uses ``N = 1e8`` int32 (400 MB); here ``N = table_size`` (default 1e7, 40 MB on
  device) drawn with one ``jax.random.randint`` per negative and one gather from the table.
  Probabilities are quantised to ``1/N``: a word with ``P_n < 1/N`` may get no slot at all.
* ``"alias"``: Walker/Vose alias table, ``prob`` [V] float32 and ``alias`` [V] int32; one
  uniform int ``i`` in ``[0, V)`` and one uniform float ``u`` per draw, result
  ``i if u < prob[i] else alias[i]``. Exact up to float32 rounding of ``prob``, only 8 bytes
  per word (cache resident), built in O(V).

The default is ``"alias"``. On CPU (jax 0.10, threefry keys, [4096, 5] per call, a shared
2-vCPU machine) both drew 10-24M negatives/s and the table led by 0-25% in most runs, within the
machine's noise: the cost is the PRNG, not the lookup (``jax.random.randint`` spends two 32-bit
words per draw, the alias one more for ``u``). The alias table is exact, needs 8 bytes per word
(0.6 MB at V = 71k against 40 MB for N = 1e7) and never starves a rare word, so it wins the tie.
Choose ``kind="table"`` where the PRNG is cheap (e.g. ``rbg`` keys) and speed matters more.

Negative equal to the positive. word2vec.c and gensim skip such a sample
(``if (target == word) continue;``), so a pair can get fewer than K negatives. We keep it: the
batch keeps its fixed ``[B, K]`` shape (no data-dependent masking, one compile), and the loss
stays a well-defined function of the sampled ids with a consistent gradient (the same row gets
the positive push from ``u_o`` and the negative push from ``u_k``; they are scatter-added). The
event has probability ``P_n(o)`` per draw: below 1e-3 for all but a few dozen of the most
frequent words of a V >= 1e4 vocabulary, and those are the words subsampling removes most.

K versus the vocabulary: :func:`check_negatives` requires ``V >= 2`` and ``K <= V - 1`` (there
must be at least K words other than the positive; draws are with replacement, but asking for
more negatives than there are other words is a configuration mistake, not a sampling need).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SUBSAMPLE_RULES = ("word2vec", "paper", "off")
NOISE_KINDS = ("alias", "table")
DEFAULT_NOISE_KIND = "alias"
DEFAULT_TABLE_SIZE = 10_000_000


def keep_probs(counts: np.ndarray, sample: float, rule: str) -> np.ndarray:
    """Per-word probability that a token survives subsampling.

    Args:
      counts: [V] int64 word counts of the kept vocabulary.
      sample: threshold t (word2vec.c ``-sample``); 0 disables subsampling.
      rule: ``"word2vec"``, ``"paper"`` or ``"off"`` (see the module docstring).

    Returns:
      [V] float64 in (0, 1].
    """
    if rule not in SUBSAMPLE_RULES:
        raise ValueError(f"subsample_rule must be one of {SUBSAMPLE_RULES}, got {rule!r}")
    if sample < 0:
        raise ValueError(f"--sample must be >= 0, got {sample}")
    counts = np.asarray(counts, dtype=np.float64)
    if rule == "off" or sample == 0 or counts.size == 0:
        return np.ones(counts.shape, dtype=np.float64)
    total = counts.sum()
    ratio = sample * total / counts  # t / f
    if rule == "word2vec":
        keep = np.sqrt(ratio) + ratio
    else:  # "paper": discard = max(0, 1 - sqrt(t/f))
        keep = 1.0 - np.maximum(0.0, 1.0 - np.sqrt(ratio))
    return np.minimum(1.0, keep)


def noise_distribution(counts: np.ndarray, alpha: float) -> np.ndarray:
    """``count^alpha`` normalised to sum 1: [V] float64."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0:
        raise ValueError("noise distribution of an empty vocabulary")
    if np.any(counts < 0):
        raise ValueError("word counts must be >= 0")
    weights = np.power(counts, float(alpha))
    return weights / weights.sum()


def check_negatives(vocab_size: int, k: int) -> None:
    """Raises a one-line ValueError when a vocabulary of ``vocab_size`` cannot supply K negatives.

    Rule: ``K >= 1``, ``V >= 2`` and ``K <= V - 1`` (at least K words besides the positive).
    """
    if k < 1:
        raise ValueError(f"--negative must be >= 1 for negative sampling, got K={k}")
    need = max(2, k + 1)
    if vocab_size < need:
        raise ValueError(
            f"--negative K={k} needs a vocabulary of at least {need} words; got V={vocab_size}; "
            "lower --negative or --min-count, or use a larger --corpus"
        )


class NoiseTable(NamedTuple):
    """Device-side noise sampler (a pytree of arrays).

    Exactly one representation is non-empty; :func:`sample_negatives` picks the method from the
    (static) shapes, so no Python flag has to travel with the pytree.

    Attributes:
      prob: [V] float32 alias acceptance probabilities (``"alias"``), else [0].
      alias: [V] int32 alias targets (``"alias"``), else [0].
      table: [N] int32 unigram table (``"table"``), else [0].
    """

    prob: jax.Array | np.ndarray
    alias: jax.Array | np.ndarray
    table: jax.Array | np.ndarray

    @property
    def kind(self) -> str:
        return "table" if self.table.shape[0] > 0 else "alias"


def vose_alias(p: np.ndarray, *, native: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method: prob [V] float64, alias [V] int64 (O(V), float64 bookkeeping).

    The loop runs in C++ (:func:`w2v_jax.fused.vose_alias_loaded`, the same operations, so the
    same table) when ``native`` and the kernel library is loaded, as it is in a fused run.
    """
    v = p.shape[0]
    q = p * v
    if native:
        from w2v_jax import fused

        out = fused.vose_alias_loaded(q)
        if out is not None:
            return out
    prob = np.ones(v, dtype=np.float64)
    alias = np.arange(v, dtype=np.int64)
    small = np.flatnonzero(q < 1.0).tolist()
    large = np.flatnonzero(q >= 1.0).tolist()
    q = q.tolist()
    while small and large:
        s = small.pop()
        g = large.pop()
        prob[s] = q[s]
        alias[s] = g
        q[g] = (q[g] + q[s]) - 1.0
        (small if q[g] < 1.0 else large).append(g)
    # Leftovers are 1 up to rounding: they keep prob 1 and alias to themselves.
    return prob, alias


def _unigram_table(p: np.ndarray, size: int) -> np.ndarray:
    """word2vec.c InitUnigramTable, vectorised: slot i holds the word whose CDF bin covers it."""
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    slots = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.minimum(np.searchsorted(cdf, slots, side="right"), p.shape[0] - 1).astype(np.int32)


def build_noise_table(
    counts: np.ndarray,
    alpha: float,
    kind: str = DEFAULT_NOISE_KIND,
    *,
    table_size: int = DEFAULT_TABLE_SIZE,
) -> NoiseTable:
    """Builds the noise sampler on host (numpy arrays; ``jax.device_put`` it once).

    Args:
      counts: [V] word counts.
      alpha: noise exponent (``ns_exponent``).
      kind: ``"alias"`` (default) or ``"table"``.
      table_size: N, slots of the ``"table"`` kind.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise table kind must be one of {NOISE_KINDS}, got {kind!r}")
    p = noise_distribution(counts, alpha)
    empty_f = np.zeros((0,), dtype=np.float32)
    empty_i = np.zeros((0,), dtype=np.int32)
    if kind == "table":
        if table_size < 1:
            raise ValueError(f"table_size must be >= 1, got {table_size}")
        return NoiseTable(prob=empty_f, alias=empty_i, table=_unigram_table(p, table_size))
    prob, alias = vose_alias(p)
    return NoiseTable(prob=prob.astype(np.float32), alias=alias.astype(np.int32), table=empty_i)


def sample_negatives(table: NoiseTable, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Draws ids from the noise distribution; jittable, ``shape`` static (e.g. ``(B, K)``).

    Returns:
      int32 array of ``shape``.
    """
    shape = tuple(shape)
    if table.table.shape[0] > 0:
        slots = jax.random.randint(key, shape, 0, table.table.shape[0], dtype=jnp.int32)
        return jnp.take(jnp.asarray(table.table), slots, axis=0)
    v = table.prob.shape[0]
    if v == 0:
        raise ValueError("empty NoiseTable")
    k_idx, k_u = jax.random.split(key)
    idx = jax.random.randint(k_idx, shape, 0, v, dtype=jnp.int32)
    u = jax.random.uniform(k_u, shape, dtype=jnp.float32)
    prob = jnp.take(jnp.asarray(table.prob), idx, axis=0)
    alias = jnp.take(jnp.asarray(table.alias), idx, axis=0)
    return jnp.where(u < prob, idx, alias).astype(jnp.int32)
