"""Tests the corpus read in byte slices (`../w2v_jax/corpus.py`, :func:`prepare_slices`): each
process of a multi-host run counts and encodes only its own slices' bytes, and what they build
together is exactly one scan of the whole corpus."""

import dataclasses
import itertools
import threading

import numpy as np
import pytest

from w2v_jax import corpus as corpus_mod
from w2v_jax.batches import iterate_slices
from w2v_jax.config import DataConfig
from w2v_jax.corpus import (
    WordCounts,
    byte_slices,
    cut_encoded,
    merge_counts,
    prepare_corpus,
    prepare_slices,
    resolve_corpus,
    splits_by_bytes,
)

pytestmark = pytest.mark.usefixtures("fresh_cache")  # conftest.py


def _text(rng, n_lines, n_words=40):
    """Zipf-ish words, line ends \\n, \\r\\n and \\r, empty lines, non-ASCII words and spaces."""
    words = [f"w{i}" for i in range(n_words)] + ["Straße", "naïve", "x" * 40, "日本語"]
    p = 1.0 / np.arange(1, len(words) + 1)
    out = []
    for _ in range(n_lines):
        line = " ".join(rng.choice(words, size=int(rng.integers(0, 25)), p=p / p.sum()))
        if rng.random() < 0.1:
            line = "\u00a0 " + line + " \u2003"  # non-ASCII whitespace around the tokens
        out.append(line + str(rng.choice(["\n", "\r\n", "\r"], p=[0.8, 0.1, 0.1])))
    return "".join(out)


def _files(folder, text, n_files):
    """The text in ``n_files`` plain files, split at arbitrary bytes (not at line ends)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    cuts = np.linspace(0, len(data), n_files + 1).astype(int)
    for i in range(n_files):
        # move each cut off a UTF-8 continuation byte, so every file is valid text
        a = cuts[i]
        while 0 < a < len(data) and data[a] & 0xC0 == 0x80:
            a += 1
        cuts[i] = a
    for i in range(n_files):
        (folder / f"part{i}.txt").write_bytes(data[cuts[i] : cuts[i + 1]])
    return folder


def _same(a, b):
    assert a.words == b.words and a.total_words == b.total_words
    np.testing.assert_array_equal(a.counts, b.counts)


def _joined(parts):
    """The slices' encodings end to end: (ids, sentence starts, raw starts)."""
    ids = np.concatenate([np.asarray(p.ids) for p in parts])
    starts, raw = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    t = r = 0
    for p in parts:
        starts.append(p.sentence_starts[1:] + t)
        raw.append(p.raw_starts[1:] + r)
        t, r = t + p.num_tokens, r + p.raw_words
    return ids, np.concatenate(starts), np.concatenate(raw)


@pytest.mark.parametrize("n_files", [1, 3])
def test_byte_slices_cut_the_files_at_line_starts_into_about_equal_bytes(tmp_path, n_files):
    folder = _files(tmp_path / "c", _text(np.random.default_rng(0), 400), n_files)
    src = resolve_corpus(str(folder))
    files = sorted(folder.iterdir())
    data = b"".join(f.read_bytes() for f in files)
    longest = max(len(line) for line in data.replace(b"\r", b"\n").split(b"\n")) + 1
    for s_count in (1, 2, 3, 7, 16):
        slices = byte_slices(src, s_count)
        assert len(slices) == s_count
        pieces, sizes = [], []
        for ranges in slices:
            sizes.append(sum(r.end - r.start for r in ranges))
            for r in ranges:
                assert r.start == 0 or r.file.read_bytes()[r.start - 1] in b"\r\n"  # a line start
                pieces.append(r.file.read_bytes()[r.start : r.end])
        assert b"".join(pieces) == data  # every byte once, in order
        share = len(data) / s_count
        assert all(abs(n - share) <= longest + 1 for n in sizes[:-1]), (sizes, share)


