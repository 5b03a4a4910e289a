"""Corpora: reading sentences, named corpora, and the cached int32 encoding.

* :func:`iter_sentences` streams token lists from a text file or a folder of files (sorted,
  hidden files skipped); ``.gz``, ``.bz2`` and ``.xz`` are decompressed transparently. One
  sentence per line; a line longer than ``max_sentence_len`` tokens (text8 is a single 100 MB
  line) is cut into pieces of that many tokens, as gensim's ``LineSentence``/``Text8Corpus`` do
  (word2vec.c cuts at 1000). Lines are read in blocks, so a long line never sits in memory whole.
  Tokens are whitespace-separated, or ``re.findall(token_pattern, line)``; ``lowercase`` lowers
  the text first. A long line is split at block boundaries on whitespace only, so a regex whose
  tokens may contain whitespace can differ from line-at-once tokenisation on such lines.
* :func:`resolve_corpus` turns a path or a name into a :class:`CorpusSource`: ``wiki-sample``
  (the default: gensim's 106-article Wikipedia sample through ``gensim.corpora.WikiCorpus``,
  ~453k tokens; tokenised once into the cache), ``lee`` (``lee_background.cor``), ``head500``
  (``head500.noblanks.cor``), ``text8`` (downloaded once into the cache, checksummed).
* :func:`encode_corpus` maps tokens to vocabulary ids (unknown words dropped, as word2vec.c does)
  and caches ``ids`` [T] int32 as ``.npy``, memory-mapped on load, so a corpus larger than RAM
  trains. The cache key covers the corpus fingerprint, the tokenizer settings and the vocabulary;
  any change encodes anew into a new entry.
* :func:`prepare_corpus` gives the vocabulary and the encoded corpus from one pass over the text
  (counting and encoding at once; both cached), the same as ``build_vocab`` then
  ``encode_corpus``, about 3x faster and in a third of the memory on 50M tokens (BENCHMARKS.md).
  It and :func:`encode_corpus` read bytes with numpy (see "fast reading" below) and report
  progress through an optional ``progress`` callable (:func:`progress_printer`). A damaged
  compressed file raises ``ValueError("corpus file X is corrupt or truncated (gzip): ...")``.

* :func:`prepare_slices` does the same for a process of a multi-host run that reads only its own
  byte slices of a plain-text corpus (:func:`byte_slices`): it counts and encodes their bytes,
  the processes merge their counts into exactly the vocabulary one scan gives, and each slice is
  cached on its own (:class:`CorpusSlices`; :func:`cut_encoded` cuts a whole encoding by tokens
  where bytes cannot be cut).

Cache folder: ``$W2V_JAX_CACHE``, else ``~/.cache/w2v_jax``.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import http.client
import importlib.util
import json
import lzma
import math
import os
import re
import shutil
import tempfile
import time
import typing
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from w2v_jax.config import DataConfig
from w2v_jax.fileio import atomic_write
from w2v_jax.vocab import (
    Vocab,
    build_vocab,
    check_vocab_config,
    count_words,
    select_words,
    vocab_from_counter,
)

NAMED_CORPORA = ("wiki-sample", "lee", "head500", "text8")
DEFAULT_CORPUS = "wiki-sample"
WIKI_SAMPLE_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
GENSIM_FILES = {
    "wiki-sample": WIKI_SAMPLE_FILE,
    "lee": "lee_background.cor",
    "head500": "head500.noblanks.cor",
}
TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_ZIP_SHA256 = "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232"
TEXT8_SHA256 = "6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7"
TEXT8_BYTES = 100_000_000

_BLOCK_CHARS = 1 << 22  # characters read at a time
_ENCODE_FORMAT = 1  # bump when the on-disk encoding changes


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$W2V_JAX_CACHE``, else ``~/.cache/w2v_jax``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("W2V_JAX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "w2v_jax"


# ----------------------------------------------------------------------------- reading


def _open_text(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline=None)
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8", newline=None)
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8", newline=None)
    return open(path, encoding="utf-8", newline=None)


def _list_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"--corpus {path}: folder has no files")
        return files
    if path.is_file():
        return [path]
    raise ValueError(f"--corpus {path}: no such file or folder")


def _make_tokenizer(lowercase: bool, token_pattern: str | None) -> Callable[[str], list[str]]:
    if token_pattern is None:
        split = str.split
    else:
        try:
            findall = re.compile(token_pattern).findall
        except re.error as e:
            raise ValueError(f"token_pattern {token_pattern!r} is not a valid regex: {e}") from None
        split = findall
    if lowercase:
        return lambda text: split(text.lower())
    return split


def _cut(tokens: list[str], max_len: int) -> Iterator[list[str]]:
    if len(tokens) <= max_len:
        if tokens:
            yield tokens
        return
    for i in range(0, len(tokens), max_len):
        yield tokens[i : i + max_len]


def _sentences_from_stream(f, tokenize, max_len: int, where: str) -> Iterator[list[str]]:
    pending: list[str] = []  # tokens of the unfinished current line (only for very long lines)
    tail = ""
    while True:
        block = f.read(_BLOCK_CHARS)
        if not block:
            break
        if "\0" in block:
            raise ValueError(f"--corpus {where}: binary file (NUL bytes); pass a plain-text corpus")
        lines = (tail + block).split("\n")
        tail = lines.pop()
        for line in lines:
            tokens = tokenize(line)
            if pending:
                tokens = pending + tokens
                pending = []
            yield from _cut(tokens, max_len)
        if len(tail) > _BLOCK_CHARS:  # a very long line: consume it up to its last whitespace
            if tail[-1].isspace():
                head, tail = tail, ""
            else:
                parts = tail.rsplit(None, 1)  # scans from the right: O(last token)
                cut = len(tail) - len(parts[-1])
                head, tail = tail[:cut], tail[cut:]
            pending.extend(tokenize(head))
            full = len(pending) - len(pending) % max_len
            for i in range(0, full, max_len):
                yield pending[i : i + max_len]
            del pending[:full]
    yield from _cut(pending + tokenize(tail), max_len)


def iter_sentences(
    path: str | os.PathLike,
    *,
    lowercase: bool = False,
    token_pattern: str | None = None,
    max_sentence_len: int = 10_000,
) -> Iterator[list[str]]:
    """Yields token lists from a text file or a folder of text files (see the module docstring).

    Raises:
      ValueError (one line, naming ``--corpus``): missing path, empty corpus, binary or
      undecodable file.
    """
    if max_sentence_len < 1:
        raise ValueError(f"max_sentence_len must be >= 1, got {max_sentence_len}")
    root = Path(path)
    files = _list_files(root)
    tokenize = _make_tokenizer(lowercase, token_pattern)
    n_tokens = 0
    for file in files:
        try:
            with _open_text(file) as f:
                for sentence in _sentences_from_stream(f, tokenize, max_sentence_len, str(file)):
                    n_tokens += len(sentence)
                    yield sentence
        except UnicodeDecodeError as e:
            raise ValueError(
                f"--corpus {file}: not UTF-8 text ({e.reason} at byte {e.start}); "
                "pass a plain-text corpus"
            ) from None
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            raise _corrupt(file, e) from None
    if n_tokens == 0:
        raise _empty_corpus(root)


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """A resolved corpus: what to read, how to tokenise it, and a fingerprint for caches.

    Attributes:
      name: the corpus name (named corpora) or the path given.
      path: the file or folder :meth:`sentences` reads.
      fingerprint: content identity: a file hash for named corpora, path + size + mtime of each
        file otherwise.
      lowercase, token_pattern, max_sentence_len: tokenizer settings (part of :attr:`cache_key`).
    """

    name: str
    path: str
    fingerprint: str
    lowercase: bool = False
    token_pattern: str | None = None
    max_sentence_len: int = 10_000

    def sentences(self) -> Iterator[list[str]]:
        """A fresh iterator over the corpus' sentences."""
        return iter_sentences(
            self.path,
            lowercase=self.lowercase,
            token_pattern=self.token_pattern,
            max_sentence_len=self.max_sentence_len,
        )

    def __iter__(self) -> Iterator[list[str]]:
        return self.sentences()

    @property
    def cache_key(self) -> str:
        """Fingerprint + tokenizer settings."""
        spec = json.dumps(
            [self.fingerprint, self.lowercase, self.token_pattern, self.max_sentence_len]
        )
        return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:32]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _path_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for file in _list_files(path):
        st = file.stat()
        h.update(f"{file.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def gensim_data_path(fname: str) -> Path:
    """Where the installed gensim keeps its test data file ``fname`` (what
    ``gensim.test.utils.datapath`` returns), found without importing gensim: its import pulls in
    scipy.stats and takes longer than the rest of a short run's start. ModuleNotFoundError when
    gensim is not installed; the file itself may be missing."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'gensim'", name="gensim")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data" / fname


def _gensim_datapath(name: str) -> Path:
    try:
        path = gensim_data_path(GENSIM_FILES[name])
    except ModuleNotFoundError:
        raise ValueError(
            f"corpus {name!r} ships with gensim, which is not installed: pip install gensim, "
            "or pass --corpus PATH"
        ) from None
    if not path.is_file():
        raise ValueError(
            f"corpus {name!r}: {path.name} is missing from the installed gensim; pass --corpus PATH"
        )
    return path


def _atomic_write_text(path: Path, lines: Iterator[str]) -> None:
    def write(f):
        for line in lines:
            f.write(line.encode("utf-8"))

    atomic_write(path, write)


def _wiki_sample(cache: Path) -> tuple[Path, str]:
    src = _gensim_datapath("wiki-sample")
    digest = _sha256_file(src)
    out = cache / "corpora" / f"wiki-sample-{digest[:16]}.txt"
    if not out.is_file():
        from gensim.corpora import WikiCorpus

        wiki = WikiCorpus(str(src), dictionary={})  # ~10 s on one core, once
        _atomic_write_text(out, (" ".join(tokens) + "\n" for tokens in wiki.get_texts()))
    return out, digest


def _open_url(url: str):
    """The URL opener (a seam for tests: monkeypatch it to simulate being offline)."""
    return urllib.request.urlopen(url, timeout=60)


def _text8(cache: Path) -> Path:
    folder = cache / "corpora"
    out = folder / "text8"
    if out.is_file() and out.stat().st_size == TEXT8_BYTES:
        return out
    folder.mkdir(parents=True, exist_ok=True)
    zpath = folder / "text8.zip"
    if not (zpath.is_file() and _sha256_file(zpath) == TEXT8_ZIP_SHA256):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="text8.zip.", suffix=".tmp")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as f, _open_url(TEXT8_URL) as resp:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    h.update(block)
                    f.write(block)
            if h.hexdigest() != TEXT8_ZIP_SHA256:
                raise ValueError(
                    f"text8: checksum mismatch for the download from {TEXT8_URL} "
                    f"(sha256 {h.hexdigest()}); retry, or pass --corpus PATH to a local copy"
                )
            os.replace(tmp, zpath)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise ValueError(
                f"text8 is not in the cache ({folder}) and downloading {TEXT8_URL} failed "
                f"({reason}); pass --corpus PATH to a local copy of text8"
            ) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="text8.", suffix=".tmp")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(zpath) as z, z.open("text8") as member:
            for block in iter(lambda: member.read(1 << 20), b""):
                h.update(block)
                f.write(block)
        if h.hexdigest() != TEXT8_SHA256:
            raise ValueError(
                f"text8: extracted file has sha256 {h.hexdigest()}, expected {TEXT8_SHA256}"
            )
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def resolve_corpus(
    name_or_path: str | os.PathLike,
    *,
    lowercase: bool = False,
    token_pattern: str | None = None,
    max_sentence_len: int = 10_000,
    cache_dir: str | os.PathLike | None = None,
) -> CorpusSource:
    """A named corpus (``wiki-sample``, ``lee``, ``head500``, ``text8``) or a file/folder path.

    Named corpora that need preparation (``wiki-sample`` tokenisation, the ``text8`` download) are
    prepared once into the cache folder. A path takes precedence over a name.
    """
    settings = dict(
        lowercase=lowercase, token_pattern=token_pattern, max_sentence_len=max_sentence_len
    )
    if max_sentence_len < 1:
        raise ValueError(f"max_sentence_len must be >= 1, got {max_sentence_len}")
    path = Path(name_or_path)
    if path.exists():
        return CorpusSource(
            name=str(name_or_path), path=str(path), fingerprint=_path_fingerprint(path), **settings
        )
    name = str(name_or_path)
    cache = cache_root(cache_dir)
    if name == "wiki-sample":
        out, digest = _wiki_sample(cache)
        return CorpusSource(name=name, path=str(out), fingerprint=f"{name}:{digest}", **settings)
    if name in ("lee", "head500"):
        src = _gensim_datapath(name)
        return CorpusSource(
            name=name, path=str(src), fingerprint=f"{name}:{_sha256_file(src)}", **settings
        )
    if name == "text8":
        out = _text8(cache)
        return CorpusSource(
            name=name, path=str(out), fingerprint=f"text8:{TEXT8_SHA256}", **settings
        )
    raise ValueError(
        f"--corpus {name!r}: no such file or folder, and not a named corpus {NAMED_CORPORA}"
    )


# ----------------------------------------------------------------------------- encoding


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedCorpus:
    """A corpus as vocabulary ids.

    Attributes:
      ids: [T] int32 in-vocabulary ids in corpus order (memory-mapped when loaded from cache).
      sentence_starts: [S+1] int64 offsets into ``ids``; sentence s is
        ``ids[sentence_starts[s]:sentence_starts[s+1]]`` (may be empty if all its words were OOV).
      raw_words: tokens read before unknown words were dropped (learning-rate progress and
        words/s count these, as gensim does).
      raw_starts: [S+1] int64 cumulative raw tokens per sentence, or None (then raw words are
        spread in proportion to in-vocabulary tokens).
    """

    ids: np.ndarray
    sentence_starts: np.ndarray
    raw_words: int
    raw_starts: np.ndarray | None = None

    def __post_init__(self) -> None:
        starts = np.asarray(self.sentence_starts, dtype=np.int64)
        if starts.ndim != 1 or starts.shape[0] < 1 or starts[0] != 0:
            raise ValueError("sentence_starts must be [S+1] int64 starting at 0")
        if starts[-1] != self.ids.shape[0] or np.any(np.diff(starts) < 0):
            raise ValueError("sentence_starts must be non-decreasing and end at len(ids)")
        object.__setattr__(self, "sentence_starts", starts)
        object.__setattr__(self, "raw_words", int(self.raw_words))
        if self.raw_starts is not None:
            raw = np.asarray(self.raw_starts, dtype=np.int64)
            if raw.shape != starts.shape or raw[-1] != self.raw_words:
                raise ValueError("raw_starts must be [S+1] and end at raw_words")
            object.__setattr__(self, "raw_starts", raw)

    @property
    def num_tokens(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_sentences(self) -> int:
        return int(self.sentence_starts.shape[0] - 1)

    def raw_before(self, sentence: int) -> int:
        """Raw tokens in sentences ``[0, sentence)``."""
        if self.raw_starts is not None:
            return int(self.raw_starts[sentence])
        t = int(self.sentence_starts[sentence])
        return (t * self.raw_words) // max(1, self.num_tokens)


def _encode_stream(sentences, vocab: Vocab, write_ids, batch_tokens: int = 1 << 20):
    """Encodes sentences in batches; calls ``write_ids(int32 array)``; returns lengths."""
    get = vocab.index.get
    kept_lens: list[np.ndarray] = []
    raw_lens: list[int] = []
    buf: list[str] = []
    buf_lens: list[int] = []

    def flush() -> None:
        ids = np.array([get(w, -1) for w in buf], dtype=np.int32)
        sid = np.repeat(np.arange(len(buf_lens)), buf_lens)
        known = ids >= 0
        write_ids(ids[known])
        kept_lens.append(np.bincount(sid[known], minlength=len(buf_lens)))
        buf.clear()
        buf_lens.clear()

    for sentence in sentences:
        buf.extend(sentence)
        buf_lens.append(len(sentence))
        raw_lens.append(len(sentence))
        if len(buf) >= batch_tokens:
            flush()
    if buf_lens:
        flush()
    kept = np.concatenate(kept_lens) if kept_lens else np.zeros(0, np.int64)
    return kept.astype(np.int64), np.asarray(raw_lens, dtype=np.int64)


def encode_sentences(sentences, vocab: Vocab) -> EncodedCorpus:
    """Encodes in memory, without the cache (small corpora, tests)."""
    parts: list[np.ndarray] = []
    kept, raw = _encode_stream(sentences, vocab, parts.append)
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return _assemble(ids, kept, raw)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def _assemble(ids: np.ndarray, kept: np.ndarray, raw: np.ndarray) -> EncodedCorpus:
    if ids.shape[0] == 0:
        raise ValueError(
            "--corpus: no in-vocabulary tokens; check the corpus against the vocabulary"
        )
    raw_starts = _offsets(raw)
    return EncodedCorpus(ids, _offsets(kept), int(raw_starts[-1]), raw_starts)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def _encode_slow(source: CorpusSource, vocab: Vocab, folder: Path, key: str) -> EncodedCorpus:
    """encode_corpus through iter_sentences (a ``token_pattern``): a dict lookup per token."""
    meta_path = folder / "meta.json"
    folder.mkdir(parents=True, exist_ok=True)
    fd, raw_tmp = tempfile.mkstemp(dir=folder, suffix=".ids.tmp")
    fd2, npy_tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    os.close(fd2)
    try:
        with os.fdopen(fd, "wb") as f:
            kept, raw = _encode_stream(source.sentences(), vocab, lambda a: a.tofile(f))
        n = int(kept.sum())
        if n == 0:
            raise ValueError(
                f"--corpus {source.name}: no in-vocabulary tokens; check the corpus and vocabulary"
            )
        with open(npy_tmp, "wb") as out, open(raw_tmp, "rb") as src:
            header = {"descr": "<i4", "fortran_order": False, "shape": (n,)}
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 1 << 22)
        os.replace(npy_tmp, folder / "ids.npy")
    finally:
        Path(raw_tmp).unlink(missing_ok=True)
        Path(npy_tmp).unlink(missing_ok=True)
    starts, raw_starts = _offsets(kept), _offsets(raw)
    _atomic_save(folder / "starts.npy", starts)
    _atomic_save(folder / "raw_starts.npy", raw_starts)
    meta = {
        "key": key,
        "format": _ENCODE_FORMAT,
        "corpus": source.name,
        "fingerprint": source.fingerprint,
        "tokens": n,
        "sentences": int(kept.shape[0]),
        "raw_words": int(raw_starts[-1]),
        "vocab_size": len(vocab),
    }
    _atomic_write_text(meta_path, iter([json.dumps(meta, indent=1) + "\n"]))
    ids = np.load(folder / "ids.npy", mmap_mode="r")
    return EncodedCorpus(ids, starts, int(raw_starts[-1]), raw_starts)


# ----------------------------------------------------------------------------- fast reading
#
# The one-pass reader behind prepare_corpus and encode_corpus, for the default tokenizer
# (whitespace split, optionally lowercased). It gives the same tokens and sentences as
# iter_sentences without making a Python object per token: a per-token dict lookup costs about
# 0.5 us once the table outgrows the CPU caches (a cache miss per step of the lookup), which
# made counting plus encoding 68 s on 50M tokens. Instead each block of bytes is split with
# numpy, each token of up to 16 bytes is packed into two uint64 (its bytes, zero-padded: exact,
# no hash collisions to worry about, as NUL bytes are refused), and the packed keys are looked up
# in an open-addressing table held in numpy arrays, a whole block at a time. The few longer
# tokens (0.003% of wiki-sample's) go through a dict.

_WS_BYTES = b" \t\n\x0b\x0c\r"  # bytes.split()'s whitespace
_IS_WS = np.zeros(256, dtype=bool)
_IS_WS[list(_WS_BYTES)] = True
# str.split() also splits at these (str.isspace beyond ASCII's six); text-mode reading does not
# end lines at them. Written out: scanning all code points took 0.15 s of every start.
# tests/test_corpus.py checks the list against str.isspace.
_OTHER_WS = (
    "\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_OTHER_WS_UTF8 = tuple(c.encode("utf-8") for c in _OTHER_WS)
_OTHER_WS_TO_SPACE = str.maketrans({c: " " for c in _OTHER_WS})
_ASCII_TO_SPACE = bytes.maketrans(b"\x1c\x1d\x1e\x1f", b"    ")
_ASCII_LOWER = bytes.maketrans(
    b"\x1c\x1d\x1e\x1fABCDEFGHIJKLMNOPQRSTUVWXYZ", b"    abcdefghijklmnopqrstuvwxyz"
)
_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)  # low n bytes
_SHORT = 16  # longest token packed into (lo, hi)
_BLOCK_BYTES = 1 << 20  # bytes read at a time: ~250k tokens, ~40 MB of numpy temporaries
_PIECE = 1 << 20  # tokens per piece when the id file is read back
_COUNT_PIECE = 1 << 23  # ... when counting: a bincount costs O(distinct words) per piece
_MAX_LOAD = 0.7  # the table grows to twice the words when fuller than this
_K1, _K2, _K3 = (np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0xBF58476D1CE4E5B9))
_COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}


@dataclasses.dataclass(frozen=True)
class ReadProgress:
    """Where a pass over the corpus is, for a ``progress`` callable.

    Attributes:
      phase: ``"count+encode"`` (prepare_corpus's one pass), or ``"count"`` then ``"encode"``
        (prepare_corpus with ``max_vocab_size``: pruning needs a counting pass of its own), or
        ``"encode"`` (encode_corpus). With a ``token_pattern`` only the encoding reports.
      tokens: tokens read so far.
      bytes_read: bytes of the corpus files read so far (compressed bytes for compressed files).
      bytes_total: bytes of all the corpus files.
      seconds: since the pass began.
      done: True on the last call of the pass.
    """

    phase: str
    tokens: int
    bytes_read: int
    bytes_total: int
    seconds: float
    done: bool = False


def progress_printer(every_s: float = 5.0, file=None) -> Callable[[ReadProgress], None]:
    """A ``progress`` callable that writes one line to stderr every ``every_s`` seconds, and at
    the end: ``count+encode: 12.3M tokens (2.41M/s), 61/250 MB (24%), 5.1 s``."""
    import sys

    last = [-float("inf")]

    def show(p: ReadProgress) -> None:
        if not p.done and p.seconds - last[0] < every_s:
            return
        last[0] = p.seconds
        rate = p.tokens / max(p.seconds, 1e-9)
        pct = 100.0 * p.bytes_read / max(p.bytes_total, 1)
        print(
            f"{p.phase}: {p.tokens / 1e6:.1f}M tokens ({rate / 1e6:.2f}M/s), "
            f"{p.bytes_read / 1e6:.0f}/{p.bytes_total / 1e6:.0f} MB ({pct:.0f}%), "
            f"{p.seconds:.1f} s{' done' if p.done else ''}",
            file=file or sys.stderr,
            flush=True,
        )

    return show


def _empty_corpus(path) -> ValueError:
    """The error of a corpus without a token, the same sentence wherever it is found."""
    return ValueError(f"--corpus {path}: empty corpus (no tokens); pass a non-empty text corpus")


def _corrupt(file: Path, e: BaseException) -> ValueError:
    kind = _COMPRESSED.get(file.suffix.lower())
    if kind is None:
        return ValueError(f"--corpus {file}: cannot read ({e}); pass a readable corpus")
    return ValueError(f"corpus file {file} is corrupt or truncated ({kind}): {e}")


def _read_blocks(
    file: Path, block_bytes: int, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int]]:
    """(decompressed block, bytes of ``file`` read so far); damaged files raise ValueError.

    ``start``/``end``: read only bytes ``[start, end)`` of a plain (uncompressed) file."""
    kind = _COMPRESSED.get(file.suffix.lower())
    if kind is not None and (start, end) != (0, None):
        raise ValueError(f"{file}: a byte range of a {kind} file cannot be read on its own")
    try:
        with open(file, "rb") as raw:
            if kind == "gzip":
                f = gzip.GzipFile(fileobj=raw)
            elif kind == "bzip2":
                f = bz2.BZ2File(raw)
            elif kind == "xz":
                f = lzma.LZMAFile(raw)
            else:
                f = raw
            with f:
                if start:
                    f.seek(start)
                left = math.inf if end is None else end - start
                while left > 0 and (block := f.read(int(min(block_bytes, left)))):
                    left -= len(block)
                    yield block, raw.tell() - start
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise _corrupt(file, e) from None


def _normalise(chunk: bytes, lowercase: bool, where: str, offset: int) -> bytes:
    """The chunk with every whitespace char that bytes.split() misses turned into a space, and
    lowercased as str.lower() would; checks it is text (no NUL, UTF-8)."""
    if b"\0" in chunk:
        raise ValueError(f"--corpus {where}: binary file (NUL bytes); pass a plain-text corpus")
    if chunk.isascii():  # str.lower() of ASCII is ASCII A-Z -> a-z
        return chunk.translate(_ASCII_LOWER if lowercase else _ASCII_TO_SPACE)
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--corpus {where}: not UTF-8 text ({e.reason} at byte {offset + e.start}); "
            "pass a plain-text corpus"
        ) from None
    # Lowering whole lines = lowering each token: whitespace is neither cased nor case-ignorable,
    # so even the context-dependent final sigma sees the same neighbours.
    if lowercase:
        text = text.lower()
    elif not any(ws in chunk for ws in _OTHER_WS_UTF8):
        return chunk
    return text.translate(_OTHER_WS_TO_SPACE).encode("utf-8")


def _chunks(
    file: Path, lowercase: bool, block_bytes: int, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int]]:
    """(normalised text ending at a line end or, inside a very long line, at whitespace; bytes
    of ``file`` read). A line longer than a block is carried over, not held whole.
    ``start``/``end``: only bytes ``[start, end)`` (a plain file; see :func:`_read_blocks`)."""
    tail = b""
    offset = start
    read = 0
    for block, read in _read_blocks(file, block_bytes, start, end):
        data = tail + block if tail else block
        # (A \r\n cut in two reads as two line ends: the empty line between has no sentence.)
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if cut == 0 and len(data) > block_bytes:  # a very long line: cut at its last whitespace
            cut = max(data.rfind(b) for b in (b" ", b"\t", b"\x0b", b"\x0c")) + 1
        if cut == 0:
            tail = data
            continue
        yield _normalise(data[:cut], lowercase, str(file), offset), read
        offset += cut
        tail = data[cut:]
    if tail:
        yield _normalise(tail, lowercase, str(file), offset), read


def _split(chunk: bytes):
    """Token boundaries of a chunk.

    Returns:
      starts, lengths: [n] int64 byte offsets and lengths of its tokens.
      per_line: [E + 1] int64 tokens on each of the chunk's E line ends' lines; the last entry
        counts the tokens after the last line end (a line that goes on in the next chunk).
    """
    a = np.frombuffer(chunk, dtype=np.uint8)
    inside = np.zeros(a.shape[0] + 2, dtype=bool)
    inside[1:-1] = ~_IS_WS[a]
    edges = np.flatnonzero(inside[1:] != inside[:-1])  # start, end, start, end, ...
    starts, ends = edges[0::2], edges[1::2]
    # \r\n counts as two line ends; the empty line between them has no tokens, so no sentence.
    line_ends = np.flatnonzero((a == 10) | (a == 13))
    before_end = np.searchsorted(starts, line_ends)  # E lookups among n tokens, not n among E
    per_line = np.diff(before_end, prepend=0, append=starts.shape[0])
    return starts, ends - starts, per_line


def _pack(chunk: bytes, starts: np.ndarray, lengths: np.ndarray):
    """[n] uint64 lo, hi: each token's first 16 bytes, zero-padded (tokens longer than 16 bytes
    get their prefix: the caller sends those through a dict)."""
    buf = np.zeros(len(chunk) + 16, dtype=np.uint8)
    buf[: len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    at = np.ndarray((len(chunk) + 9,), dtype="<u8", buffer=buf, strides=(1,))  # 8 bytes from i
    lo = at[starts] & _MASKS[np.minimum(lengths, 8)]
    hi = np.zeros_like(lo)
    sel = np.flatnonzero(lengths > 8)
    hi[sel] = at[starts[sel] + 8] & _MASKS[np.minimum(lengths[sel] - 8, 8)]
    return lo, hi


class _Table(typing.NamedTuple):
    """Open-addressing hash table from packed tokens to ids, in numpy arrays (updated in place).

    ``lo == 0`` marks an empty slot (every token has a non-NUL first byte). Linear probing, at
    most ``_MAX_LOAD`` full (half full after each growth), so a lookup takes 1.5-2 probes.
    (Keys and ids in one record array, one cache line per probe, measured slower: numpy gathers
    records one by one.)
    """

    lo: np.ndarray  # [C] uint64
    hi: np.ndarray  # [C] uint64
    ids: np.ndarray  # [C] int32, -1 where no id is assigned yet
    shift: np.uint64  # 64 - log2(C)


def _new_table(capacity: int) -> _Table:
    bits = max(10, int(capacity - 1).bit_length())
    size = 1 << bits
    return _Table(
        np.zeros(size, np.uint64),
        np.zeros(size, np.uint64),
        np.full(size, -1, np.int32),
        np.uint64(64 - bits),
    )


def _slots(table: _Table, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    x = lo * _K1 + hi * _K2
    x ^= x >> np.uint64(29)
    x *= _K3
    return (x >> table.shift).astype(np.int64)


def _lookup(table: _Table, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """[n] int32 ids of the keys (-1: absent), all keys probed together."""
    mask = table.lo.shape[0] - 1
    out = np.full(lo.shape[0], -1, np.int32)
    todo = np.arange(lo.shape[0])
    slot = _slots(table, lo, hi)
    while todo.size:
        at_lo = table.lo[slot]
        found = (at_lo == lo[todo]) & (table.hi[slot] == hi[todo])
        out[todo[found]] = table.ids[slot[found]]
        more = ~found & (at_lo != 0)
        todo, slot = todo[more], (slot[more] + 1) & mask
    return out


def _insert(table: _Table, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Puts absent keys (repeats allowed) into empty slots; returns [n] int64 the slot of each."""
    mask = table.lo.shape[0] - 1
    t_lo, t_hi = table.lo, table.hi
    out = np.empty(lo.shape[0], np.int64)
    todo = np.arange(lo.shape[0])
    slot = _slots(table, lo, hi)
    while todo.size:
        k_lo, k_hi = lo[todo], hi[todo]
        empty = t_lo[slot] == 0
        t_lo[slot[empty]] = k_lo[empty]  # keys racing for one slot: one of them wins
        t_hi[slot[empty]] = k_hi[empty]
        placed = (t_lo[slot] == k_lo) & (t_hi[slot] == k_hi)
        out[todo[placed]] = slot[placed]
        todo, slot = todo[~placed], (slot[~placed] + 1) & mask
    return out


@dataclasses.dataclass
class _Words:
    """The growing table of distinct words of a counting pass; id = order of first appearance.

    Attributes:
      table: packed words of up to 16 bytes -> id.
      long: longer words (UTF-8 bytes) -> id.
      lo, hi: [capacity] uint64 packed word of each id (0, 0 for long words).
      n: ids assigned.
    """

    table: _Table
    long: dict
    lo: np.ndarray
    hi: np.ndarray
    n: int = 0

    @classmethod
    def empty(cls) -> _Words:
        z = np.zeros(1 << 16, np.uint64)
        return cls(_new_table(1 << 17), {}, z, z.copy())

    def word(self, i: int) -> bytes:
        return _word_at(self, i)


def _word_at(words: _Words | WordCounts, i: int) -> bytes:
    """Word ``i`` of a packed table, as UTF-8 bytes."""
    if words.lo[i] == 0:
        return next(w for w, j in words.long.items() if j == i)
    return np.array([(words.lo[i], words.hi[i])], dtype="<u8,<u8").view("S16")[0]


def _grow(words: _Words, more: int) -> None:
    """Room for ``more`` new ids: longer id arrays (x1.5) and, past ``_MAX_LOAD``, a table twice
    the words, rehashed a million keys at a time (bounded temporaries)."""
    need = words.n + more
    if need > words.lo.shape[0]:
        size = max(need, words.lo.shape[0] * 3 // 2)
        for name in ("lo", "hi"):
            old = getattr(words, name)
            new = np.zeros(size, old.dtype)
            new[: words.n] = old[: words.n]
            setattr(words, name, new)
    if need > _MAX_LOAD * words.table.lo.shape[0]:
        words.table = table = _new_table(2 * need)
        for begin in range(0, words.n, 1 << 20):
            ids = np.arange(begin, min(words.n, begin + (1 << 20)))
            ids = ids[words.lo[ids] != 0]  # long words live in the dict
            table.ids[_insert(table, words.lo[ids], words.hi[ids])] = ids


def _ids_of_chunk(chunk: bytes, words: _Words, add: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """[n] int32 ids of the chunk's tokens (-1: unknown, only when not ``add``), and the tokens
    per line (see :func:`_split`). With ``add``, new words get ids in order of first
    appearance."""
    starts, lengths, per_line = _split(chunk)
    lo, hi = _pack(chunk, starts, lengths)
    long_at = np.flatnonzero(lengths > _SHORT)
    if long_at.size:
        lo[long_at] = 0  # not in the table: looked up below
    ids = _lookup(words.table, lo, hi)
    long_words = [
        chunk[s : s + n]
        for s, n in zip(starts[long_at].tolist(), lengths[long_at].tolist(), strict=True)
    ]
    if add:
        miss = np.flatnonzero(ids < 0)
        if long_at.size:
            miss = np.setdiff1d(miss, long_at, assume_unique=True)
        new_long = {}
        for pos, w in zip(long_at.tolist(), long_words, strict=True):
            if w not in words.long and w not in new_long:
                new_long[w] = pos
        _grow(words, miss.size + len(new_long))
        slots = _insert(words.table, lo[miss], hi[miss]) if miss.size else miss
        # new words: first appearances, from both kinds, numbered in order
        fresh = words.table.ids[slots] < 0
        new_slots, first = np.unique(slots[fresh], return_index=True)
        pos = np.concatenate(
            [miss[fresh][first], np.fromiter(new_long.values(), np.int64, len(new_long))]
        )
        order = np.argsort(pos, kind="stable")
        new_ids = np.empty(pos.shape[0], np.int64)
        new_ids[order] = np.arange(words.n, words.n + pos.shape[0])
        k = new_slots.shape[0]
        words.table.ids[new_slots] = new_ids[:k]
        words.lo[new_ids[:k]] = words.table.lo[new_slots]
        words.hi[new_ids[:k]] = words.table.hi[new_slots]
        for w, i in zip(new_long, new_ids[k:].tolist(), strict=True):
            words.long[w] = i
        words.n += pos.shape[0]
        ids[miss] = words.table.ids[slots]
    if long_at.size:
        get = words.long.get
        ids[long_at] = [get(w, -1) for w in long_words]
    return ids, per_line


def _sentence_lengths(line_tokens: np.ndarray, max_len: int) -> np.ndarray:
    """[S] int64 sentence lengths from [L] tokens per line: empty lines dropped, a line longer
    than ``max_len`` cut into pieces of ``max_len`` (the rest last), as iter_sentences does."""
    n = line_tokens[line_tokens > 0]
    pieces = (n + max_len - 1) // max_len
    out = np.full(int(pieces.sum()), max_len, np.int64)
    out[np.cumsum(pieces) - 1] = n - max_len * (pieces - 1)
    return out


class ByteRange(typing.NamedTuple):
    """Bytes ``[start, end)`` of one corpus file (``end`` None: to its end)."""

    file: Path
    start: int = 0
    end: int | None = None

    @property
    def size(self) -> int:
        end = self.file.stat().st_size if self.end is None else self.end
        return end - self.start


def _scan(
    source: CorpusSource,
    words: _Words,
    add: bool,
    ids_out,
    progress: Callable[[ReadProgress], None] | None,
    phase: str,
    ranges: list[ByteRange] | None = None,
    allow_empty: bool = False,
) -> tuple[np.ndarray, int]:
    """Reads ``source`` once (or only its byte ``ranges``, each starting at a line start and
    ending at a line end or its file's end), writing every token's id (-1: unknown) to
    ``ids_out`` as int32.

    Returns:
      raw: [S] int64 tokens per sentence; and the number of tokens with an id.
    """
    if ranges is None:
        ranges = [ByteRange(f) for f in _list_files(Path(source.path))]
    total_bytes = sum(r.size for r in ranges)
    done_bytes = 0
    tokens = known = 0
    raw_parts: list[np.ndarray] = []
    t0 = time.perf_counter()
    for file, start, end in ranges:
        carry = 0  # tokens so far of the line that is still open
        read = 0
        for chunk, read in _chunks(file, source.lowercase, _BLOCK_BYTES, start, end):
            ids, per_line = _ids_of_chunk(chunk, words, add)
            ids.tofile(ids_out)
            tokens += ids.shape[0]
            known += int(np.count_nonzero(ids >= 0)) if not add else ids.shape[0]
            per_line[0] += carry
            carry = int(per_line[-1])
            raw_parts.append(_sentence_lengths(per_line[:-1], source.max_sentence_len))
            if progress is not None:
                progress(
                    ReadProgress(
                        phase, tokens, done_bytes + read, total_bytes, time.perf_counter() - t0
                    )
                )
        raw_parts.append(_sentence_lengths(np.array([carry]), source.max_sentence_len))
        done_bytes += read
    if tokens == 0 and not allow_empty:
        raise _empty_corpus(source.path)
    if progress is not None:
        progress(
            ReadProgress(phase, tokens, total_bytes, total_bytes, time.perf_counter() - t0, True)
        )
    return np.concatenate([np.zeros(0, np.int64), *raw_parts]), known


def _byte_sentences(
    source: CorpusSource, progress: Callable[[ReadProgress], None] | None = None
) -> Iterator[list[bytes]]:
    """iter_sentences' sentences for the default tokenizer, as UTF-8 bytes tokens (the counting
    pass with ``max_vocab_size``, whose pruning needs them one sentence at a time)."""
    n_tokens = 0
    files = _list_files(Path(source.path))
    total_bytes = sum(f.stat().st_size for f in files)
    done_bytes = 0
    t0 = time.perf_counter()
    for file in files:
        pending: list[bytes] = []
        read = 0
        for chunk, read in _chunks(file, source.lowercase, _BLOCK_BYTES):
            tokens = chunk.split()  # the same tokens as _split: the chunk is normalised
            n_tokens += len(tokens)
            if progress is not None:
                seconds = time.perf_counter() - t0
                progress(ReadProgress("count", n_tokens, done_bytes + read, total_bytes, seconds))
            ends = np.cumsum(_split(chunk)[2]).tolist()
            begin = 0
            for end in ends[:-1]:
                if pending:
                    yield from _cut(pending + tokens[begin:end], source.max_sentence_len)
                    pending = []
                else:
                    yield from _cut(tokens[begin:end], source.max_sentence_len)
                begin = end
            pending.extend(tokens[begin:])
        yield from _cut(pending, source.max_sentence_len)
        done_bytes += read
    if progress is not None:
        seconds = time.perf_counter() - t0
        progress(ReadProgress("count", n_tokens, total_bytes, total_bytes, seconds, True))
    if n_tokens == 0:
        raise _empty_corpus(source.path)


def _entry_folder(
    source: CorpusSource, vocab: Vocab, cache_dir, part: tuple[int, int] | None = None
) -> tuple[Path, str]:
    """The cache entry of the whole corpus, or of byte slice ``part = (s, S)``."""
    spec = f"{_ENCODE_FORMAT}\0{source.cache_key}\0{vocab.fingerprint}"
    if part is not None:
        spec += f"\0slice {part[0]} of {part[1]}"
    key = hashlib.sha256(spec.encode()).hexdigest()[:24]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.name).name or "corpus")[:40]
    if part is not None:
        safe += f".{part[0]}of{part[1]}"
    return cache_root(cache_dir) / "encoded" / f"{safe}-{key}", key


def _load_entry(folder: Path, key: str) -> EncodedCorpus | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        ids = np.load(folder / "ids.npy", mmap_mode="r")
        starts = np.load(folder / "starts.npy")
        raw_starts = np.load(folder / "raw_starts.npy")
        if meta.get("key") == key and ids.dtype == np.int32 and ids.shape[0] == meta["tokens"]:
            return EncodedCorpus(ids, starts, int(meta["raw_words"]), raw_starts)
    except (OSError, ValueError, KeyError):
        pass  # a damaged entry: encode again
    return None


def _write_entry(
    folder: Path,
    key: str,
    source: CorpusSource,
    vocab: Vocab,
    id_file: str,
    to_vocab: np.ndarray,
    raw: np.ndarray,
    n_kept: int,
    allow_empty: bool = False,
) -> EncodedCorpus:
    """Maps the scan's ids to vocabulary ids, drops the rest, and writes the cache entry.

    Args:
      id_file: the scan's [T] int32 ids, -1 for unknown tokens.
      to_vocab: [U + 1] int32 scan id -> vocabulary id or -1; its last entry is -1, so the
        scan's -1 maps to -1 too.
      raw: [S] int64 tokens per sentence.
      n_kept: tokens that map to a vocabulary id.
      allow_empty: a slice of a corpus may hold no in-vocabulary token (the whole may not).
    """
    if n_kept == 0 and not allow_empty:
        raise ValueError(
            f"--corpus {source.name}: no in-vocabulary tokens; check the corpus and vocabulary"
        )
    raw_starts = _offsets(raw)
    starts = np.empty_like(raw_starts)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(id_file, "rb") as src:
            header = {"descr": "<i4", "fortran_order": False, "shape": (n_kept,)}
            np.lib.format.write_array_header_1_0(out, header)
            done = kept = 0
            while (piece := np.fromfile(src, dtype=np.int32, count=_PIECE)).size:
                ids = to_vocab[piece]
                known = ids >= 0
                # sentence starts in this piece: kept tokens before each one
                first, last = np.searchsorted(raw_starts, [done, done + piece.size])
                kept_before = np.concatenate([[0], np.cumsum(known)])
                starts[first:last] = kept + kept_before[raw_starts[first:last] - done]
                out.write(ids[known].tobytes())
                kept += int(kept_before[-1])
                done += piece.size
        if kept != n_kept:
            raise AssertionError(f"encoded {kept} tokens, expected {n_kept}")
        starts[-1] = kept
        os.replace(tmp, folder / "ids.npy")
    finally:
        Path(tmp).unlink(missing_ok=True)
    _atomic_save(folder / "starts.npy", starts)
    _atomic_save(folder / "raw_starts.npy", raw_starts)
    meta = {
        "key": key,
        "format": _ENCODE_FORMAT,
        "corpus": source.name,
        "fingerprint": source.fingerprint,
        "tokens": kept,
        "sentences": int(raw.shape[0]),
        "raw_words": int(raw_starts[-1]),
        "vocab_size": len(vocab),
    }
    _atomic_write_text(folder / "meta.json", iter([json.dumps(meta, indent=1) + "\n"]))
    ids = np.load(folder / "ids.npy", mmap_mode="r")
    return EncodedCorpus(ids, starts, int(raw_starts[-1]), raw_starts)


def _vocab_words(vocab: Vocab) -> _Words:
    """A scan table that knows exactly the vocabulary's words, with their ids."""
    words = _Words.empty()
    _grow(words, len(vocab))
    short, short_ids = [], []
    for i, w in enumerate(vocab.words):
        b = w.encode("utf-8")
        if len(b) > _SHORT:
            words.long[b] = i
        elif b and b"\0" not in b:  # "" and NUL-bearing words never match a token
            short.append(b)
            short_ids.append(i)
    packed = np.array(short, dtype="S16").view("<u8").reshape(-1, 2)
    lo, hi = np.ascontiguousarray(packed[:, 0]), np.ascontiguousarray(packed[:, 1])
    ids = np.asarray(short_ids, np.int64)
    words.table.ids[_insert(words.table, lo, hi)] = ids
    words.lo[ids], words.hi[ids] = lo, hi
    words.n = len(vocab)
    return words


def _scan_file(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=folder, prefix=".scan.", suffix=".ids.tmp")
    os.close(fd)
    return path


def encode_corpus(
    source: CorpusSource,
    vocab: Vocab,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[ReadProgress], None] | None = None,
) -> EncodedCorpus:
    """Encodes ``source`` with ``vocab`` once and memory-maps the cached result afterwards.

    The entry lives in ``<cache>/encoded/<key>/`` with ``ids.npy`` (int32), ``starts.npy``,
    ``raw_starts.npy`` and ``meta.json`` (written last: an entry without it is incomplete). The key
    hashes the corpus fingerprint, tokenizer settings and vocabulary fingerprint.

    Args:
      progress: called with a :class:`ReadProgress` after each block read (e.g.
        :func:`progress_printer`); not called when the entry is in the cache.
    """
    folder, key = _entry_folder(source, vocab, cache_dir)
    cached = _load_entry(folder, key)
    if cached is not None:
        return cached
    if source.token_pattern is not None:  # regex tokens: the sentence-by-sentence reader
        return _encode_slow(source, vocab, folder, key)
    return _encode_scan(source, vocab, folder, key, progress)


