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

Cache folder: ``$W2V_JAX_CACHE``, else ``~/.cache/w2v_jax``.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from w2v_jax.fileio import atomic_write
from w2v_jax.vocab import Vocab

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
        except (OSError, EOFError, lzma.LZMAError) as e:
            raise ValueError(
                f"--corpus {file}: cannot read ({e}); pass a readable corpus"
            ) from None
    if n_tokens == 0:
        raise ValueError(f"--corpus {root}: empty corpus (no tokens); pass a non-empty text corpus")


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


def _gensim_datapath(name: str) -> Path:
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise ValueError(
            f"corpus {name!r} ships with gensim, which is not installed: pip install gensim, "
            "or pass --corpus PATH"
        ) from None
    path = Path(datapath(GENSIM_FILES[name]))
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


def encode_corpus(
    source: CorpusSource, vocab: Vocab, *, cache_dir: str | os.PathLike | None = None
) -> EncodedCorpus:
    """Encodes ``source`` with ``vocab`` once and memory-maps the cached result afterwards.

    The entry lives in ``<cache>/encoded/<key>/`` with ``ids.npy`` (int32), ``starts.npy``,
    ``raw_starts.npy`` and ``meta.json`` (written last: an entry without it is incomplete). The key
    hashes the corpus fingerprint, tokenizer settings and vocabulary fingerprint.
    """
    key = hashlib.sha256(
        f"{_ENCODE_FORMAT}\0{source.cache_key}\0{vocab.fingerprint}".encode()
    ).hexdigest()[:24]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.name).name or "corpus")[:40]
    folder = cache_root(cache_dir) / "encoded" / f"{safe}-{key}"
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            ids = np.load(folder / "ids.npy", mmap_mode="r")
            starts = np.load(folder / "starts.npy")
            raw_starts = np.load(folder / "raw_starts.npy")
            if meta.get("key") == key and ids.dtype == np.int32 and ids.shape[0] == meta["tokens"]:
                return EncodedCorpus(ids, starts, int(meta["raw_words"]), raw_starts)
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry: encode again
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