@pytest.mark.parametrize(
    "seed, n_files, block, settings, data",
    [
        (0, 1, None, {}, {"min_count": 1}),
        (1, 1, 7, {}, {"min_count": 2}),
        (2, 3, 64, {"lowercase": True}, {"min_count": 1}),
        (3, 2, 37, {"max_sentence_len": 4}, {"min_count": 2, "max_final_vocab": 15}),
    ],
)
@pytest.mark.parametrize("n_slices", [1, 2, 5, 400])
def test_slices_counted_apart_make_exactly_one_scans_vocabulary_and_encoding(
    tmp_path, monkeypatch, seed, n_files, block, settings, data, n_slices
):
    if block:  # tiny read blocks: lines and tokens cut across blocks
        monkeypatch.setattr(corpus_mod, "_BLOCK_BYTES", block)
    folder = _files(tmp_path / "c", _text(np.random.default_rng(seed), 120), n_files)
    src = resolve_corpus(str(folder), **settings)
    cfg = dataclasses.replace(DataConfig(chunk_tokens=50), **data)
    assert splits_by_bytes(src, cfg)
    vocab, whole = prepare_corpus(src, cfg, cache_dir=tmp_path / "whole")
    got_vocab, sliced = prepare_slices(
        src, cfg, slices=n_slices, read=range(n_slices), cache_dir=tmp_path / "sliced"
    )
    _same(got_vocab, vocab)
    ids, starts, raw = _joined(sliced.parts)
    np.testing.assert_array_equal(ids, whole.ids)
    np.testing.assert_array_equal(starts, whole.sentence_starts)
    np.testing.assert_array_equal(raw, whole.raw_starts)
    assert sum(sliced.raw_words) == whole.raw_words and sum(sliced.tokens) == whole.num_tokens
    if n_slices == 400:  # more slices than lines: empty slices are fine
        assert 0 in sliced.tokens
    # the second time both come from the cache, and say the same
    again_vocab, again = prepare_slices(
        src, cfg, slices=n_slices, read=range(n_slices), cache_dir=tmp_path / "sliced"
    )
    _same(again_vocab, vocab)
    assert again.digest == sliced.digest and again.chunks == sliced.chunks


def test_merge_counts_orders_words_by_first_appearance_over_the_pieces():
    long_a, long_b = b"x" * 17, "é".encode() * 12  # past 16 bytes: kept apart from the packed
    pieces = [
        WordCounts.of([b"a", long_a, b"b"], [3, 1, 1]),
        WordCounts.of([], []),
        WordCounts.of([b"c", long_b, b"a", long_a, b"a" * 16], [2, 4, 5, 6, 7]),
    ]
    merged = merge_counts([WordCounts.from_bytes(p.to_bytes([i]))[0] for i, p in
                           enumerate(pieces)])  # fmt: skip
    words = [merged.word(i) for i in range(len(merged.counts))]
    assert words == [b"a", long_a, b"b", b"c", long_b, b"a" * 16]
    np.testing.assert_array_equal(merged.counts, [8, 7, 1, 2, 4, 7])
    np.testing.assert_array_equal(merged.first, [0, 1, 2, 3, 4, 7])  # (piece, index) in order


def _processes(n, run):
    """Runs ``run(p, share)`` for p in range(n) on n threads, ``share`` an all-gather between
    them (what :func:`w2v_jax.sharding.allgather_bytes` is between processes)."""
    barrier = threading.Barrier(n)
    box: list = [None] * n
    out: list = [None] * n
    errors = []

    def share_of(p):
        def share(mine: bytes) -> list[bytes]:
            box[p] = mine
            barrier.wait()
            everyone = list(box)
            barrier.wait()  # nobody overwrites box before all have read it
            return everyone

        return share

    def work(p):
        try:
            out[p] = run(p, share_of(p))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(p,), name=f"process{p}") for p in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return out


