"""Trained word vectors on the host: lookup, cosine neighbours, word2vec.c files, native ``.npz``.

:class:`Vectors` holds a tuple of words and a float32 ``[V, D]`` matrix whose rows follow the
words, most frequent first (the order training produces and the order ``restrict_vocab`` relies
on). It is plain numpy: nothing here touches a device.

File formats (all readable by ``gensim.models.KeyedVectors.load_word2vec_format``):

* word2vec binary, as word2vec.c writes it (TrainModel, ``binary = 1``): the header ``b"V D\\n"``,
  then per word ``word + b" " + D little-endian float32 + b"\\n"``. gensim writes the same without
  the trailing newline; :func:`load_word2vec_format` reads both.
* word2vec text: the header ``"V D\\n"``, then ``"word v1 ... vD\\n"``. word2vec.c prints ``"%lf "``
  (six decimals, trailing space), which loses most digits of small components; we print 9
  significant digits (``"%.9g"``), which round-trips float32 exactly, and no trailing space, as
  gensim does. Readers that parse with ``fscanf("%f")`` or ``float()`` accept both.
* native: :meth:`Vectors.save` writes an ``.npz`` with ``words`` (unicode array) and ``matrix``,
  loadable without pickle.

Writes go to a temporary file in the target folder, are fsynced and then renamed, so an
interrupted save never leaves a half-written file under the final name.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from w2v_jax.fileio import atomic_write

logger = logging.getLogger(__name__)
_WHITESPACE = re.compile(r"\s")

WHICH = ("in", "out", "sum")


@dataclasses.dataclass(frozen=True, eq=False)
class Vectors:
    """Words and their vectors, row ``i`` of ``matrix`` belonging to ``words[i]``.

    Attributes:
      words: ``V`` distinct words, most frequent first.
      matrix: ``[V, D]`` float32, read-only.
      index: word -> row.

    ``matrix`` is copied unless it is a read-only float32 C-ordered array that owns its memory,
    or ``share=True`` is given for a float32 C-ordered ndarray: then it is used as it is (marked
    read-only), which is how a trained table of gigabytes becomes vectors without a second copy.
    """

    words: tuple[str, ...]
    matrix: np.ndarray
    index: dict[str, int] = dataclasses.field(init=False, repr=False)
    share: dataclasses.InitVar[bool] = False

    def __post_init__(self, share: bool) -> None:
        words = tuple(self.words)
        m = self.matrix
        usable = isinstance(m, np.ndarray) and m.dtype == np.float32 and m.flags.c_contiguous
        frozen_own = usable and m.flags.owndata and not m.flags.writeable
        if not (frozen_own or (share and usable)):
            # Copy: never freeze, or keep a view of, the caller's array (a view of a device
            # buffer would also block its donation in the train step).
            m = np.array(m, dtype=np.float32, order="C")
        if m.ndim != 2:
            raise ValueError(f"matrix must be [V, D], got shape {m.shape}")
        if m.shape[0] != len(words):
            raise ValueError(f"{len(words)} words but matrix has {m.shape[0]} rows")
        # C loops (a vocabulary can hold millions of words); the slow look names the culprit
        if not all(issubclass(t, str) for t in set(map(type, words))):
            _name_bad_word(words)
        index = dict(zip(words, range(len(words)), strict=True))
        if len(index) != len(words):
            _name_bad_word(words)
        m.setflags(write=False)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "index", index)

    # ----------------------------------------------------------------------- lookup
    @property
    def dim(self) -> int:
        """D, the vector size."""
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __iter__(self):
        return iter(self.words)

    def __repr__(self) -> str:
        return f"Vectors(V={len(self)}, D={self.dim})"

    def row(self, word: str) -> int:
        """The row of ``word``; KeyError naming the word if it is not in the vocabulary."""
        try:
            return self.index[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the vocabulary (V={len(self)})") from None

    def __getitem__(self, word: str) -> np.ndarray:
        """The ``[D]`` vector of ``word`` (read-only view)."""
        return self.matrix[self.row(word)]

    @functools.cached_property
    def norms(self) -> np.ndarray:
        """``[V]`` float32 L2 norms of the rows."""
        return np.linalg.norm(self.matrix, axis=1).astype(np.float32)

    def normalized(self) -> np.ndarray:
        """``[V, D]`` float32 unit-norm rows (cached; all-zero rows stay zero)."""
        return self._normalized

    @functools.cached_property
    def _normalized(self) -> np.ndarray:
        n = self.norms
        out = self.matrix / np.where(n > 0, n, 1.0).astype(np.float32)[:, None]
        out.setflags(write=False)
        return out

    # --------------------------------------------------------------- similarity
    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of two words."""
        u = self.normalized()
        return float(np.dot(u[self.row(w1)], u[self.row(w2)]))

    def most_similar(
        self,
        positive: str | np.ndarray | Sequence[str | np.ndarray] = (),
        negative: str | np.ndarray | Sequence[str | np.ndarray] = (),
        topn: int | None = 10,
        restrict_vocab: int | None = None,
    ) -> list[tuple[str, float]] | np.ndarray:
        r"""Nearest words by cosine to a combination of query words, as gensim's ``most_similar``.

        .. math:: t = \mathrm{unit}\Big(\tfrac{1}{n}\big(\textstyle\sum_{p} \hat v_p
                  - \sum_{q} \hat v_q\big)\Big), \qquad \mathrm{score}(w) = \cos(v_w, t)

        With ``positive=[b, c], negative=[a]`` this is 3CosAdd (Mikolov et al. 2013): the answer
        to ``a : b :: c : ?``. Words are unit-normalised first; raw ``[D]`` arrays are used as
        given.

        Args:
          positive: words (or ``[D]`` vectors) that pull the target towards them.
          negative: words (or vectors) that push it away.
          topn: how many results; ``None`` returns the ``[V']`` array of all cosines instead.
          restrict_vocab: only the first this-many (most frequent) words are candidates.

        Returns:
          ``[(word, cosine)]`` best first, the query words excluded.
        """
        pos, neg = _as_list(positive), _as_list(negative)
        if not pos and not neg:
            raise ValueError("most_similar needs at least one positive or negative word")
        if topn is not None and topn < 1:
            return []
        unit = self.normalized()
        total = np.zeros(self.dim, dtype=np.float32)
        exclude: set[int] = set()
        for sign, items in ((1.0, pos), (-1.0, neg)):
            for item in items:
                if isinstance(item, str):
                    i = self.row(item)
                    exclude.add(i)
                    total += sign * unit[i]
                else:
                    vec = np.asarray(item, dtype=np.float32)
                    if vec.shape != (self.dim,):
                        raise ValueError(f"query vectors must be [{self.dim}], got {vec.shape}")
                    total += sign * vec
        target = _unit(total / (len(pos) + len(neg)))
        n = len(self) if restrict_vocab is None else max(0, min(int(restrict_vocab), len(self)))
        cosines = unit[:n] @ target
        if topn is None:
            return cosines
        keep = np.ones(n, dtype=bool)
        keep[[i for i in exclude if i < n]] = False
        cand = np.flatnonzero(keep)
        k = min(topn, cand.size)
        if k == 0:
            return []
        scores = cosines[cand]
        top = np.argpartition(-scores, k - 1)[:k] if k < cand.size else np.arange(cand.size)
        top = top[np.lexsort((cand[top], -scores[top]))]  # best first; ties by frequency rank
        return [(self.words[cand[j]], float(scores[j])) for j in top]

    # --------------------------------------------------------------------- files
    def save_word2vec_format(self, path: str | os.PathLike, binary: bool) -> None:
        """Writes the word2vec.c binary or text format (see the module docstring)."""
        save_word2vec_format(self, path, binary=binary)

    @classmethod
    def load_word2vec_format(
        cls, path: str | os.PathLike, binary: bool | None = None, **kw: Any
    ) -> Vectors:
        """Reads a word2vec.c binary or text file; ``binary=None`` detects which."""
        return load_word2vec_format(path, binary=binary, **kw)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the native ``.npz`` (``words``, ``matrix``); no pickle needed to read it."""

        def write(f):
            np.savez(f, words=np.array(self.words, dtype=str), matrix=self.matrix)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vectors:
        """Reads a file written by :meth:`save`."""
        try:
            # Our own handle: np.load leaks its file when the zip is corrupt.
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                words, matrix = z["words"], z["matrix"]
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"{os.fspath(path)!r} is not a w2v_jax vectors .npz: {e}") from e
        if words.ndim != 1 or matrix.ndim != 2:
            raise ValueError(f"{os.fspath(path)!r}: words must be [V] and matrix [V, D]")
        if matrix.dtype.kind not in "fiu":
            raise ValueError(f"{os.fspath(path)!r}: matrix must be numbers, got {matrix.dtype}")
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        words = tuple(str(w) for w in words.tolist())
        if len(words) == matrix.shape[0]:
            _check_finite(os.fspath(path), words, matrix, lambda i: f"row {i + 1}")
        matrix.setflags(write=False)
        return cls(words, matrix)


# ------------------------------------------------------------------------ helpers
def _as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, (str, np.ndarray)):
        return [x]
    return list(x)


def _name_bad_word(words: Sequence[Any]) -> None:
    """Raises for the first word of ``words`` that is not a str or repeats an earlier one."""
    seen: dict[str, int] = {}
    for i, w in enumerate(words):
        if not isinstance(w, str):
            raise TypeError(f"words must be str, got {type(w).__name__} at row {i}")
        if w in seen:
            raise ValueError(f"duplicate word {w!r} at rows {seen[w]} and {i}")
        seen[w] = i


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def _check_writable_words(words: Sequence[str]) -> None:
    """Every word can be written in word2vec format: non-empty, no whitespace (what
    ``str.isspace`` calls whitespace, which ``re``'s ``\\s`` matches). One regex scan over the
    joined words, then a word-by-word look to name the first offender if there is one."""
    if words and min(map(len, words)) > 0 and _WHITESPACE.search("\0".join(words)) is None:
        return
    for word in words:
        if not word or any(ch.isspace() for ch in word):
            raise ValueError(
                f"word {word!r} cannot be written in word2vec format (empty or contains whitespace)"
            )


# Words per write: each block's records are joined into one bytes object (about 3.3 MB at
# D = 100), instead of one concatenation and one write call per word.
_WRITE_BLOCK = 8192


# ------------------------------------------------------------------ word2vec files
def save_word2vec_format(vectors: Vectors, path: str | os.PathLike, *, binary: bool) -> None:
    """Writes ``vectors`` in word2vec.c's binary (``binary=True``) or text format."""
    _check_writable_words(vectors.words)
    V, D = vectors.matrix.shape
    le = np.ascontiguousarray(vectors.matrix, dtype="<f4")
    row_fmt = " ".join(["%.9g"] * D)

    def write(f):
        f.write(f"{V} {D}\n".encode())
        if binary:  # record i: word, space, row i's 4D bytes (a view, not a copy), newline
            rows = memoryview(le).cast("B") if le.size else memoryview(b"")
            nb = 4 * D
            for lo in range(0, V, _WRITE_BLOCK):
                parts: list = []
                add = parts.extend
                for i, w in enumerate(vectors.words[lo : lo + _WRITE_BLOCK], lo):
                    add((w.encode("utf-8"), b" ", rows[i * nb : (i + 1) * nb], b"\n"))
                f.write(b"".join(parts))
        else:
            for w, row in zip(vectors.words, le.tolist(), strict=True):
                f.write((w + " " + (row_fmt % tuple(row)) + "\n").encode("utf-8"))

    atomic_write(path, write)


def _first_row_is_text(data: bytes, start: int) -> bool:
    """True if the first record after the header reads as a text row: a word, then numbers.

    The content decides, not the header: a text file whose header has the wrong D must be read
    as text (and fail on the row's length), not as binary garbage. A binary record is a word and
    4D raw bytes, which do not split into D words that all parse as numbers.
    """
    end = data.find(b"\n", start)
    parts = data[start : end if end >= 0 else len(data)].decode("utf-8", "replace").split()
    if len(parts) < 2:
        return False
    try:
        [float(p) for p in parts[1:]]
    except ValueError:
        return False
    return True


def _check_size(path: str, n_words: int, dim: int, body_bytes: int, binary: bool) -> None:
    """Refuses a header that declares more rows than the file can hold, before allocating.

    The smallest binary record is a 1-byte word, a space and 4D bytes (gensim writes no newline);
    the smallest text row is a 1-byte word and D times a separator and a 1-digit number.
    """
    need = n_words * (4 * dim + 2 if binary else 2 * dim + 1)
    if body_bytes < need:
        kind = "binary" if binary else "text"
        raise ValueError(
            f"{path}: the header declares {n_words:,} words of {dim} dims, which as word2vec "
            f"{kind} take at least {need:,} bytes, but the file has {body_bytes:,} after the "
            "header (wrong header, or a truncated file)"
        )


def _check_finite(
    path: str, words: Sequence[str], matrix: np.ndarray, where: Callable[[int], str]
) -> None:
    """Refuses NaN/inf components, naming the first word that has one (``where(row)`` says
    where that row is: a line number for text files)."""
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{path}: the vector of {words[i]!r} ({where(i)}) has non-finite values "
            f"({int(bad.sum())} such rows in all): a corrupt file or a diverged run"
        )


