"""Tests `../w2v_jax/corpus.py`: reading, named corpora, bad input, the encoded-corpus cache."""

import bz2
import dataclasses
import gzip
import io
import lzma
import os
import subprocess
import sys
import urllib.error

import numpy as np
import pytest

from w2v_jax import corpus as corpus_mod
from w2v_jax.config import DataConfig
from w2v_jax.corpus import (
    EncodedCorpus,
    encode_corpus,
    encode_sentences,
    iter_sentences,
    resolve_corpus,
)
from w2v_jax.vocab import build_vocab

pytestmark = pytest.mark.usefixtures("fresh_cache")  # conftest.py


def _small_blocks(monkeypatch, size):
    """Read blocks of ``size`` (iter_sentences' characters, the byte reader's bytes)."""
    monkeypatch.setattr(corpus_mod, "_BLOCK_CHARS", size)
    monkeypatch.setattr(corpus_mod, "_BLOCK_BYTES", size)


def write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_the_written_out_whitespace_is_str_isspace_beyond_ascii():
    # the byte tokenizer splits where str.split() does; the list is spelled out for start-up speed
    scanned = "".join(
        c for c in map(chr, range(0x110000)) if c.isspace() and c not in " \t\n\x0b\x0c\r"
    )
    assert corpus_mod._OTHER_WS == scanned


def test_one_sentence_per_line(tmp_path):
    p = write(tmp_path / "c.txt", "the cat sat\n\n  on\tthe mat  \nThe End\n")
    assert list(iter_sentences(p)) == [["the", "cat", "sat"], ["on", "the", "mat"], ["The", "End"]]
    assert list(iter_sentences(p, lowercase=True))[-1] == ["the", "end"]
    assert list(iter_sentences(p, token_pattern=r"[a-z]+"))[-1] == ["he", "nd"]


def test_folder_reads_files_in_sorted_order_and_skips_hidden(tmp_path):
    write(tmp_path / "d" / "b.txt", "two\n")
    write(tmp_path / "d" / "a.txt", "one\n")
    write(tmp_path / "d" / ".hidden", "zero\n")
    assert list(iter_sentences(tmp_path / "d")) == [["one"], ["two"]]


@pytest.mark.parametrize("block_chars", [None, 3, 6, 37, 64])
def test_long_line_is_cut_at_max_sentence_len(tmp_path, monkeypatch, block_chars):
    if block_chars:  # exercise the block-wise path for lines longer than a read block
        _small_blocks(monkeypatch, block_chars)
    words = [f"w{i}" for i in range(1003)]
    p = write(tmp_path / "text8", " " + " ".join(words) + "\nshort line\n")
    sents = list(iter_sentences(p, max_sentence_len=100))
    assert [len(s) for s in sents] == [100] * 10 + [3, 2]
    assert sum(sents[:11], []) == words
    assert sents[-1] == ["short", "line"]


def test_gz_and_bz2_are_transparent(tmp_path):
    text = "ein zwei drei\nvier\n"
    write(tmp_path / "c.gz", gzip.compress(text.encode()), mode="b")
    write(tmp_path / "c.bz2", bz2.compress(text.encode()), mode="b")
    for name in ("c.gz", "c.bz2"):
        assert list(iter_sentences(tmp_path / name)) == [["ein", "zwei", "drei"], ["vier"]]


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.txt", b"", "empty corpus"),
        ("blank.txt", b" \n\n\t\n", "empty corpus"),
        ("nul.bin", b"abc\x00\x01\x02def\n", "binary file"),
        ("latin1.txt", "caf\u00e9 cr\u00e8me\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_flag(tmp_path, name, content, match):
    p = write(tmp_path / name, content, mode="b")
    with pytest.raises(ValueError, match=match) as e:
        list(iter_sentences(p))
    assert "--corpus" in str(e.value) and "\n" not in str(e.value)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="--corpus .*no such file") as e:
        list(iter_sentences(tmp_path / "nope.txt"))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="--corpus .*neither|no such file"):
        resolve_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="--corpus .*no files"):
        list(iter_sentences(tmp_path / "emptydir"))


