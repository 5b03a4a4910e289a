"""Intrinsic evaluation: word analogies (3CosAdd, 3CosMul) and word-pair similarity (Spearman rho).

Both follow gensim's ``KeyedVectors.evaluate_word_analogies`` and ``evaluate_word_pairs``
(gensim 4.x, ``dummy4unknown=False``) question for question, so numbers are comparable with
papers that used gensim or word2vec.c's compute-accuracy:

* Only the ``restrict_vocab`` most frequent words count (rows ``[0, N)``; :class:`Vectors` are
  stored most frequent first). A question or pair with any word outside them is skipped and
  counted as out of vocabulary (OOV).
* ``case_insensitive=True`` upper-cases the data set and the vocabulary; a word with several
  case variants uses the most frequent one (the first row), and every variant of a question word
  is excluded from the answers.
* The answer to ``a : b :: c : ?`` is the best-scoring word among the first N, never a, b or c.

Analogies run on the device under ``jax.jit``: one matmul (``Precision.HIGHEST``, so no TF32 on
GPU) gives the cosines of the W distinct question words with all N candidates, then questions go
in fixed-size batches (the last one padded) that combine three rows of that table per question,
mask the question words and take the argmax. The whole Google set over 30,000 x 100 vectors
costs about 2 CPU-seconds per method, 3CosAdd and 3CosMul alike (measured on 2 shared cores,
file parsing and compilation included). Word pairs are a few hundred dot products and stay on the
host, in float64.

Data sets are files, or gensim's bundled copies by name: ``questions-words.txt`` (Mikolov et al.
2013, 19,544 questions), ``wordsim353.tsv`` (Finkelstein et al. 2002), ``simlex999.txt`` (Hill
et al. 2015).

References:
  Mikolov, Yih, Zweig (2013), Linguistic regularities in continuous space word representations.
  Levy, Goldberg (2014), Linguistic regularities in sparse and explicit word representations
  (3CosMul).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax.fileio import atomic_write, describe_os_error
from w2v_jax.vectors import Vectors, load_vectors

METHODS = ("3cosadd", "3cosmul")
BUNDLED = ("questions-words.txt", "wordsim353.tsv", "simlex999.txt")
_ALIASES = {
    "questions-words": "questions-words.txt",
    "google": "questions-words.txt",
    "wordsim353": "wordsim353.tsv",
    "ws353": "wordsim353.tsv",
    "simlex999": "simlex999.txt",
    "simlex": "simlex999.txt",
}
COSMUL_EPS = 1e-3  # Levy and Goldberg (2014), section 6: epsilon = 0.001
# Sizes of the blocks the device works on. The cosine table holds [W, Nc] float32 (W distinct
# question words, Nc candidate columns per chunk); each call scores a [Q, Nc] block, and on CPU a
# block that stays in cache wins (measured on 2 busy cores at N = 30k: Q = 128 beat Q = 32 and
# Q = 256 by 1.5-2x). Accelerators prefer large blocks.
_TABLE_ELEMENTS = 1 << 25  # 128 MiB of float32 per cosine-table chunk
_SCORE_ELEMENTS_CPU = 1 << 22
_SCORE_ELEMENTS_ACCEL = 1 << 26


# --------------------------------------------------------------------------- data sets
def resolve_dataset(path_or_name: str | os.PathLike) -> str:
    """A path to an existing file, or gensim's bundled copy of a named data set.

    An existing file wins over a bundled name. Names: ``questions-words.txt`` (``google``),
    ``wordsim353.tsv`` (``ws353``), ``simlex999.txt`` (``simlex``).
    """
    p = os.fspath(path_or_name)
    if os.path.isfile(p):
        return p
    name = _ALIASES.get(p, p)
    if name in BUNDLED:
        from w2v_jax.corpus import gensim_data_path

        try:
            return str(gensim_data_path(name))
        except ModuleNotFoundError as e:
            raise ImportError(
                f"the bundled data set {name!r} comes with gensim, which is not installed: "
                "pip install 'w2v-jax[data]' (or pass a path to your own copy)"
            ) from e
    raise FileNotFoundError(
        f"no file {p!r}, and it is not a bundled data set name (known: {', '.join(BUNDLED)})"
    )


def _read_lines(path: str, encoding: str) -> Iterator[tuple[int, str]]:
    """``(line number from 1, text)`` per line; an undecodable line is a ValueError that names
    ``path:line`` (a text-mode ``open`` only says "'utf-8' codec can't decode byte ...")."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                yield line_no, raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{line_no}: cannot decode as {encoding} ({e.reason} at byte {e.start})"
                ) from None


