"""Vocabulary: one streaming counting pass with bounded memory, min_count, max_final_vocab.

Follows word2vec.c (LearnVocabFromTrainFile, ReduceVocab, SortVocab) and gensim
(``Word2Vec.scan_vocab`` / ``prepare_vocab``):

* Counting is one pass over the sentences. When ``max_vocab_size`` is set and the number of
  distinct words exceeds it (checked after each sentence), rare words are pruned: every word with
  ``count < min_reduce`` is dropped and ``min_reduce`` grows by one, repeated until the table fits
  (word2vec.c ReduceVocab starts by dropping counts <= 1; gensim's ``prune_vocab``). Counts of
  words pruned and seen again restart from zero, so pruning is approximate for rare words, exactly
  as in both references; frequent words are never pruned.
* ``max_final_vocab`` (gensim): the effective ``min_count`` is raised to
  ``count(word ranked max_final_vocab + 1) + 1`` so that at most ``max_final_vocab`` words remain
  (fewer when counts tie at the cut).
* Words are sorted by descending count; ties keep the order of first appearance in the counting
  table (first appearance in the text for any word that was never pruned).
* Unlike word2vec.c there is no ``</s>`` entry: sentence ends are kept as boundaries in the
  encoded corpus, not as a token.

``total_words`` counts every token read, including those later dropped by pruning or
``min_count``. The file format of :func:`save_vocab` is word2vec.c's ``-save-vocab``: one
``word count`` per line; :func:`load_vocab` sets ``total_words`` to the sum of the counts.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable, Iterable

import numpy as np

from w2v_jax.config import DataConfig


@dataclasses.dataclass(frozen=True, eq=False)
class Vocab:
    """A sorted vocabulary.

    Attributes:
      words: V words, id = position.
      counts: [V] int64 counts, descending for a built vocabulary.
      total_words: raw tokens counted when the vocabulary was built.
    """

    words: tuple[str, ...]
    counts: np.ndarray
    total_words: int

    def __post_init__(self) -> None:
        words = tuple(self.words)
        counts = np.asarray(self.counts, dtype=np.int64).reshape(-1)
        if counts.shape[0] != len(words):
            raise ValueError(f"Vocab: {len(words)} words but {counts.shape[0]} counts")
        counts.setflags(write=False)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "total_words", int(self.total_words))

    def __len__(self) -> int:
        return len(self.words)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """word -> id, built once."""
        index = {w: i for i, w in enumerate(self.words)}
        if len(index) != len(self.words):
            raise ValueError("Vocab: duplicate words")
        return index

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of words and counts (keys the encoded-corpus cache)."""
        h = hashlib.sha256()
        h.update("\n".join(self.words).encode("utf-8"))
        h.update(b"\0")
        h.update(self.counts.astype("<i8").tobytes())
        return h.hexdigest()[:32]


def _prune(counts: collections.Counter, min_reduce: int) -> collections.Counter:
    return collections.Counter({w: c for w, c in counts.items() if c >= min_reduce})


def check_vocab_config(cfg: DataConfig) -> None:
    """Raises ValueError for a ``min_count``, ``max_vocab_size`` or ``max_final_vocab`` below 1."""
    if cfg.min_count < 1:
        raise ValueError(f"--min-count must be >= 1, got {cfg.min_count}")
    cap = cfg.max_vocab_size
    if cap is not None and cap < 1:
        raise ValueError(f"max_vocab_size must be >= 1 or None, got {cap}")
    if cfg.max_final_vocab is not None and cfg.max_final_vocab < 1:
        raise ValueError(f"max_final_vocab must be >= 1 or None, got {cfg.max_final_vocab}")