def test_resolve_path_fingerprint_tracks_the_file(tmp_path):
    p = write(tmp_path / "c.txt", "a b c\n")
    s1 = resolve_corpus(str(p))
    assert s1.path == str(p) and list(s1.sentences()) == [["a", "b", "c"]]
    assert resolve_corpus(str(p)).fingerprint == s1.fingerprint
    write(p, "a b c d\n")
    os.utime(p, ns=(1, 1))
    assert resolve_corpus(str(p)).fingerprint != s1.fingerprint
    low = resolve_corpus(str(p), lowercase=True)
    assert low.cache_key != resolve_corpus(str(p)).cache_key


def test_named_gensim_corpora_resolve():
    pytest.importorskip("gensim")
    lee = resolve_corpus("lee")
    assert lee.path.endswith("lee_background.cor") and lee.fingerprint.startswith("lee:")
    first = next(iter(lee.sentences()))
    assert first[:3] == ["Hundreds", "of", "people"]
    assert resolve_corpus("head500").path.endswith("head500.noblanks.cor")


def test_bundled_files_are_found_without_importing_gensim():
    """Finding gensim's data files must not import gensim (and scipy.stats with it): the
    README's command would pay that at every start."""
    pytest.importorskip("gensim")
    code = """
import sys
from w2v_jax import corpus, evaluate
lee = corpus.resolve_corpus("lee").path
google = evaluate.resolve_dataset("questions-words.txt")
print("gensim" in sys.modules, "scipy.stats" in sys.modules)
from gensim.test.utils import datapath
print(lee == datapath("lee_background.cor"), google == datapath("questions-words.txt"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True", "True"]


def test_wiki_sample_is_tokenised_once_into_the_cache(tmp_path, monkeypatch):
    gensim_corpora = pytest.importorskip("gensim.corpora")
    calls = []

    class FakeWiki:
        def __init__(self, path, dictionary):
            calls.append(path)
            assert dictionary == {}

        def get_texts(self):
            yield ["anarchism", "is", "a", "political", "philosophy"]
            yield ["autism", "is"]

    monkeypatch.setattr(gensim_corpora, "WikiCorpus", FakeWiki)
    src = resolve_corpus("wiki-sample", cache_dir=tmp_path / "c")
    assert list(src.sentences()) == [
        ["anarchism", "is", "a", "political", "philosophy"],
        ["autism", "is"],
    ]
    again = resolve_corpus("wiki-sample", cache_dir=tmp_path / "c")
    assert len(calls) == 1 and again.path == src.path and again.fingerprint == src.fingerprint
    assert corpus_mod.WIKI_SAMPLE_FILE in calls[0]


def test_gensim_missing_gives_install_hint(monkeypatch):
    for mod in ("gensim", "gensim.test", "gensim.test.utils"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ValueError, match="pip install gensim.*--corpus PATH"):
        resolve_corpus("lee")


def test_text8_offline_says_pass_corpus_path(tmp_path, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(corpus_mod, "_open_url", offline)
    with pytest.raises(ValueError, match="text8 .*--corpus PATH") as e:
        resolve_corpus("text8", cache_dir=tmp_path / "c")
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "c" / "corpora").glob("*.tmp"))  # no debris


def test_text8_download_checksum_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "_open_url", lambda url: io.BytesIO(b"not text8"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        resolve_corpus("text8", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "corpora" / "text8.zip").exists()


def test_unknown_name():
    with pytest.raises(ValueError, match="not a named corpus"):
        resolve_corpus("no-such-corpus")


# ----------------------------------------------------------------------------- encoding


def _source(tmp_path, text, **kw):
    p = write(tmp_path / "corpus.txt", text)
    return resolve_corpus(str(p), **kw)


def test_encode_drops_unknown_words_and_keeps_raw_counts(tmp_path):
    src = _source(tmp_path, "a b zz a\nzz zz\nb a c\n")
    vocab = build_vocab([["a", "a", "b", "c", "b"]], dataclasses.replace(DataConfig(), min_count=2))
    enc = encode_corpus(src, vocab, cache_dir=tmp_path / "cache")
    assert vocab.words == ("a", "b")
    np.testing.assert_array_equal(enc.ids, [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(enc.sentence_starts, [0, 3, 3, 5])  # all-OOV line kept empty
    assert enc.raw_words == 9
    np.testing.assert_array_equal(enc.raw_starts, [0, 4, 6, 9])
    assert enc.ids.dtype == np.int32 and enc.sentence_starts.dtype == np.int64


def test_encode_cache_round_trips_and_is_memory_mapped(tmp_path, monkeypatch):
    src = _source(tmp_path, "x y z x\ny y\n" * 50)
    vocab = build_vocab(src.sentences(), dataclasses.replace(DataConfig(), min_count=1))
    first = encode_corpus(src, vocab)
    calls = []
    real = corpus_mod._scan
    monkeypatch.setattr(corpus_mod, "_scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = encode_corpus(src, vocab)
    assert calls == []  # served from the cache
    assert isinstance(second.ids, np.memmap)
    np.testing.assert_array_equal(second.ids, first.ids)
    np.testing.assert_array_equal(second.sentence_starts, first.sentence_starts)
    assert second.raw_words == first.raw_words == 300
    expected = encode_sentences(src.sentences(), vocab)
    np.testing.assert_array_equal(second.ids, expected.ids)
    np.testing.assert_array_equal(second.raw_starts, expected.raw_starts)


def test_encode_cache_is_invalidated_by_settings_vocab_and_file(tmp_path, monkeypatch):
    src = _source(tmp_path, "A b a\nb B\n")
    data = dataclasses.replace(DataConfig(), min_count=1)
    vocab = build_vocab(src.sentences(), data)
    base = encode_corpus(src, vocab)
    calls = []
    real = corpus_mod._scan
    monkeypatch.setattr(corpus_mod, "_scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    # tokenizer settings
    low = resolve_corpus(src.path, lowercase=True)
    enc = encode_corpus(low, vocab)
    assert len(calls) == 1
    a, b = vocab.index["a"], vocab.index["b"]
    np.testing.assert_array_equal(enc.ids, [a, b, a, b, b])  # "A b a / b B" lowercased
    # vocabulary
    vocab2 = build_vocab(low.sentences(), data)
    encode_corpus(low, vocab2)
    assert len(calls) == 2
    # the file itself
    write(tmp_path / "corpus.txt", "A A A\n")
    os.utime(src.path, ns=(2, 2))
    enc = encode_corpus(resolve_corpus(src.path), vocab)
    assert len(calls) == 3
    np.testing.assert_array_equal(enc.ids, [vocab.index["A"]] * 3)
    assert base.num_tokens == 5


def test_encode_with_no_known_word_is_an_error(tmp_path):
    src = _source(tmp_path, "p q r\n")
    vocab = build_vocab([["a"]], dataclasses.replace(DataConfig(), min_count=1))
    with pytest.raises(ValueError, match="no in-vocabulary tokens"):
        encode_corpus(src, vocab, cache_dir=tmp_path / "c")


def test_encoded_corpus_checks_offsets():
    with pytest.raises(ValueError, match="sentence_starts"):
        EncodedCorpus(np.zeros(3, np.int32), np.array([0, 2]), 3)


def test_lee_end_to_end():
    pytest.importorskip("gensim")
    src = resolve_corpus("lee")
    vocab = build_vocab(src.sentences(), DataConfig())
    enc = encode_sentences(src.sentences(), vocab)
    assert vocab.words[:3] == ("the", "to", "of")
    assert enc.raw_words == vocab.total_words
    assert enc.num_tokens == int(vocab.counts.sum())  # every kept token is in the vocabulary


# ----------------------------------------------------------------------------- one-pass prepare
#
# prepare_corpus / encode_corpus read bytes with numpy; the reference is the straightforward
# path: build_vocab over iter_sentences, then encode_sentences. Both must agree exactly.

_TRICKY = [
    "Der große Hund",  # non-ASCII words
    "ΟΔΟΣ ΟΔΟΣ. σοφόΣ Σ",  # final sigma when lowercased
    "a\u00a0b c\u3000d e\u2028f g\x85h",  # Unicode whitespace str.split() splits at
    "ctl\x1csep\x1dx\x1ey\x1fz",  # ASCII separators str.split() splits at, bytes.split() not
    "tab\tv\x0bf\x0cend",
    "crlf line\r\nlone cr\rthen more",
    "\ufeffbom first",
    "exactly8 exactly16exactly1 exactly17exactly17 " + "long" * 9 + " " + "lo" * 40,
    "Ünïcödé-words-that-are-long ünïcödé-words-that-are-long",
    "",
    "   leading and trailing   ",
]


def _random_text(rng, n_lines, n_words, tricky=True):
    vocab = [f"w{i}" for i in range(n_words)] + ["The", "the", "THE", "Straße", "STRASSE"]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    lines = []
    for _ in range(n_lines):
        k = int(rng.integers(0, 30))
        lines.append(" ".join(rng.choice(vocab, size=k, p=p / p.sum())))
        if tricky and rng.random() < 0.2:
            lines.append(_TRICKY[int(rng.integers(len(_TRICKY)))])
    return "\n".join(lines)


def _write_corpus(folder, text, compression, n_files=1):
    """The text in ``n_files`` files (split at line ends; the last without a final newline)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = text.split("\n")
    per = -(-len(lines) // n_files)
    open_ = {None: open, "gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compression]
    for i in range(n_files):
        name = folder / (f"part{i}.txt" + (f".{compression}" if compression else ""))
        with open_(name, "wb") as f:
            f.write("\n".join(lines[i * per : (i + 1) * per]).encode("utf-8"))
    return folder if n_files > 1 else name


def _assert_same(ref_vocab, ref_enc, vocab, enc):
    assert vocab.words == ref_vocab.words
    np.testing.assert_array_equal(vocab.counts, ref_vocab.counts)
    assert vocab.total_words == ref_vocab.total_words
    np.testing.assert_array_equal(np.asarray(enc.ids), ref_enc.ids)
    np.testing.assert_array_equal(enc.sentence_starts, ref_enc.sentence_starts)
    assert enc.raw_words == ref_enc.raw_words
    np.testing.assert_array_equal(enc.raw_starts, ref_enc.raw_starts)


@pytest.mark.parametrize(
    "seed, compression, n_files, block, settings, data",
    [
        (0, None, 1, None, {}, {"min_count": 1}),
        (1, None, 1, 7, {}, {"min_count": 2}),
        (2, None, 3, 64, {"lowercase": True}, {"min_count": 1}),
        (3, "gz", 1, None, {"max_sentence_len": 3}, {"min_count": 1}),
        (4, "bz2", 2, 37, {"max_sentence_len": 5, "lowercase": True}, {"min_count": 2}),
        (5, "xz", 1, None, {}, {"min_count": 1, "max_final_vocab": 10}),
        (6, None, 1, None, {"token_pattern": r"\w+"}, {"min_count": 1}),
        (7, "gz", 1, 50, {"token_pattern": r"[a-z]+", "lowercase": True}, {"min_count": 2}),
        (8, None, 1, None, {}, {"min_count": 1, "max_vocab_size": 20}),
        (9, None, 2, 23, {"lowercase": True, "max_sentence_len": 4}, {"max_vocab_size": 30}),
    ],
)
def test_prepare_matches_the_reference(
    tmp_path, monkeypatch, seed, compression, n_files, block, settings, data
):
    if block:  # tiny read blocks: lines and tokens cut across blocks
        _small_blocks(monkeypatch, block)
    text = _random_text(np.random.default_rng(seed), 300, 60)
    path = _write_corpus(tmp_path / "c", text, compression, n_files)
    src = resolve_corpus(str(path), **settings)
    cfg = dataclasses.replace(DataConfig(), **data)
    ref_vocab = build_vocab(iter_sentences(path, **settings), cfg)
    ref_enc = encode_sentences(iter_sentences(path, **settings), ref_vocab)
    vocab, enc = corpus_mod.prepare_corpus(src, cfg, cache_dir=tmp_path / "a")
    _assert_same(ref_vocab, ref_enc, vocab, enc)
    again = encode_corpus(src, ref_vocab, cache_dir=tmp_path / "b")  # vocab given: lookup only
    _assert_same(ref_vocab, ref_enc, vocab, again)


def test_prepare_matches_the_reference_on_a_long_single_line(tmp_path, monkeypatch):
    _small_blocks(monkeypatch, 1000)  # text8-like: one line, many blocks
    text = _random_text(np.random.default_rng(11), 400, 500, tricky=False).replace("\n", " ")
    path = write(tmp_path / "text8", text)
    src = resolve_corpus(str(path), max_sentence_len=37)
    cfg = dataclasses.replace(DataConfig(), min_count=1)
    ref_vocab = build_vocab(src.sentences(), cfg)
    ref_enc = encode_sentences(src.sentences(), ref_vocab)
    vocab, enc = corpus_mod.prepare_corpus(src, cfg)
    _assert_same(ref_vocab, ref_enc, vocab, enc)


def test_prepare_grows_its_table_past_many_distinct_words(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"{i:x}" for i in rng.permutation(150_000)] * 2  # 150k distinct: the table grows
    rng.shuffle(words)
    path = write(
        tmp_path / "c.txt", "\n".join(" ".join(words[i : i + 50]) for i in range(0, 300_000, 50))
    )
    src = resolve_corpus(str(path))
    cfg = dataclasses.replace(DataConfig(), min_count=2)
    ref_vocab = build_vocab(src.sentences(), cfg)
    ref_enc = encode_sentences(src.sentences(), ref_vocab)
    _assert_same(ref_vocab, ref_enc, *corpus_mod.prepare_corpus(src, cfg))


def test_prepare_caches_vocab_and_encoding(tmp_path, monkeypatch):
    src = _source(tmp_path, "a b a c\nb a\n" * 20)
    cfg = dataclasses.replace(DataConfig(), min_count=1)
    vocab, enc = corpus_mod.prepare_corpus(src, cfg)
    calls = []
    monkeypatch.setattr(corpus_mod, "_scan", lambda *a, **k: calls.append(1))
    vocab2, enc2 = corpus_mod.prepare_corpus(src, cfg)
    assert calls == []
    assert vocab2.words == vocab.words and vocab2.fingerprint == vocab.fingerprint
    np.testing.assert_array_equal(enc2.ids, enc.ids)
    assert isinstance(enc2.ids, np.memmap)


def test_progress_is_reported_while_reading(tmp_path, monkeypatch, capsys):
    _small_blocks(monkeypatch, 256)
    src = _source(tmp_path, "one two three four\n" * 200)
    seen = []
    vocab, _ = corpus_mod.prepare_corpus(
        src, dataclasses.replace(DataConfig(), min_count=1), progress=seen.append
    )
    assert len(seen) > 5 and seen[-1].done and not any(p.done for p in seen[:-1])
    assert seen[-1].tokens == vocab.total_words == 800
    assert seen[-1].bytes_read == seen[-1].bytes_total == os.path.getsize(src.path)
    assert all(a.tokens <= b.tokens for a, b in zip(seen, seen[1:], strict=False))
    show = corpus_mod.progress_printer(every_s=0.0)
    for p in seen[-2:]:
        show(p)
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("count+encode: 0.0M tokens") and err[-1].endswith("done")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.txt", b"", "empty corpus"),
        ("nul.bin", b"abc\x00\x01\x02def\n", "binary file"),
        ("latin1.txt", "caf\u00e9 cr\u00e8me\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_prepare_bad_files_give_one_line_errors(tmp_path, name, content, match):
    src = resolve_corpus(str(write(tmp_path / name, content, mode="b")))
    with pytest.raises(ValueError, match=match) as e:
        corpus_mod.prepare_corpus(src, dataclasses.replace(DataConfig(), min_count=1))
    assert "--corpus" in str(e.value) and "\n" not in str(e.value)


def _damaged(kind, how):
    text = ("some words here\n" * 5000).encode()
    data = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind](text)
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "garbage":
        return b"this is not compressed data at all" * 10
    mid = len(data) // 2  # flipped bytes in the middle of the stream
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 16]) + data[mid + 16 :]