def _encode_scan(
    source, vocab, folder, key, progress, ranges: list[ByteRange] | None = None, part=False
) -> EncodedCorpus:
    """Encodes ``source`` (or its byte ``ranges``; ``part``: a slice, which may hold no
    in-vocabulary token) with ``vocab`` in one scan, into the cache entry ``folder``."""
    id_file = _scan_file(folder.parent)
    try:
        with open(id_file, "wb") as f:
            raw, n_kept = _scan(
                source, _vocab_words(vocab), False, f, progress, "encode", ranges, part
            )
        to_vocab = np.append(np.arange(len(vocab), dtype=np.int32), np.int32(-1))
        return _write_entry(folder, key, source, vocab, id_file, to_vocab, raw, n_kept, part)
    finally:
        Path(id_file).unlink(missing_ok=True)


def _vocab_path(source: CorpusSource, cfg: DataConfig, cache_dir) -> Path:
    spec = json.dumps(
        [_ENCODE_FORMAT, source.cache_key, cfg.min_count, cfg.max_vocab_size, cfg.max_final_vocab]
    )
    key = hashlib.sha256(spec.encode()).hexdigest()[:24]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.name).name or "corpus")[:40]
    return cache_root(cache_dir) / "vocab" / f"{safe}-{key}.json"