def _read_binary(
    path: str, data: bytes, pos: int, n_words: int, dim: int, encoding: str, errors: str
) -> tuple[list[str], np.ndarray]:
    """``n_words`` records ``word b" " <dim float32 LE> [b"\n"]`` from ``data[pos:]``."""
    words: list[str] = []
    matrix = np.empty((n_words, dim), dtype=np.float32)
    nbytes = 4 * dim
    for i in range(n_words):
        while pos < len(data) and data[pos] == 0x0A:  # word2vec.c's "\n" after each vector
            pos += 1
        sp = data.find(b" ", pos)
        if sp < 0 or sp + 1 + nbytes > len(data):
            raise ValueError(
                f"{path}: binary file ends after {i} of {n_words} vectors (truncated, or the "
                f"header's counts are wrong)"
            )
        raw = data[pos:sp]
        if not raw or b"\n" in raw:
            # A record boundary in the wrong place: the header's D does not match the rows.
            raise ValueError(
                f"{path}: record {i + 1} (byte {pos}) has no word before its vector: the "
                f"header's D={dim} does not match the file, or the file is corrupt"
            )
        try:
            words.append(raw.decode(encoding, errors=errors))
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}: record {i + 1} (byte {pos}): word cannot be decoded as {encoding} "
                f"({e.reason}); a word2vec.c word cut mid-character loads with "
                "unicode_errors='replace'"
            ) from None
        matrix[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=sp + 1)
        pos = sp + 1 + nbytes
    if data[pos:].strip(b"\n"):
        raise ValueError(
            f"{path}: {len(data) - pos:,} bytes follow the {n_words:,} vectors the header "
            "declares (wrong header, or not a word2vec file)"
        )
    _check_finite(path, words, matrix, lambda i: f"record {i + 1}")
    return words, matrix