def select_words(
    counts: np.ndarray, total: int, cfg: DataConfig, word_at: Callable[[int], str]
) -> np.ndarray:
    """The vocabulary's rows of a counting table, in vocabulary order.

    Applies ``min_count`` and ``max_final_vocab`` and sorts by descending count; a stable sort,
    so ties keep table order (first appearance). Shared by :func:`build_vocab` and the corpus'
    one-pass counter, so both make the same decisions from the same counts.

    Args:
      counts: [U] int64 counts, in table order (first appearance).
      total: tokens read (only for the error message).
      cfg: uses ``min_count``, ``max_final_vocab``.
      word_at: table row -> word (only for the error message).

    Returns:
      [V] int64 table rows: vocabulary id i is table row ``order[i]``.
    """
    if total == 0:
        raise ValueError("empty corpus: no tokens to count; check --corpus")
    effective = cfg.min_count
    if cfg.max_final_vocab is not None and cfg.max_final_vocab < counts.shape[0]:
        ranked = np.sort(counts)[::-1]
        effective = max(effective, int(ranked[cfg.max_final_vocab]) + 1)
    keep = np.flatnonzero(counts >= effective)
    if keep.size == 0:
        top = int(np.argmax(counts))
        extra = (
            ""
            if effective == cfg.min_count
            else f" (raised from {cfg.min_count} by max_final_vocab)"
        )
        raise ValueError(
            f"no word occurs at least --min-count={effective} times{extra}; the most frequent, "
            f"{word_at(top)!r}, occurs {int(counts[top])} times in {total} tokens; "
            "lower --min-count"
        )
    return keep[np.argsort(-counts[keep], kind="stable")]


def count_words(
    sentences: Iterable[list], max_vocab_size: int | None
) -> tuple[collections.Counter, int]:
    """Counts tokens in one pass, pruning rare words whenever more than ``max_vocab_size`` are held.

    Args:
      sentences: iterable of token lists (any hashable tokens: str, or bytes from the corpus'
        byte-level reader), read once.
      max_vocab_size: the cap (None: no pruning).

    Returns:
      (counts in first-appearance order of the table, tokens read).
    """
    counts: collections.Counter = collections.Counter()
    total = 0
    min_reduce = 1
    cap = max_vocab_size
    for sentence in sentences:
        total += len(sentence)
        counts.update(sentence)  # C loop; insertion order = first appearance
        while cap is not None and len(counts) > cap:
            min_reduce += 1
            counts = _prune(counts, min_reduce)
    return counts, total


def vocab_from_counter(counts: collections.Counter, total: int, cfg: DataConfig) -> Vocab:
    """A :class:`Vocab` from a counting table (str or UTF-8 bytes keys) and the tokens read."""
    words = list(counts.keys())
    cnt = np.fromiter(counts.values(), dtype=np.int64, count=len(words))

    def word_at(i: int) -> str:
        w = words[i]
        return w.decode("utf-8") if isinstance(w, bytes) else w

    order = select_words(cnt, total, cfg, word_at)
    return Vocab(words=tuple(word_at(i) for i in order), counts=cnt[order], total_words=total)


def build_vocab(sentences: Iterable[list[str]], cfg: DataConfig) -> Vocab:
    """Counts words in one streaming pass and keeps those at ``min_count`` (see module docs).

    For a corpus on disk, :func:`w2v_jax.corpus.prepare_corpus` gives the same vocabulary faster
    (and the encoded corpus with it); this is the reference it is tested against.

    Args:
      sentences: iterable of token lists (e.g. ``CorpusSource.sentences()``), read once.
      cfg: uses ``min_count``, ``max_vocab_size``, ``max_final_vocab``.

    Raises:
      ValueError: empty corpus, or no word reaches ``min_count``.
    """
    check_vocab_config(cfg)
    counts, total = count_words(sentences, cfg.max_vocab_size)
    return vocab_from_counter(counts, total, cfg)


def save_vocab(vocab: Vocab, path: str | os.PathLike) -> None:
    """Writes word2vec.c's ``-save-vocab`` format: ``word count`` per line (UTF-8)."""
    for w in vocab.words:
        if not w or any(ch.isspace() for ch in w):
            raise ValueError(f"cannot save word {w!r}: words must be non-empty, without whitespace")
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for w, c in zip(vocab.words, vocab.counts.tolist(), strict=True):
            f.write(f"{w} {c}\n")
    os.replace(tmp, path)


def load_vocab(path: str | os.PathLike) -> Vocab:
    """Reads ``word count`` lines in file order; ``total_words`` = sum of counts."""
    words: list[str] = []
    counts: list[int] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].isdigit():
                    raise ValueError(
                        f"{path}:{lineno}: expected 'word count', got {line.strip()!r}"
                    )
                words.append(parts[0])
                counts.append(int(parts[1]))
    except FileNotFoundError:
        raise ValueError(f"vocabulary file not found: {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"vocabulary file {path} is not UTF-8 text") from None
    if not words:
        raise ValueError(f"vocabulary file {path} is empty")
    vocab = Vocab(words=tuple(words), counts=np.asarray(counts, np.int64), total_words=sum(counts))
    vocab.index  # noqa: B018  (raises on duplicate words)
    return vocab