# ---------------------------------------------------------------------- restriction
def _restricted_vocab(
    vectors: Vectors, restrict_vocab: int | None, case_insensitive: bool
) -> tuple[dict[str, int], np.ndarray]:
    """gensim's ``ok_vocab``: key -> first row among the first N; and ``canon [N]`` per row."""
    n = len(vectors) if restrict_vocab is None else max(0, min(int(restrict_vocab), len(vectors)))
    ok: dict[str, int] = {}
    canon = np.empty(n, dtype=np.int32)
    for i, w in enumerate(vectors.words[:n]):
        canon[i] = ok.setdefault(w.upper() if case_insensitive else w, i)
    return ok, canon


# -------------------------------------------------------------------------- analogies
class Section(NamedTuple):
    """One section of an analogy file: its name, correct answers, questions answered."""

    name: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else math.nan

    @property
    def semantic(self) -> bool:
        """Google set convention: ``gram*`` sections are syntactic, the rest semantic."""
        return not self.name.startswith("gram")


@dataclasses.dataclass(frozen=True)
class AnalogyResult:
    """Accuracy per section and overall. Accuracies over zero questions are NaN.

    ``total`` counts the questions answered (all words in the restricted vocabulary);
    ``skipped_oov`` the questions skipped for OOV words; ``questions`` all valid lines.
    """

    sections: list[Section]
    semantic_accuracy: float
    syntactic_accuracy: float
    total_accuracy: float
    correct: int
    total: int
    skipped_oov: int
    questions: int
    semantic_correct: int = 0
    semantic_total: int = 0
    syntactic_correct: int = 0
    syntactic_total: int = 0
    method: str = "3cosadd"
    restrict_vocab: int | None = None
    dataset: str = ""
    seconds: float = 0.0

    @property
    def oov_ratio(self) -> float:
        """Fraction (0..1) of the questions skipped as out of vocabulary."""
        return self.skipped_oov / self.questions if self.questions else math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        d = dataclasses.asdict(self)
        d["sections"] = [
            {"name": s.name, "correct": s.correct, "total": s.total, "accuracy": s.accuracy}
            for s in self.sections
        ]
        d["oov_ratio"] = self.oov_ratio
        return _json_clean(d)


def parse_analogies(
    path_or_name: str | os.PathLike, *, encoding: str = "utf-8"
) -> tuple[list[str], list[tuple[int, str, str, str, str]]]:
    """Reads ``: section`` headers and ``a b c d`` lines, as gensim does.

    Args:
      path_or_name: a file, or a bundled name (see :func:`resolve_dataset`).
      encoding: of the file.

    Returns:
      section names, and ``(section_index, a, b, c, d)`` per valid line. Lines without exactly
      four whitespace-separated words are skipped (gensim skips them too).
    """
    path = resolve_dataset(path_or_name)
    names: list[str] = []
    questions: list[tuple[int, str, str, str, str]] = []
    for line_no, line in _read_lines(path, encoding):
        if line.startswith(": "):
            names.append(line.lstrip(": ").strip())
            continue
        parts = line.split()
        if not names:
            if not parts:
                continue
            raise ValueError(f"{path}:{line_no}: a question comes before any ': section' header")
        if len(parts) != 4:
            continue
        questions.append((len(names) - 1, *parts))
    return names, questions


@jax.jit
def _cosine_table(unit_WxD, unit_DxNc):
    """``[W, Nc]`` cosines of the distinct question words with a chunk of candidate words."""
    return jnp.dot(unit_WxD, unit_DxNc, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("method",))