def _read_text(
    path: str, data: bytes, pos: int, n_words: int, dim: int, encoding: str, errors: str
) -> tuple[list[str], np.ndarray]:
    """``n_words`` lines ``word v1 ... vD`` from ``data[pos:]``; line numbers count the header."""
    words: list[str] = []
    matrix = np.empty((n_words, dim), dtype=np.float32)
    lines = data[pos:].split(b"\n")
    for i in range(n_words):
        line_no = i + 2
        if i >= len(lines) or not lines[i].strip():
            raise ValueError(f"{path}: text file ends after {i} of {n_words} vectors")
        try:
            text = lines[i].decode(encoding, errors=errors)
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{line_no}: cannot decode as {encoding} ({e.reason} at byte {e.start})"
            ) from None
        parts = text.rstrip().split(" ")
        vals = [p for p in parts[1:] if p]
        if len(vals) != dim:
            raise ValueError(
                f"{path}:{line_no}: {len(vals)} values after the word {parts[0]!r}, the header "
                f"says D={dim}"
            )
        words.append(parts[0])
        try:
            matrix[i] = np.array(vals, dtype=np.float32)
        except ValueError as e:
            raise ValueError(f"{path}:{line_no}: {e}") from None
    extra = sum(1 for line in lines[n_words:] if line.strip())
    if extra:
        raise ValueError(
            f"{path}: {extra:,} more rows follow the {n_words:,} the header declares (wrong "
            "header?)"
        )
    _check_finite(path, words, matrix, lambda i: f"line {i + 2}")
    return words, matrix