def _save_vocab_cache(path: Path, vocab: Vocab) -> None:
    doc = {"words": vocab.words, "counts": vocab.counts.tolist(), "total_words": vocab.total_words}
    _atomic_write_text(path, iter([json.dumps(doc, ensure_ascii=False)]))


def _load_vocab_cache(path: Path) -> Vocab | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Vocab(tuple(doc["words"]), np.asarray(doc["counts"], np.int64), doc["total_words"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: count again


def _count_ids(id_file: str, n_words: int) -> np.ndarray:
    """[U] int64 occurrences of each id in the scan's id file (after the scan: a count per
    block would cost O(distinct words) each time)."""
    counts = np.zeros(n_words, np.int64)
    with open(id_file, "rb") as f:
        while (piece := np.fromfile(f, dtype=np.int32, count=_COUNT_PIECE)).size:
            counts += np.bincount(piece, minlength=n_words)
    return counts


def _vocab_of(
    words: _Words | WordCounts, counts: np.ndarray, n_tokens: int, cfg: DataConfig
) -> tuple[Vocab, np.ndarray]:
    """The vocabulary chosen from a counting scan, and [V] the scan ids of its words."""
    order = select_words(counts, n_tokens, cfg, lambda i: words.word(i).decode("utf-8"))
    packed = np.empty(order.shape[0], dtype="<u8,<u8")
    packed["f0"], packed["f1"] = words.lo[order], words.hi[order]
    text = packed.view("S16").tolist()  # trailing NULs dropped: the word's bytes
    long_words = {i: w for w, i in words.long.items()}
    vocab = Vocab(
        words=tuple(
            long_words.get(i, b).decode("utf-8") for i, b in zip(order.tolist(), text, strict=True)
        ),
        counts=counts[order],
        total_words=n_tokens,
    )
    return vocab, order


def prepare_corpus(
    source: CorpusSource,
    cfg: DataConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[ReadProgress], None] | None = None,
) -> tuple[Vocab, EncodedCorpus]:
    """The vocabulary and the encoded corpus, from one pass over the text (both cached).

    Gives exactly ``build_vocab(source.sentences(), cfg)`` and ``encode_corpus(source, vocab)``.
    The pass gives each distinct word an id in order of first appearance while counting, and
    writes those ids to a temp file; the vocabulary is then chosen from the counts, and one
    vectorised take over that file gives the vocabulary ids. With ``max_vocab_size`` (pruning
    needs the counts sentence by sentence) or a ``token_pattern`` it counts first and encodes in
    a second pass.

    Args:
      source: the corpus.
      cfg: uses ``min_count``, ``max_vocab_size``, ``max_final_vocab``.
      progress: called with a :class:`ReadProgress` after each block read (e.g.
        :func:`progress_printer`).

    Returns:
      (vocab, encoded corpus), the latter memory-mapped from the cache.
    """
    check_vocab_config(cfg)
    vocab_path = _vocab_path(source, cfg, cache_dir)
    vocab = _load_vocab_cache(vocab_path)
    if vocab is None and (source.token_pattern is not None or cfg.max_vocab_size is not None):
        if source.token_pattern is None:
            counts, total = count_words(_byte_sentences(source, progress), cfg.max_vocab_size)
            vocab = vocab_from_counter(counts, total, cfg)
        else:
            vocab = build_vocab(source.sentences(), cfg)
    if vocab is not None:
        _save_vocab_cache(vocab_path, vocab)
        return vocab, encode_corpus(source, vocab, cache_dir=cache_dir, progress=progress)
    encoded_root = cache_root(cache_dir) / "encoded"
    id_file = _scan_file(encoded_root)
    try:
        words = _Words.empty()
        with open(id_file, "wb") as f:
            raw, n_tokens = _scan(source, words, True, f, progress, "count+encode")
        counts = _count_ids(id_file, words.n)
        vocab, order = _vocab_of(words, counts, n_tokens, cfg)
        del words  # the table of every distinct word: no longer needed
        _save_vocab_cache(vocab_path, vocab)
        folder, key = _entry_folder(source, vocab, cache_dir)
        cached = _load_entry(folder, key)
        if cached is not None:
            return vocab, cached
        to_vocab = np.full(counts.shape[0] + 1, -1, np.int32)
        to_vocab[order] = np.arange(order.shape[0], dtype=np.int32)
        n_kept = int(vocab.counts.sum())
        return vocab, _write_entry(folder, key, source, vocab, id_file, to_vocab, raw, n_kept)
    finally:
        Path(id_file).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- slices


def chunk_bounds(sentence_starts: np.ndarray, chunk_tokens: int) -> np.ndarray:
    """Sentence indices [n_chunks + 1] cutting the corpus into chunks of ~chunk_tokens tokens.

    Chunk ``c`` holds sentences ``[bounds[c], bounds[c+1])``: it starts at the first sentence
    that starts at or after ``c * chunk_tokens``. Every chunk holds at least one token (empty
    sentences at the end join the last chunk), so every raw word is counted by some chunk.
    """
    starts = np.asarray(sentence_starts)
    n_sent = starts.shape[0] - 1
    total = int(starts[-1])
    marks = np.searchsorted(starts, np.arange(0, total, chunk_tokens), side="left")
    marks = marks[starts[np.minimum(marks, n_sent)] < total]  # no chunk of empty sentences
    return np.unique(np.concatenate([[0], marks, [n_sent]])).astype(np.int64)


def slice_bounds(sentence_starts: np.ndarray, slices: int) -> np.ndarray:
    """Sentence indices [slices + 1] cutting the corpus into ``slices`` runs of whole sentences.

    Slice ``s`` starts at the first sentence that starts at or after ``s * T // slices`` of the
    corpus's ``T`` tokens (the last one takes any empty sentences at the end), so the slices hold
    about equal tokens; a slice is empty where one sentence spans its whole share.
    """
    starts = np.asarray(sentence_starts)
    total = int(starts[-1])
    marks = np.searchsorted(starts, (np.arange(slices + 1) * total) // slices, side="left")
    marks[0], marks[-1] = 0, starts.shape[0] - 1
    return marks.astype(np.int64)


def encoded_digest(encoded: EncodedCorpus) -> str:
    """sha256 of an encoded corpus: its sizes, sentence bounds and ids (about 1 GB/s)."""
    h = hashlib.sha256()
    h.update(np.asarray([encoded.num_tokens, encoded.raw_words], np.int64).tobytes())
    h.update(np.ascontiguousarray(encoded.sentence_starts).tobytes())
    ids, block = encoded.ids, 1 << 24  # memory-mapped: hashed block by block
    for lo in range(0, ids.shape[0], block):
        h.update(np.ascontiguousarray(ids[lo : lo + block]).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class CorpusSlices:
    """An encoded corpus cut into S runs of whole sentences, of which a process holds some.

    Attributes:
      parts: [S] each slice as an :class:`EncodedCorpus` of its own (sentence 0 is the slice's
        first), or None for a slice another process reads.
      raw_words, tokens, sentences: [S] raw tokens, in-vocabulary tokens and sentences of each.
      chunks: [S] chunks of ``chunk_tokens`` in each (:func:`chunk_bounds`): a slice's chunks are
        numbered after those of the slices before it.
      digest: sha256 of the encoded corpus (:func:`encoded_digest` of the whole, or of the
        slices' digests in order for a corpus read by byte slices), None if not computed.
    """

    parts: tuple[EncodedCorpus | None, ...]
    raw_words: tuple[int, ...]
    tokens: tuple[int, ...]
    sentences: tuple[int, ...]
    chunks: tuple[int, ...]
    digest: str | None

    @property
    def num_slices(self) -> int:
        return len(self.parts)


def _view(encoded: EncodedCorpus, a: int, b: int) -> EncodedCorpus:
    """Sentences ``[a, b)`` of ``encoded`` as a corpus of their own (its raw words as the
    whole counts them)."""
    if (a, b) == (0, encoded.num_sentences):
        return encoded
    starts = encoded.sentence_starts
    raw = np.asarray([encoded.raw_before(i) for i in (a, b)], np.int64)
    if encoded.raw_starts is not None:
        raw_starts = encoded.raw_starts[a : b + 1] - raw[0]
    else:  # the whole spreads raw words in proportion to tokens: so do its pieces
        t = starts[a : b + 1]
        raw_starts = (t * encoded.raw_words) // max(1, encoded.num_tokens) - raw[0]
    return EncodedCorpus(
        encoded.ids[starts[a] : starts[b]],
        starts[a : b + 1] - starts[a],
        int(raw[1] - raw[0]),
        raw_starts,
    )


def cut_encoded(
    encoded: EncodedCorpus, slices: int, chunk_tokens: int, digest: str | None = None
) -> CorpusSlices:
    """The whole encoded corpus cut into ``slices`` runs of about equal tokens
    (:func:`slice_bounds`), every one held; ``digest``: its :func:`encoded_digest`, if known."""
    cuts = slice_bounds(encoded.sentence_starts, slices).tolist()
    parts = tuple(_view(encoded, a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    return _slices_of(parts, digest, chunk_tokens)


def _slices_of(parts, digest: str | None, chunk_tokens: int) -> CorpusSlices:
    def chunks(p: EncodedCorpus) -> int:
        return 0 if p.num_sentences == 0 else chunk_bounds(p.sentence_starts, chunk_tokens).size - 1

    return CorpusSlices(
        parts=tuple(parts),
        raw_words=tuple(p.raw_words for p in parts),
        tokens=tuple(p.num_tokens for p in parts),
        sentences=tuple(p.num_sentences for p in parts),
        chunks=tuple(chunks(p) for p in parts),
        digest=digest,
    )


def files_identity(source: CorpusSource, sample: int = 1 << 16) -> list[tuple[str, int, str]]:
    """Each corpus file's name, size and sha256 of its first and last ``sample`` bytes: what
    the processes of a multi-host run compare before each reads only its own slices (hashing
    every file whole on every host would cost the reading the slices save)."""
    out = []
    for file in _list_files(Path(source.path)):
        size = file.stat().st_size
        h = hashlib.sha256()
        with open(file, "rb") as f:
            h.update(f.read(sample))
            f.seek(max(0, size - sample))
            h.update(f.read(sample))
        out.append((file.name, size, h.hexdigest()))
    return out


def splits_by_bytes(source: CorpusSource, cfg: DataConfig) -> bool:
    """Whether each byte slice of ``source`` can be counted and encoded on its own: plain
    (uncompressed) files, the default tokenizer, and no ``max_vocab_size`` (whose pruning
    counts in corpus order)."""
    if source.token_pattern is not None or cfg.max_vocab_size is not None:
        return False
    files = _list_files(Path(source.path))
    return not any(f.suffix.lower() in _COMPRESSED for f in files)


def _line_start_at_or_after(file: Path, offset: int, size: int) -> int:
    """The first offset >= ``offset`` in ``file`` that starts a line (or ``size``)."""
    if offset <= 0:
        return 0
    with open(file, "rb") as f:
        f.seek(offset - 1)
        pos = offset - 1
        while block := f.read(1 << 16):
            ends = [i for i in (block.find(b"\n"), block.find(b"\r")) if i >= 0]
            if ends:
                return pos + min(ends) + 1
            pos += len(block)
    return size


def byte_slices(source: CorpusSource, slices: int) -> list[list[ByteRange]]:
    """The corpus files, taken end to end, cut into ``slices`` runs of whole lines.

    Slice ``s`` starts at the first line that starts at or after byte ``s * N // slices`` of the
    ``N`` bytes (a file's start is a line start), so the slices hold about equal bytes; a slice
    is empty where one line spans its whole share. Each slice is a list of byte ranges, at most
    one per file."""
    files = _list_files(Path(source.path))
    sizes = [f.stat().st_size for f in files]
    ends = np.cumsum([0, *sizes]).tolist()
    total = ends[-1]
    cuts = [0]
    for s in range(1, slices):
        mark = s * total // slices
        f = int(np.searchsorted(ends, mark, side="right")) - 1  # the file holding byte `mark`
        cut = (
            total
            if f >= len(files)
            else ends[f] + _line_start_at_or_after(files[f], mark - ends[f], sizes[f])
        )
        cuts.append(max(cut, cuts[-1]))
    cuts.append(total)
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        ranges = []
        for f, file in enumerate(files):
            a, b = max(lo, ends[f]), min(hi, ends[f + 1])
            if a < b:
                ranges.append(ByteRange(file, a - ends[f], b - ends[f]))
        out.append(ranges)
    return out


class WordCounts(typing.NamedTuple):
    """Distinct words packed as the counting table packs them, with their counts (what the
    processes of a multi-host run exchange to build one vocabulary).

    Attributes:
      lo, hi: [U] uint64 each word's first 16 UTF-8 bytes, zero-padded; (0, 0) for a word of
        more than 16 bytes (a word's first byte is never 0, so ``lo == 0`` marks those).
      long: the words of more than 16 bytes -> their index.
      counts: [U] int64.
      first: [U] int64 position of each word's first appearance in the whole corpus (its
        first entry's (piece, index) in corpus order), where known; a piece's own table is in
        order of first appearance and needs none.
    """

    lo: np.ndarray
    hi: np.ndarray
    long: dict[bytes, int]
    counts: np.ndarray
    first: np.ndarray | None = None

    @classmethod
    def of(cls, words: list[bytes], counts) -> WordCounts:
        """From the words' UTF-8 bytes (none empty, none holding whitespace or NUL)."""
        lo, hi = np.zeros(len(words), np.uint64), np.zeros(len(words), np.uint64)
        short = [i for i, w in enumerate(words) if len(w) <= _SHORT]
        if short:
            packed = np.array([words[i] for i in short], dtype="S16").view("<u8").reshape(-1, 2)
            lo[short], hi[short] = packed[:, 0], packed[:, 1]
        long = {w: i for i, w in enumerate(words) if len(w) > _SHORT}
        return cls(lo, hi, long, np.asarray(counts, np.int64).reshape(-1))

    def word(self, i: int) -> bytes:
        return _word_at(self, i)

    def to_bytes(self, header: list[int]) -> bytes:
        """Serialised, after ``header`` (a few int64s the reader gets back)."""
        text = b"\n".join(self.long)  # words hold no whitespace
        ids = np.fromiter(self.long.values(), np.int64, len(self.long))
        first = np.zeros(0, np.int64) if self.first is None else self.first
        sizes = [len(self.lo), len(ids), len(text), len(first)]
        head = np.asarray([len(header), *header, *sizes], np.int64)
        arrays = (self.lo, self.hi, np.asarray(self.counts, np.int64), ids, first)
        return head.tobytes() + b"".join(np.asarray(a).tobytes() for a in arrays) + text

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[WordCounts, list[int]]:
        k = int(np.frombuffer(data[:8], np.int64)[0])
        head = np.frombuffer(data[8 : 8 * (k + 5)], np.int64).tolist()
        header, (n, n_long, n_text, n_first) = head[:k], head[k:]
        at = 8 * (k + 5)

        def take(count: int, dtype) -> np.ndarray:
            nonlocal at
            out = np.frombuffer(data[at : at + 8 * count], dtype)
            at += 8 * count
            return out

        lo, hi, counts = take(n, np.uint64), take(n, np.uint64), take(n, np.int64)
        ids, first = take(n_long, np.int64), take(n_first, np.int64)
        words = data[at : at + n_text].split(b"\n") if n_long else []
        long = dict(zip(words, ids.tolist(), strict=True))
        return cls(lo, hi, long, counts, first if n_first or not n else None), header

    def take(self, idx: np.ndarray) -> WordCounts:
        """The words ``idx``, in that order."""
        at = np.full(self.lo.shape[0], -1, np.int64)
        at[idx] = np.arange(idx.shape[0])
        long = {w: int(at[i]) for w, i in self.long.items() if at[i] >= 0}
        first = None if self.first is None else self.first[idx]
        return WordCounts(self.lo[idx], self.hi[idx], long, self.counts[idx], first)


def _group(lo, hi, counts, pos, longs: list[tuple[int, bytes, int]]) -> WordCounts:
    """The distinct words of some entries (short ones as packed keys; long ones as (position,
    word, count)), each with its summed count and its first entry's position, in order of
    those positions (positions are distinct). Vectorised: one sort of the packed keys."""
    if pos.size and not np.all(pos[1:] > pos[:-1]):
        by_pos = np.argsort(pos, kind="stable")
        lo, hi, counts, pos = lo[by_pos], hi[by_pos], counts[by_pos], pos[by_pos]
    order = np.lexsort((hi, lo))  # equal keys next to each other, first entry first (stable)
    lo_s, hi_s = lo[order], hi[order]
    new = np.ones(order.shape[0], bool)
    new[1:] = (lo_s[1:] != lo_s[:-1]) | (hi_s[1:] != hi_s[:-1])
    group = np.cumsum(new) - 1
    # exact below 2^53 tokens
    short_counts = np.bincount(group, weights=counts[order].astype(np.float64))
    first_long: dict[bytes, list[int]] = {}
    for p, w, c in sorted(longs):
        first_long.setdefault(w, [p, 0])[1] += c
    firsts = np.concatenate(
        [pos[order][new], np.asarray([v[0] for v in first_long.values()], np.int64)]
    )
    rank = np.argsort(firsts, kind="stable")
    n_short = int(new.sum())
    lo_all = np.concatenate([lo_s[new], np.zeros(len(first_long), np.uint64)])
    hi_all = np.concatenate([hi_s[new], np.zeros(len(first_long), np.uint64)])
    counts_all = np.concatenate(
        [np.rint(short_counts).astype(np.int64), [v[1] for v in first_long.values()]]
    ).astype(np.int64)
    new_index = np.empty(rank.shape[0], np.int64)
    new_index[rank] = np.arange(rank.shape[0])
    long = {w: int(new_index[n_short + k]) for k, w in enumerate(first_long)}
    return WordCounts(lo_all[rank], hi_all[rank], long, counts_all[rank], firsts[rank])


def _entries(pieces: list[WordCounts], keep=None) -> tuple:
    """The entries of the pieces (those ``keep(piece)``, a [U] bool mask, selects), with their
    positions in corpus order (a piece's ``first``, else its place after the pieces before it),
    as :func:`_group` takes them: (lo, hi, counts, pos, longs)."""
    los, his, cs, ps, longs = [], [], [], [], []
    off = 0
    for p in pieces:
        mask = np.ones(p.lo.shape[0], bool) if keep is None else keep(p)
        pos = np.arange(off, off + p.lo.shape[0]) if p.first is None else p.first
        sel = np.flatnonzero(mask & (p.lo != 0))
        los.append(p.lo[sel])
        his.append(p.hi[sel])
        cs.append(p.counts[sel])
        ps.append(pos[sel])
        longs.extend((int(pos[i]), w, int(p.counts[i])) for w, i in p.long.items() if mask[i])
        off += p.lo.shape[0]
    kinds = (np.uint64, np.uint64, np.int64, np.int64)
    cat = [
        np.concatenate([np.zeros(0, k), *x]) for k, x in zip(kinds, (los, his, cs, ps), strict=True)
    ]
    return (*cat, longs)


def merge_counts(pieces: list[WordCounts]) -> WordCounts:
    """Word counts of consecutive pieces of a corpus merged as one scan would have counted them.

    A word's first appearance in the whole is its first appearance in the first piece that
    holds it, so ordering the distinct words by (piece, index in piece) of their first entry
    gives one scan's order.

    Args:
      pieces: in corpus order, each piece's words in order of first appearance and counts.
    Returns:
      The distinct words in order of first appearance over the whole, counts summed, with their
      positions in ``first``.
    """
    return _group(*_entries(pieces))


def _by_first(pieces: list[WordCounts]) -> WordCounts:
    """Pieces of distinct words (each word in one piece) as one table, in order of ``first``."""
    lo = np.concatenate([np.zeros(0, np.uint64), *(p.lo for p in pieces)])
    hi = np.concatenate([np.zeros(0, np.uint64), *(p.hi for p in pieces)])
    counts = np.concatenate([np.zeros(0, np.int64), *(p.counts for p in pieces)])
    first = np.concatenate([np.zeros(0, np.int64), *(p.first for p in pieces)])
    long, off = {}, 0
    for p in pieces:
        long.update({w: off + i for w, i in p.long.items()})
        off += p.lo.shape[0]
    return WordCounts(lo, hi, long, counts, first).take(np.argsort(first, kind="stable"))


def _bucket(words: WordCounts, buckets: int) -> np.ndarray:
    """[U] int64 the bucket of each word, the same on every process (not Python's salted hash)."""
    mixed = (words.lo * np.uint64(0x9E3779B97F4A7C15)) ^ (words.hi * np.uint64(0xC2B2AE3D27D4EB4F))
    out = ((mixed >> np.uint64(33)) % np.uint64(buckets)).astype(np.int64)
    for w, i in words.long.items():
        out[i] = zlib.crc32(w) % buckets
    return out


def _merged_vocab(
    pieces: list[WordCounts], me: int, share, total: int, cfg: DataConfig
) -> tuple[Vocab, WordCounts]:
    """The vocabulary of the pieces' merged counts (and its words, packed, in vocabulary
    order), the merging split among the processes.

    Each of the P processes merges the words of one hash bucket over every piece (so each sorts
    about 1/P of the entries) and shares the words of its bucket that can enter the vocabulary
    (count >= min_count; and its most frequent word, which the empty-vocabulary error names);
    every process then orders those by first appearance and chooses the vocabulary from them,
    exactly as from the whole table: the words left out could never be chosen, and where
    ``max_final_vocab`` ranks the counts, the words it ranks in are among those shared."""
    n = len(pieces) if share is not None else 1
    mine = _group(*_entries(pieces, lambda p: _bucket(p, n) == me))
    keep = mine.counts >= cfg.min_count
    if mine.counts.size:
        keep[int(np.argmax(mine.counts))] = True
    shared = _gathered(share if n > 1 else None, mine.take(np.flatnonzero(keep)).to_bytes([]))
    table = _by_first([WordCounts.from_bytes(d)[0] for d in shared])
    vocab, order = _vocab_of(table, table.counts, total, cfg)
    return vocab, table.take(order)


def _vocab_ids(vocab: WordCounts, words: WordCounts) -> np.ndarray:
    """[U] int32 the index in ``vocab`` (the vocabulary's words, packed) of each of ``words``
    (-1: not in it)."""
    short_v = np.flatnonzero(vocab.lo != 0)
    table = _new_table(2 * short_v.size + 1)  # at most half full
    table.ids[_insert(table, vocab.lo[short_v], vocab.hi[short_v])] = short_v
    ids = np.full(words.lo.shape[0], -1, np.int32)
    short = np.flatnonzero(words.lo != 0)
    ids[short] = _lookup(table, words.lo[short], words.hi[short])
    for w, i in words.long.items():
        ids[i] = vocab.long.get(w, -1)
    return ids


def _gathered(share: Callable[[bytes], list[bytes]] | None, mine: bytes) -> list[bytes]:
    return [mine] if share is None else share(mine)


def prepare_slices(
    source: CorpusSource,
    cfg: DataConfig,
    *,
    slices: int,
    read: range,
    share: Callable[[bytes], list[bytes]] | None = None,
    vocab: Vocab | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[ReadProgress], None] | None = None,
) -> tuple[Vocab, CorpusSlices]:
    """The vocabulary and this process's byte slices, each counted and encoded on its own.

    The corpus is cut into ``slices`` byte slices (:func:`byte_slices`; the source must pass
    :func:`splits_by_bytes`). This process reads only the slices ``read``: one pass counts and
    encodes them (:func:`prepare_corpus`'s pass, over their bytes); the counts of every process
    are merged in slice order (:func:`merge_counts`; each process merges one hash bucket of the
    words and shares its vocabulary candidates), which gives exactly the vocabulary of one scan
    of the whole corpus; each slice's ids are cached apart. With a cached vocabulary on
    every process (or ``vocab`` given) only the encoding pass runs.

    Args:
      slices: S.
      read: the slices this process reads, a block of consecutive ones.
      share: ``share(mine)`` gives every process's ``mine`` in process order (an all-gather;
        the processes' ``read`` blocks in order cover ``range(slices)``); None when this process
        reads every slice.
      vocab: a vocabulary to encode with (skips counting).
      progress: as for :func:`prepare_corpus`, over this process's bytes.

    Returns:
      (vocab, slices), the read slices memory-mapped from the cache.
    """
    check_vocab_config(cfg)
    if share is None and read != range(slices):
        raise ValueError(f"reading slices {read} of {slices} needs `share` (an all-gather)")
    ranges = byte_slices(source, slices)
    vocab_path = _vocab_path(source, cfg, cache_dir)
    if vocab is None:
        vocab = _load_vocab_cache(vocab_path)
        have = b"1" if vocab is not None else b"0"
        if b"0" in _gathered(share, have):  # somebody must count: everybody counts
            vocab = None
    mine: dict[int, EncodedCorpus] = {}
    if vocab is None:
        vocab = _count_slices(source, cfg, ranges, read, share, cache_dir, progress, mine)
        _save_vocab_cache(vocab_path, vocab)
    for s in read:
        if s not in mine:
            mine[s] = _encode_slice(source, vocab, ranges[s], (s, slices), cache_dir, progress)
    sizes = {}
    for data in _gathered(share, json.dumps(_sizes(mine, cfg.chunk_tokens)).encode()):
        sizes.update({int(s): v for s, v in json.loads(data).items()})
    if sorted(sizes) != list(range(slices)):
        raise ValueError(f"the processes read slices {sorted(sizes)}, not each of {slices} once")
    raw, tokens, sentences, chunks, digests = zip(*(sizes[s] for s in range(slices)), strict=True)
    digest = hashlib.sha256("\0".join(digests).encode()).hexdigest()
    parts = tuple(mine.get(s) for s in range(slices))
    return vocab, CorpusSlices(parts, raw, tokens, sentences, chunks, digest)


def _sizes(parts: dict[int, EncodedCorpus], chunk_tokens: int) -> dict[int, list]:
    one = _slices_of(list(parts.values()), None, chunk_tokens)
    return {
        s: [one.raw_words[i], one.tokens[i], one.sentences[i], one.chunks[i], encoded_digest(p)]
        for i, (s, p) in enumerate(parts.items())
    }


def _count_slices(source, cfg, ranges, read, share, cache_dir, progress, out) -> Vocab:
    """Counts and encodes the slices ``read`` in one pass, merges every process's counts into
    the vocabulary, and writes each read slice's cache entry into ``out``."""
    encoded_root = cache_root(cache_dir) / "encoded"
    words = _Words.empty()
    scans = []  # per read slice: (id file, raw sentence lengths)
    try:
        total = sum(r.size for s in read for r in ranges[s])
        done = [0]

        def show(p: ReadProgress) -> None:  # the pass over all this process's slices
            if progress is not None:
                progress(dataclasses.replace(p, bytes_read=done[0] + p.bytes_read,
                                             bytes_total=total, done=False))  # fmt: skip

        n_tokens = 0
        t0 = time.perf_counter()
        for s in read:
            id_file = _scan_file(encoded_root)
            scans.append((id_file, None))
            with open(id_file, "wb") as f:
                raw, n = _scan(source, words, True, f, show, "count+encode", ranges[s], True)
            scans[-1] = (id_file, raw)
            n_tokens += n
            done[0] += sum(r.size for r in ranges[s])
        if progress is not None:
            progress(ReadProgress("count+encode", n_tokens, total, total,
                                  time.perf_counter() - t0, True))  # fmt: skip
        per_slice = [_count_ids(f, words.n) for f, _ in scans]
        counts = np.sum(per_slice, axis=0) if per_slice else np.zeros(words.n, np.int64)
        n = words.n
        mine = WordCounts(words.lo[:n], words.hi[:n], words.long, counts)
        shared = _gathered(share, mine.to_bytes([read.start, n_tokens]))
        del words
        pieces, headers = zip(*(WordCounts.from_bytes(d) for d in shared), strict=True)
        all_tokens = sum(h[1] for h in headers)
        if all_tokens == 0:
            raise _empty_corpus(source.path)
        me = [h[0] for h in headers].index(read.start)
        vocab, packed = _merged_vocab(list(pieces), me, share, all_tokens, cfg)
        to_local = np.append(_vocab_ids(packed, pieces[me]), np.int32(-1))  # scan id -> vocab id
        for s, (id_file, raw), c in zip(read, scans, per_slice, strict=True):
            n_kept = int(c[to_local[:-1] >= 0].sum())
            folder, key = _entry_folder(source, vocab, cache_dir, (s, len(ranges)))
            out[s] = _write_entry(folder, key, source, vocab, id_file, to_local, raw, n_kept, True)
        return vocab
    finally:
        for id_file, _ in scans:
            Path(id_file).unlink(missing_ok=True)


def _encode_slice(source, vocab, ranges, part, cache_dir, progress) -> EncodedCorpus:
    """One byte slice encoded with ``vocab`` (or its cache entry)."""
    folder, key = _entry_folder(source, vocab, cache_dir, part)
    cached = _load_entry(folder, key)
    if cached is not None:
        return cached
    return _encode_scan(source, vocab, folder, key, progress, ranges, part=True)