@pytest.mark.parametrize(
    "n_procs, n_slices, data",
    [(2, 2, {"min_count": 2}), (3, 6, {"min_count": 1, "max_final_vocab": 15})],
)
def test_processes_read_only_their_own_bytes_and_agree_with_one_process(
    tmp_path, monkeypatch, n_procs, n_slices, data
):
    folder = _files(tmp_path / "c", _text(np.random.default_rng(7), 300), 2)
    src = resolve_corpus(str(folder))
    cfg = DataConfig(chunk_tokens=200, **data)
    reads: list[tuple[str, str, int, int | None]] = []
    real_read_blocks = corpus_mod._read_blocks

    def recorded(file, block_bytes, start=0, end=None):
        reads.append((threading.current_thread().name, file.name, start, end))
        return real_read_blocks(file, block_bytes, start, end)

    monkeypatch.setattr(corpus_mod, "_read_blocks", recorded)
    ref_vocab, ref = prepare_slices(
        src, cfg, slices=n_slices, read=range(n_slices), cache_dir=tmp_path / "one"
    )
    _same(ref_vocab, prepare_corpus(src, cfg, cache_dir=tmp_path / "whole")[0])
    per = n_slices // n_procs

    def run(p, share):  # each "host" with a cache of its own
        read = range(p * per, (p + 1) * per)
        cache = tmp_path / f"host{p}"
        return prepare_slices(src, cfg, slices=n_slices, read=read, share=share, cache_dir=cache)

    reads.clear()
    results = _processes(n_procs, run)
    ranges = byte_slices(src, n_slices)
    for p, (vocab, sliced) in enumerate(results):
        _same(vocab, ref_vocab)
        assert sliced.digest == ref.digest and sliced.chunks == ref.chunks
        assert sliced.raw_words == ref.raw_words and sliced.tokens == ref.tokens
        mine = range(p * per, (p + 1) * per)
        for s in range(n_slices):
            if s in mine:
                np.testing.assert_array_equal(sliced.parts[s].ids, ref.parts[s].ids)
            else:
                assert sliced.parts[s] is None
        # the bytes this process read: its slices' ranges, nothing else
        got = sorted((f, a, b) for who, f, a, b in reads if who == f"process{p}")
        want = sorted((r.file.name, r.start, r.end) for s in mine for r in ranges[s])
        assert got == want
        # its batch rows are those of one process reading every slice
        kw = dict(batch_size=12 * n_slices, seed=3, model="sg", epochs=2, slices=n_slices)
        full = list(iterate_slices(ref, ref_vocab, cfg, **kw))
        part = list(itertools.islice(iterate_slices(sliced, vocab, cfg, read=mine, **kw), 10**6))
        assert len(part) <= len(full)
        rows = slice(mine.start * 12, mine.stop * 12)
        for (a, info_a), (b, info_b) in zip(full, part, strict=False):
            np.testing.assert_array_equal(a.center[rows], b.center)
            np.testing.assert_array_equal(a.context[rows], b.context)
            assert info_a.positions[mine.start : mine.stop] == info_b.positions
    # a second run finds every host's cache: nobody counts
    reads.clear()
    again = _processes(n_procs, run)
    assert reads == [] and all(s.digest == ref.digest for _, s in again)
    # one host without its vocabulary cache: everybody counts again, and agrees
    for f in (tmp_path / "host0" / "vocab").iterdir():
        f.unlink()
    third = _processes(n_procs, run)
    assert {who for who, *_ in reads} == {f"process{p}" for p in range(n_procs)}
    assert all(v.words == ref_vocab.words and s.digest == ref.digest for v, s in third)


def test_a_whole_corpus_cut_by_tokens_is_what_the_batches_cut(tmp_path):
    folder = _files(tmp_path / "c", _text(np.random.default_rng(5), 200), 1)
    src = resolve_corpus(str(folder))
    cfg = DataConfig(min_count=1, chunk_tokens=100)
    vocab, whole = prepare_corpus(src, cfg)
    kw = dict(batch_size=30, seed=1, model="sg", epochs=2, slices=3)
    a = list(iterate_slices(whole, vocab, cfg, **kw))
    b = list(iterate_slices(cut_encoded(whole, 3, cfg.chunk_tokens), vocab, cfg, **kw))
    assert len(a) == len(b)
    for (x, i), (y, j) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.center, y.center)
        assert i == j


def test_what_cannot_be_cut_by_bytes_is_read_whole(tmp_path):
    import gzip

    plain = tmp_path / "c.txt"
    plain.write_text("a b c\n" * 10)
    packed = tmp_path / "c.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    cfg = DataConfig()
    assert splits_by_bytes(resolve_corpus(str(plain)), cfg)
    assert not splits_by_bytes(resolve_corpus(str(packed)), cfg)  # a stream: no random access
    assert not splits_by_bytes(resolve_corpus(str(plain), token_pattern=r"\w+"), cfg)
    assert not splits_by_bytes(resolve_corpus(str(plain)), DataConfig(max_vocab_size=100))
    with pytest.raises(ValueError, match="cannot be read on its own"):
        next(corpus_mod._read_blocks(packed, 10, 5, 9))


def test_an_empty_corpus_read_in_slices_is_a_clear_error(tmp_path):
    (tmp_path / "c.txt").write_text("\n \n\n")
    src = resolve_corpus(str(tmp_path / "c.txt"))
    with pytest.raises(ValueError, match="empty corpus"):
        prepare_slices(src, DataConfig(), slices=2, read=range(2))


def test_processes_name_the_most_frequent_word_when_none_reaches_min_count(tmp_path):
    folder = _files(tmp_path / "c", _text(np.random.default_rng(8), 200), 1)
    src = resolve_corpus(str(folder))
    cfg = DataConfig(min_count=10**6)
    with pytest.raises(ValueError) as whole:
        prepare_corpus(src, cfg, cache_dir=tmp_path / "whole")

    def run(p, share):
        with pytest.raises(ValueError) as err:
            prepare_slices(src, cfg, slices=3, read=range(p, p + 1), share=share,
                           cache_dir=tmp_path / f"host{p}")  # fmt: skip
        return str(err.value)

    assert _processes(3, run) == [str(whole.value)] * 3
    assert "the most frequent, 'w0'" in str(whole.value)