def _answer_chunk(cos_WxNc, canon_Nc, abcw_Qx3, abc_Qx3, *, method: str):
    r"""Best candidate in one column chunk for each question ``a : b :: c : ?``.

    Every score is a combination of three table rows, so the ``[Q, D] x [D, N]`` matmul per batch
    (three of them for 3CosMul) is replaced by one ``[W, D] x [D, N]`` table for the W distinct
    question words (905 in the Google set, against 19,544 questions):

    .. math:: \mathrm{3CosAdd}(d) = \cos(d, b) - \cos(d, a) + \cos(d, c)
              = \hat v_d \cdot (\hat v_b - \hat v_a + \hat v_c),

    which ranks candidates as gensim's ``most_similar(positive=[b, c], negative=[a])`` does (its
    target is the same vector up to a positive factor), and

    .. math:: \mathrm{3CosMul}(d) = \frac{s(d, b)\, s(d, c)}{s(d, a) + \epsilon},
              \quad s = \tfrac{1}{2}(\cos + 1),\ \epsilon = 10^{-3}.

    Args:
      cos_WxNc: ``[W, Nc]`` float32 from :func:`_cosine_table`.
      canon_Nc: ``[Nc]`` int32 canonical row (most frequent case variant) of each column; -1 on
        padding columns.
      abcw_Qx3: ``[Q, 3]`` int32 rows of a, b, c in the table.
      abc_Qx3: ``[Q, 3]`` int32 canonical vocabulary rows of a, b, c.
      method: ``"3cosadd"`` or ``"3cosmul"``.

    Returns:
      ``best_score_Q`` float32 (-inf where every column is excluded) and ``best_col_Q`` int32.
    """
    cos_a_QxNc = cos_WxNc[abcw_Qx3[:, 0]]
    cos_b_QxNc = cos_WxNc[abcw_Qx3[:, 1]]
    cos_c_QxNc = cos_WxNc[abcw_Qx3[:, 2]]
    if method == "3cosadd":
        scores_QxNc = cos_b_QxNc - cos_a_QxNc + cos_c_QxNc
    else:
        scores_QxNc = (
            ((cos_b_QxNc + 1.0) * 0.5)
            * ((cos_c_QxNc + 1.0) * 0.5)
            / ((cos_a_QxNc + 1.0) * 0.5 + COSMUL_EPS)
        )
    # Exclude padding and the question words with all their case variants.
    canon_1xNc = canon_Nc[None, :]
    excluded_QxNc = (
        (canon_1xNc < 0)
        | (canon_1xNc == abc_Qx3[:, 0:1])
        | (canon_1xNc == abc_Qx3[:, 1:2])
        | (canon_1xNc == abc_Qx3[:, 2:3])
    )
    scores_QxNc = jnp.where(excluded_QxNc, -jnp.inf, scores_QxNc)
    return jnp.max(scores_QxNc, axis=1), jnp.argmax(scores_QxNc, axis=1).astype(jnp.int32)


def _auto_batch_size(n_cols: int) -> int:
    """A power of two Q such that the ``[Q, Nc]`` score block is near the cache-friendly size."""
    target = _SCORE_ELEMENTS_CPU if jax.default_backend() == "cpu" else _SCORE_ELEMENTS_ACCEL
    q = 2 ** round(math.log2(max(target / max(n_cols, 1), 1.0)))
    return int(np.clip(q, 8, 4096))