@pytest.mark.parametrize("kind, suffix", [("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz")])
@pytest.mark.parametrize("how", ["truncated", "garbage", "flipped"])
def test_corrupt_compressed_corpus_is_a_clear_error(tmp_path, kind, suffix, how):
    path = write(tmp_path / f"c{suffix}", _damaged(kind, how), mode="b")
    expected = f"corpus file {path} is corrupt or truncated ({kind}): "
    readers = [
        lambda: list(iter_sentences(path)),
        lambda: corpus_mod.prepare_corpus(
            resolve_corpus(str(path)), dataclasses.replace(DataConfig(), min_count=1)
        ),
        lambda: encode_corpus(
            resolve_corpus(str(path)), build_vocab([["some"]], DataConfig(min_count=1))
        ),
    ]
    for read in readers:
        with pytest.raises(ValueError) as e:
            read()
        assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_progress_with_pruning_reports_count_then_encode(tmp_path, monkeypatch):
    _small_blocks(monkeypatch, 256)
    src = _source(tmp_path, "one two three four\n" * 200)
    seen = []
    cfg = dataclasses.replace(DataConfig(), min_count=1, max_vocab_size=10)
    corpus_mod.prepare_corpus(src, cfg, progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases == sorted(phases) and set(phases) == {"count", "encode"}  # count first
    assert [p.tokens for p in seen if p.done] == [800, 800]