def load_word2vec_format(
    path: str | os.PathLike,
    binary: bool | None = None,
    *,
    encoding: str = "utf-8",
    unicode_errors: str = "strict",
) -> Vectors:
    """Reads a word2vec.c (or gensim) binary or text file, refusing anything inconsistent.

    Checks, each a ``ValueError`` naming the file (and the line or record): the header is
    ``V D``; the file is large enough for V rows of D values before anything is allocated (so a
    header that declares 10^9 words fails at once); the content's format matches ``binary`` when
    given; every text row has exactly D numbers; no extra rows follow; words decode; no
    component is NaN or inf.

    Args:
      path: the file.
      binary: True / False for the format; None detects it from the first record. Either way
        the first record decides, and a contradicting flag is an error.
      encoding: of the words (word2vec.c writes bytes as they were in the corpus).
      unicode_errors: ``"strict"``, or ``"replace"``/``"ignore"`` for files whose words were
        truncated mid-character (word2vec.c cuts words at MAX_STRING bytes).

    Returns:
      :class:`Vectors` in file order. A repeated word keeps its first vector (as gensim does).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    nl = data.find(b"\n")
    try:
        V, D = (int(x) for x in data[: nl if nl >= 0 else len(data)].split())
    except ValueError:
        raise ValueError(
            f"{path}: not a word2vec file (the first line must be 'V D', got {data[:60]!r})"
        ) from None
    if V < 0 or D < 1:
        raise ValueError(f"{path}: bad header V={V} D={D}")
    pos = nl + 1 if nl >= 0 else len(data)
    if V > 0:
        is_text = _first_row_is_text(data, pos)
        if binary is not None and binary == is_text:
            found, flag = ("text", "binary") if is_text else ("binary", "text")
            raise ValueError(
                f"{path}: asked to read word2vec {flag}, but its first row is {found} (leave "
                "the format to detection: binary=None, no --binary/--text flag)"
            )
        binary = not is_text
    _check_size(path, V, D, len(data) - pos, bool(binary))
    read = _read_binary if binary else _read_text
    words, matrix = read(path, data, pos, V, D, encoding, unicode_errors)
    if len(set(words)) != len(words):
        seen: dict[str, int] = {}
        keep = []
        for i, w in enumerate(words):
            if w not in seen:
                seen[w] = i
                keep.append(i)
        logger.warning("%s: %d duplicate words, keeping the first of each", path, V - len(keep))
        words = [words[i] for i in keep]
        matrix = matrix[keep]
    matrix.setflags(write=False)
    return Vectors(tuple(words), matrix)


# --------------------------------------------------------------------- from tables
def _host(table: Any, copy: bool) -> np.ndarray:
    """A C-ordered float32 host array: a copy, or (``copy=False``) a new ndarray object over
    ``table``'s memory where its layout allows (so marking it read-only leaves the caller's
    array as it was)."""
    if copy:
        return np.array(table, dtype=np.float32, order="C")
    return np.asarray(table, dtype=np.float32, order="C").view()


def from_tables(
    words: Iterable[str],
    center_vecs: Any,
    outside_vecs: Any | None = None,
    which: str = "in",
    *,
    copy: bool = True,
) -> Vectors:
    """Vectors from trained tables.

    Args:
      words: the vocabulary, row order of the tables.
      center_vecs: ``[V, D]`` input vectors (word2vec.c syn0).
      outside_vecs: ``[V, D]`` output vectors (syn1neg, or the full-softmax output table);
        None for hierarchical softmax, whose ``node_vecs`` ``[V-1, D]`` belong to Huffman inner
        nodes, not to words.
      which: ``"in"`` input vectors (word2vec's output); ``"out"`` output vectors; ``"sum"``
        ``w + c`` (Levy, Goldberg and Dagan 2015, section 3.3).

      copy: ``False`` lets ``"in"`` and ``"out"`` share the table's memory when it is a
        C-ordered float32 host array (or a CPU jax array, viewed in place): for tables that will
        not change again, such as a finished run's. A view of a live device buffer would make
        JAX copy the table the next time a step donates it.

    Returns:
      :class:`Vectors` (read-only).
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    words = tuple(words)
    w = _host(center_vecs, copy)
    if w.ndim != 2 or w.shape[0] != len(words):
        raise ValueError(f"center_vecs must be [V={len(words)}, D], got shape {w.shape}")
    if which == "in":
        w.setflags(write=False)
        return Vectors(words, w, share=True)
    if outside_vecs is None:
        raise ValueError(
            f"which={which!r} needs output word vectors, but none were given: hierarchical "
            "softmax trains node vectors [V-1, D] for the Huffman tree's inner nodes, not one "
            "output vector per word; use which='in'"
        )
    c = _host(outside_vecs, copy)
    if c.shape != w.shape:
        hint = (
            " (that looks like hierarchical-softmax node vectors [V-1, D], which are not word "
            "vectors)"
            if c.ndim == 2 and c.shape[0] == len(words) - 1
            else ""
        )
        raise ValueError(f"outside_vecs must be {w.shape}, got {c.shape}{hint}")
    out = c if which == "out" else w + c
    out.setflags(write=False)
    return Vectors(words, out, share=True)


def load_vectors(path: str | os.PathLike, binary: bool | None = None) -> Vectors:
    """Any vectors file: a native ``.npz`` (by its zip signature), else word2vec binary or text
    (``binary=None`` detects which)."""
    with open(os.fspath(path), "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        return Vectors.load(path)
    return load_word2vec_format(path, binary=binary)