def _solve(
    unit_NxD: np.ndarray,
    canon_N: np.ndarray,
    abc_Mx3: np.ndarray,
    method: str,
    batch_size: int | None,
) -> np.ndarray:
    """``[M]`` best vocabulary rows (int64; -1 where no candidate is left) for M questions."""
    n = canon_N.shape[0]
    m = abc_Mx3.shape[0]
    words_W, abcw_Mx3 = np.unique(abc_Mx3, return_inverse=True)
    abcw_Mx3 = abcw_Mx3.reshape(m, 3).astype(np.int32)
    w = words_W.shape[0]
    nc = min(n, max(1024, _TABLE_ELEMENTS // w))  # columns per chunk
    q = _auto_batch_size(nc) if batch_size is None else int(batch_size)
    q = max(1, min(q, m))
    padded_m = -(-m // q) * q
    abcw_Px3 = np.zeros((padded_m, 3), dtype=np.int32)
    abc_Px3 = np.zeros((padded_m, 3), dtype=np.int32)
    abcw_Px3[:m], abc_Px3[:m] = abcw_Mx3, abc_Mx3
    batches = [
        (jax.device_put(abcw_Px3[i : i + q]), jax.device_put(abc_Px3[i : i + q]))
        for i in range(0, padded_m, q)
    ]
    unit_w = jax.device_put(unit_NxD[words_W])
    best_score = np.full(padded_m, -np.inf, dtype=np.float32)
    best_row = np.full(padded_m, -1, dtype=np.int64)
    for start in range(0, n, nc):
        stop = min(start + nc, n)
        cols_DxNc = np.zeros((unit_NxD.shape[1], nc), dtype=np.float32)  # fixed shape: pad
        cols_DxNc[:, : stop - start] = unit_NxD[start:stop].T
        canon_Nc = np.full(nc, -1, dtype=np.int32)
        canon_Nc[: stop - start] = canon_N[start:stop]
        table = _cosine_table(unit_w, jax.device_put(cols_DxNc))
        canon_dev = jax.device_put(canon_Nc)
        outs = [_answer_chunk(table, canon_dev, bw, bq, method=method) for bw, bq in batches]
        score = np.concatenate([np.asarray(s) for s, _ in outs])
        col = np.concatenate([np.asarray(c) for _, c in outs])
        better = score > best_score  # strict: an earlier (more frequent) word keeps a tie
        best_score[better] = score[better]
        best_row[better] = start + col[better]
    return best_row[:m]


def evaluate_analogies(
    vectors: Vectors,
    path_or_name: str | os.PathLike = "questions-words.txt",
    *,
    restrict_vocab: int | None = 30000,
    method: str = "3cosadd",
    case_insensitive: bool = True,
    batch_size: int | None = None,
    encoding: str = "utf-8",
) -> AnalogyResult:
    """Accuracy on an analogy file (``: section`` headers, ``a b c d`` lines).

    Matches gensim's ``evaluate_word_analogies(restrict_vocab=N, case_insensitive=...,
    dummy4unknown=False)`` for 3CosAdd. One documented difference: gensim looks only at its top
    5 candidates and counts a question wrong when all 5 are case variants of a, b or c; here
    every case variant is excluded first, so the next candidate answers.

    Args:
      vectors: most frequent word first.
      path_or_name: a file, or ``"questions-words.txt"`` (gensim's copy).
      restrict_vocab: N, candidates and question words come from the first N rows (30,000 as in
        word2vec.c's compute-accuracy); None uses all.
      method: ``"3cosadd"`` (Mikolov et al. 2013) or ``"3cosmul"`` (Levy and Goldberg 2014).
      case_insensitive: compare upper-cased words.
      batch_size: Q questions per device call; None picks a power of two that keeps the
        ``[Q, N]`` score block cache-sized on CPU (128 at N = 30k).
      encoding: of the file.

    Returns:
      :class:`AnalogyResult`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t0 = time.perf_counter()
    names, questions = parse_analogies(path_or_name, encoding=encoding)
    ok, canon = _restricted_vocab(vectors, restrict_vocab, case_insensitive)
    norm = str.upper if case_insensitive else (lambda w: w)

    sec_ids, abce = [], []
    for sec, *words in questions:
        rows = [ok.get(norm(w)) for w in words]
        if None not in rows:
            sec_ids.append(sec)
            abce.append(rows)
    skipped = len(questions) - len(abce)
    correct_flags = np.zeros(len(abce), dtype=bool)
    if abce:
        abce_Mx4 = np.asarray(abce, dtype=np.int32)
        unit = vectors.normalized()[: canon.shape[0]]
        best = _solve(unit, canon, abce_Mx4[:, :3], method, batch_size)
        correct_flags = (best >= 0) & (canon[np.maximum(best, 0)] == abce_Mx4[:, 3])

    sec_arr = np.asarray(sec_ids, dtype=np.int64)
    tot = np.bincount(sec_arr, minlength=len(names)) if abce else np.zeros(len(names), int)
    cor = (
        np.bincount(sec_arr, weights=correct_flags, minlength=len(names)).astype(int)
        if abce
        else np.zeros(len(names), int)
    )
    sections = [Section(nm, int(c), int(t)) for nm, c, t in zip(names, cor, tot, strict=True)]
    sem = [s for s in sections if s.semantic]
    syn = [s for s in sections if not s.semantic]
    sem_c, sem_t = sum(s.correct for s in sem), sum(s.total for s in sem)
    syn_c, syn_t = sum(s.correct for s in syn), sum(s.total for s in syn)
    all_c, all_t = sem_c + syn_c, sem_t + syn_t
    return AnalogyResult(
        sections=sections,
        semantic_accuracy=_ratio(sem_c, sem_t),
        syntactic_accuracy=_ratio(syn_c, syn_t),
        total_accuracy=_ratio(all_c, all_t),
        correct=all_c,
        total=all_t,
        skipped_oov=skipped,
        questions=len(questions),
        semantic_correct=sem_c,
        semantic_total=sem_t,
        syntactic_correct=syn_c,
        syntactic_total=syn_t,
        method=method,
        restrict_vocab=restrict_vocab,
        dataset=os.fspath(path_or_name),
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------- word pairs
@dataclasses.dataclass(frozen=True)
class PairsResult:
    """Correlation of cosine similarity with human judgements.

    ``oov_ratio`` is a fraction (0..1) of the valid lines; gensim reports the same number in
    percent. With no usable pair the correlations are NaN (gensim raises instead).
    """

    spearman: float
    pearson: float
    pairs_used: int
    oov_pairs: int
    oov_ratio: float
    dataset: str = ""
    restrict_vocab: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return _json_clean(dataclasses.asdict(self))


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy's ``rankdata(method='average')``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    if den == 0.0:
        return math.nan
    return float(np.clip(np.dot(xc, yc) / den, -1.0, 1.0))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rho: Pearson correlation of the average ranks."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return _pearson(_rankdata(x), _rankdata(y))


def evaluate_word_pairs(
    vectors: Vectors,
    path_or_name: str | os.PathLike = "wordsim353.tsv",
    *,
    restrict_vocab: int | None = 300000,
    case_insensitive: bool = True,
    delimiter: str | None = "\t",
    encoding: str = "utf-8",
) -> PairsResult:
    """Spearman and Pearson correlation of cosine similarity with a ``word1 word2 score`` file.

    Parsing as gensim's ``evaluate_word_pairs``: lines starting with ``#`` are comments; each
    other line is split on ``delimiter`` (tab; None splits on any whitespace) and must give
    exactly two words and a number, else it is skipped; pairs with a word outside the first
    ``restrict_vocab`` rows are skipped and counted as OOV. Unlike gensim, a NaN or inf score
    and an undecodable line are errors naming ``path:line``.

    Args:
      vectors: most frequent word first.
      path_or_name: a file, or ``"wordsim353.tsv"`` / ``"simlex999.txt"`` (gensim's copies).
      restrict_vocab: N (gensim's default 300,000); None uses all.
      case_insensitive: compare upper-cased words.
      delimiter: field separator.
      encoding: of the file.

    Returns:
      :class:`PairsResult`.
    """
    path = resolve_dataset(path_or_name)
    ok, _ = _restricted_vocab(vectors, restrict_vocab, case_insensitive)
    gold, rows_a, rows_b = [], [], []
    oov = 0
    for line_no, line in _read_lines(path, encoding):
        if not line or line.startswith("#"):
            continue
        parts = line.split(delimiter)
        if case_insensitive:
            parts = [p.upper() for p in parts]
        if len(parts) != 3:
            continue
        a, b, sim = parts
        try:
            sim = float(sim)
        except ValueError:
            continue
        if not math.isfinite(sim):
            # gensim would keep it and report NaN correlations without saying why.
            raise ValueError(f"{path}:{line_no}: the score {sim} is not a finite number")
        if a not in ok or b not in ok:
            oov += 1
            continue
        gold.append(sim)
        rows_a.append(ok[a])
        rows_b.append(ok[b])
    m = vectors.matrix.astype(np.float64)
    ua, ub = m[rows_a], m[rows_b]
    na, nb = np.linalg.norm(ua, axis=1), np.linalg.norm(ub, axis=1)
    den = np.where(na * nb > 0, na * nb, 1.0)
    model = np.einsum("pd,pd->p", ua, ub) / den
    gold_arr = np.asarray(gold, dtype=np.float64)
    used = len(gold)
    return PairsResult(
        spearman=spearman(gold_arr, model) if used else math.nan,
        pearson=_pearson(gold_arr, model) if used else math.nan,
        pairs_used=used,
        oov_pairs=oov,
        oov_ratio=oov / (used + oov) if used + oov else math.nan,
        dataset=os.fspath(path_or_name),
        restrict_vocab=restrict_vocab,
    )


# ---------------------------------------------------------------------- all at once
def _stem(name: str) -> str:
    base = os.path.basename(os.fspath(name))
    return base.split(".")[0].replace("-", "_") or "pairs"


def evaluate_all(
    vectors: Vectors,
    *,
    analogies: str | None = "questions-words.txt",
    pairs: Sequence[str] = ("wordsim353.tsv", "simlex999.txt"),
    restrict_vocab: int | None = 30000,
    pairs_restrict_vocab: int | None = 300000,
    method: str = "3cosadd",
    case_insensitive: bool = True,
) -> dict[str, float]:
    """Flat metrics for a results row: ``analogy_{total,semantic,syntactic,oov}``,
    ``<pairs stem>_spearman`` and ``<pairs stem>_oov`` (e.g. ``wordsim353_spearman``).
    Ratios are fractions; NaN where nothing could be evaluated."""
    out: dict[str, float] = {}
    if analogies:
        r = evaluate_analogies(
            vectors,
            analogies,
            restrict_vocab=restrict_vocab,
            method=method,
            case_insensitive=case_insensitive,
        )
        out.update(
            analogy_total=r.total_accuracy,
            analogy_semantic=r.semantic_accuracy,
            analogy_syntactic=r.syntactic_accuracy,
            analogy_oov=r.oov_ratio,
        )
    for p in pairs:
        r2 = evaluate_word_pairs(
            vectors, p, restrict_vocab=pairs_restrict_vocab, case_insensitive=case_insensitive
        )
        key = _stem(p)
        out[f"{key}_spearman"] = r2.spearman
        out[f"{key}_oov"] = r2.oov_ratio
    return out


# ----------------------------------------------------------------------------- report
def _ratio(c: int, t: int) -> float:
    return c / t if t else math.nan


def _pct(x: float) -> str:
    return "   n/a" if math.isnan(x) else f"{100 * x:5.1f}%"


def _json_clean(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    return x


def format_analogy_report(r: AnalogyResult) -> str:
    """Per-section accuracy, semantic / syntactic / total, OOV skipped; one line each."""
    scope = "all words" if r.restrict_vocab is None else f"top {r.restrict_vocab:,} words"
    w = max([len(s.name) for s in r.sections] + [9])
    lines = [f"analogies: {r.dataset} ({r.method}, {scope}, {r.seconds:.1f}s)"]
    for s in r.sections:
        lines.append(f"  {s.name:<{w}}  {_pct(s.accuracy)}  ({s.correct}/{s.total})")
    lines.append(
        f"  {'semantic':<{w}}  {_pct(r.semantic_accuracy)}  "
        f"({r.semantic_correct}/{r.semantic_total})"
    )
    lines.append(
        f"  {'syntactic':<{w}}  {_pct(r.syntactic_accuracy)}  "
        f"({r.syntactic_correct}/{r.syntactic_total})"
    )
    lines.append(f"  {'total':<{w}}  {_pct(r.total_accuracy)}  ({r.correct}/{r.total})")
    lines.append(
        f"  skipped (OOV): {r.skipped_oov} of {r.questions} questions ({_pct(r.oov_ratio).strip()})"
    )
    return "\n".join(lines)


def format_pairs_report(r: PairsResult) -> str:
    """Spearman, Pearson and OOV counts on one line."""
    rho = "n/a" if math.isnan(r.spearman) else f"{r.spearman:.4f}"
    pr = "n/a" if math.isnan(r.pearson) else f"{r.pearson:.4f}"
    return (
        f"pairs: {r.dataset}: Spearman {rho}  Pearson {pr}  pairs used {r.pairs_used}, "
        f"OOV {r.oov_pairs} ({_pct(r.oov_ratio).strip()})"
    )


# -------------------------------------------------------------------------------- CLI
def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="w2v-jax eval",
        description="Analogy accuracy and word-pair Spearman of word vectors. Without "
        "--analogies or --pairs, runs questions-words.txt, wordsim353.tsv and simlex999.txt.",
    )
    p.add_argument("--vectors", required=True, help="word2vec binary/text file, or a w2v_jax .npz")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument(
        "--binary",
        dest="binary",
        action="store_const",
        const=True,
        default=None,
        help="the file is word2vec binary (default: detect)",
    )
    fmt.add_argument(
        "--text",
        dest="binary",
        action="store_const",
        const=False,
        help="the file is word2vec text (default: detect)",
    )
    p.add_argument(
        "--analogies",
        default=None,
        metavar="FILE_OR_NAME",
        help="analogy file, or questions-words.txt for gensim's copy of the Google set",
    )
    p.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        metavar="FILE_OR_NAME",
        help="word-pair files, or wordsim353.tsv / simlex999.txt for gensim's copies",
    )
    p.add_argument(
        "--restrict-vocab",
        type=int,
        default=30000,
        metavar="N",
        help="analogies use only the N most frequent words, 0 for all (default: 30000, as "
        "word2vec's compute-accuracy)",
    )
    p.add_argument(
        "--pairs-restrict-vocab",
        type=int,
        default=300000,
        metavar="N",
        help="word pairs use only the N most frequent words, 0 for all (default: 300000, "
        "as gensim)",
    )
    p.add_argument(
        "--method",
        choices=(*METHODS, "both"),
        default="3cosadd",
        help="analogy rule (default: 3cosadd)",
    )
    p.add_argument("--case-sensitive", action="store_true", help="do not upper-case words")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="Q",
        help="analogy questions per device call (default: sized to the cache)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write all results as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
    return p


def eval_main(argv: list[str] | None = None) -> int:
    """``w2v-jax eval``: prints a report; returns 0, or 2 on bad input (one line on stderr)."""
    a = _eval_parser().parse_args(sys.argv[1:] if argv is None else argv)
    analogies, pairs = a.analogies, a.pairs
    if analogies is None and pairs is None:
        analogies, pairs = "questions-words.txt", ["wordsim353.tsv", "simlex999.txt"]
    ci = not a.case_sensitive
    methods = METHODS if a.method == "both" else (a.method,)
    try:
        vectors = load_vectors(a.vectors, binary=a.binary)
        print(f"vectors: {a.vectors} (V={len(vectors):,}, D={vectors.dim})")
        report: dict[str, Any] = {"vectors": a.vectors, "analogies": [], "pairs": []}
        if analogies:
            for meth in methods:
                r = evaluate_analogies(
                    vectors,
                    analogies,
                    restrict_vocab=a.restrict_vocab or None,
                    method=meth,
                    case_insensitive=ci,
                    batch_size=a.batch_size,
                )
                print(format_analogy_report(r))
                report["analogies"].append(r.as_dict())
        for pth in pairs or ():
            r2 = evaluate_word_pairs(
                vectors, pth, restrict_vocab=a.pairs_restrict_vocab or None, case_insensitive=ci
            )
            print(format_pairs_report(r2))
            report["pairs"].append(r2.as_dict())
        if a.json:
            text = json.dumps(report, indent=2) + "\n"
            atomic_write(a.json, lambda f: f.write(text.encode()))
    except BrokenPipeError:
        raise  # a closed stdout (`| head`): the caller ends quietly
    except (ValueError, KeyError, OSError, ImportError, MemoryError) as e:
        if a.debug:
            raise
        if isinstance(e, OSError):
            msg = describe_os_error(e)
        elif isinstance(e, MemoryError):
            msg = f"out of memory {e}".rstrip()
        else:
            msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        print(f"w2v-jax eval: error: {msg}", file=sys.stderr)
        return 2
    return 0
