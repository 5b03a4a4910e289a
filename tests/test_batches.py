"""Tests `../w2v_jax/batches.py`: windows, subsampling, shuffling, padding, resume, prefetch."""

import dataclasses
import itertools
import threading

import numpy as np
import pytest
from scipy import stats

from w2v_jax.batches import (
    BatchInfo,
    CBOWBatch,
    EncodedCorpus,
    Position,
    SkipGramBatch,
    cbow_windows,
    iterate_batches,
    iterate_slices,
    prefetch,
    skipgram_pairs,
    slice_bounds,
)
from w2v_jax.config import DataConfig
from w2v_jax.corpus import encode_sentences
from w2v_jax.sampling import keep_probs
from w2v_jax.vocab import build_vocab


def cfg(**kw):
    return dataclasses.replace(DataConfig(), **{"min_count": 1, **kw})


def unique_word_corpus(lengths):
    """Sentences of distinct words: the id of a word is its position in the corpus."""
    sents, k = [], 0
    for n in lengths:
        sents.append([f"w{k + i}" for i in range(n)])
        k += n
    vocab = build_vocab(sents, cfg())
    corpus = encode_sentences(sents, vocab)
    np.testing.assert_array_equal(corpus.ids, np.arange(k))
    return corpus, vocab


def collect(it):
    batches, infos = [], []
    for b, info in it:
        batches.append(b)
        infos.append(info)
    return batches, infos


def valid_pairs(batches):
    center = np.concatenate([b.center[b.mask > 0] for b in batches])
    context = np.concatenate([b.context[b.mask > 0] for b in batches])
    return center, context


def test_skipgram_pairs_match_a_brute_force_loop():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n, w = int(rng.integers(0, 40)), int(rng.integers(1, 5))
        tok = rng.integers(0, 9, n).astype(np.int32)
        sid = np.sort(rng.integers(0, 4, n))
        radius = rng.integers(1, w + 1, n) if trial % 2 else None
        c, o = skipgram_pairs(tok, sid, radius, w)
        ref = [
            (tok[i], tok[i + j])
            for i in range(n)
            for j in range(-w, w + 1)
            if j
            and abs(j) <= (w if radius is None else radius[i])
            and 0 <= i + j < n
            and sid[i + j] == sid[i]
        ]
        assert sorted(zip(c.tolist(), o.tolist(), strict=True)) == sorted(ref)
        assert c.dtype == np.int32 and o.dtype == np.int32


def test_cbow_windows_layout():
    tok = np.array([10, 11, 12, 13, 14], np.int32)
    sid = np.array([0, 0, 0, 0, 1])
    center, ctx, cmask = cbow_windows(tok, sid, None, 2)
    np.testing.assert_array_equal(center, [10, 11, 12, 13])  # 14 is alone in its sentence
    np.testing.assert_array_equal(ctx[2], [10, 11, 13, 0])  # slots -2, -1, +1, +2
    np.testing.assert_array_equal(cmask[2], [1, 1, 1, 0])
    np.testing.assert_array_equal(ctx[0], [0, 0, 11, 12])
    np.testing.assert_array_equal(cmask[0], [0, 0, 1, 1])


@pytest.mark.parametrize("dynamic", [True, False])
def test_offset_weights(dynamic):
    w = 5
    corpus, vocab = unique_word_corpus([2000])
    data = cfg(window=w, dynamic_window=dynamic, sample=0.0)
    it = iterate_batches(corpus, vocab, data, batch_size=1000, seed=3, model="sg", epochs=3)
    center, context = valid_pairs(collect(it)[0])
    offset = context.astype(np.int64) - center
    assert offset.min() >= -w and offset.max() <= w and not np.any(offset == 0)
    # centers far from the sentence ends see every offset they draw
    interior = (center >= w) & (center < 2000 - w)
    per_abs = np.bincount(np.abs(offset[interior]), minlength=w + 1)[1:]
    n_centers = 3 * (2000 - 2 * w)
    j = np.arange(1, w + 1)
    if dynamic:  # P(|j| used) = P(b >= |j|) = (W - |j| + 1) / W, per direction
        q = (w - j + 1) / w
        expected = 2 * n_centers * q
        sigma = np.sqrt(2 * n_centers * q * (1 - q)) + 1e-9
        assert np.all(np.abs(per_abs - expected) <= 4 * sigma), (per_abs, expected)
        shares = expected / expected.sum() * per_abs.sum()
        assert stats.chisquare(per_abs, shares).pvalue > 1e-3, (per_abs, shares)
    else:
        np.testing.assert_array_equal(per_abs, np.full(w, 2 * n_centers))


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_no_pair_crosses_a_sentence_boundary(model):
    lengths = [1, 2, 7, 3, 30, 1, 1, 12, 5] * 20
    corpus, vocab = unique_word_corpus(lengths)
    sentence_of = np.repeat(np.arange(len(lengths)), lengths)
    data = cfg(window=4, sample=0.0, chunk_tokens=100)
    it = iterate_batches(corpus, vocab, data, batch_size=64, seed=0, model=model, epochs=2)
    batches, _ = collect(it)
    if model == "sg":
        center, context = valid_pairs(batches)
        assert center.size > 0
        np.testing.assert_array_equal(sentence_of[center], sentence_of[context])
    else:
        for b in batches:
            rows = b.mask > 0
            c = np.broadcast_to(b.center[rows, None], b.context[rows].shape)
            used = b.context_mask[rows] > 0
            assert np.all(used.any(axis=1))  # centers without context are dropped
            np.testing.assert_array_equal(sentence_of[c[used]], sentence_of[b.context[rows][used]])
            assert np.all(b.context[rows][~used] == 0)


@pytest.mark.parametrize("rule", ["word2vec", "paper"])
def test_subsampling_keep_rates_match_the_formula(rule):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(8)]
    p = np.array([0.4, 0.2, 0.15, 0.1, 0.06, 0.05, 0.03, 0.01])
    sentence = list(rng.choice(words, size=20_000, p=p))
    vocab = build_vocab([sentence], cfg())
    corpus = encode_sentences([sentence], vocab)
    sample = 0.02
    data = cfg(window=1, dynamic_window=False, sample=sample, subsample_rule=rule)
    epochs = 4
    # CBOW with W = 1 in one long sentence: one example per kept token
    it = iterate_batches(corpus, vocab, data, batch_size=4096, seed=7, model="cbow", epochs=epochs)
    kept = np.zeros(len(vocab), np.int64)
    for b, _ in it:
        kept += np.bincount(b.center[b.mask > 0], minlength=len(vocab))
    keep = keep_probs(vocab.counts, sample, rule)
    n = epochs * vocab.counts
    sigma = np.sqrt(n * keep * (1 - keep)) + 1e-9
    assert np.all(np.abs(kept - n * keep) <= 4 * sigma + 1), (kept, n * keep)
    assert keep.min() < 0.5  # the test exercises real subsampling


def test_same_seed_same_batches_and_fixed_shapes():
    corpus, vocab = unique_word_corpus([50] * 40)
    data = cfg(window=3, chunk_tokens=500)
    kw = dict(batch_size=128, model="sg", epochs=2)
    a, ia = collect(iterate_batches(corpus, vocab, data, seed=5, **kw))
    b, ib = collect(iterate_batches(corpus, vocab, data, seed=5, **kw))
    c, _ = collect(iterate_batches(corpus, vocab, data, seed=6, **kw))
    assert len(a) == len(b) and ia == ib
    for x, y in zip(a, b, strict=True):
        assert isinstance(x, SkipGramBatch)
        for f in SkipGramBatch._fields:
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
        assert x.center.shape == x.context.shape == x.mask.shape == (128,)
        assert x.center.dtype == np.int32 and x.mask.dtype == np.float32
    assert not np.array_equal(valid_pairs(a)[0], valid_pairs(c)[0])
    # epochs draw fresh subsampling / windows / order
    e0 = [i for i, info in enumerate(ia) if info.position.epoch == 0 or info.position == (1, 0, 0)]
    first_epoch = valid_pairs([a[i] for i in e0])
    second_epoch = valid_pairs([a[i] for i in range(len(a)) if i not in e0])
    assert len(first_epoch[0]) != len(second_epoch[0]) or not np.array_equal(
        first_epoch[0], second_epoch[0]
    )


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_padding_rows_are_masked_zero_ids(model):
    corpus, vocab = unique_word_corpus([37, 11, 64])
    data = cfg(window=2, dynamic_window=False, sample=0.0, chunk_tokens=50)
    batches, infos = collect(
        iterate_batches(corpus, vocab, data, batch_size=32, seed=0, model=model, epochs=1)
    )
    padded = 0
    for b in batches:
        pad = b.mask == 0
        padded += int(pad.sum())
        assert np.all(b.center[pad] == 0) and np.all(b.context[pad] == 0)
        if model == "cbow":
            assert isinstance(b, CBOWBatch) and b.context.shape == (32, 4)
            assert np.all(b.context_mask[pad] == 0) and b.context_mask.dtype == np.float32
    assert padded > 0
    n_pairs = int(sum((b.mask if model == "sg" else b.context_mask).sum() for b in batches))
    assert n_pairs == sum(2 * ((n - 1) + (n - 2)) for n in (37, 11, 64))  # fixed W = 2


def test_progress_counts_raw_words_and_ends_at_one():
    sents = []
    for i in range(30):  # oov words occur once each: below min_count
        sents += [["a", "b", f"oov{i}", "a"], ["b", "a", "b"], [f"x{i}"], ["a", "b", "a", "b", "a"]]
    vocab = build_vocab(sents, cfg(min_count=2))
    corpus = encode_sentences(sents, vocab)
    assert vocab.words == ("a", "b") and corpus.num_tokens == 11 * 30
    assert corpus.raw_words == 13 * 30
    data = cfg(window=2, sample=0.0, chunk_tokens=40)
    _, infos = collect(
        iterate_batches(corpus, vocab, data, batch_size=16, seed=0, model="sg", epochs=3)
    )
    done = [i.words_done for i in infos]
    assert done == sorted(done) and done[-1] == 3 * corpus.raw_words
    assert infos[-1].progress == 1.0 and infos[-1].position == Position(3, 0, 0)
    assert all(isinstance(i, BatchInfo) for i in infos)
    assert 0 < infos[0].progress < 0.1


@pytest.mark.parametrize("shuffle_tokens", [0, 40])
@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_resumed_iterator_continues_exactly(model, shuffle_tokens):
    corpus, vocab = unique_word_corpus([23, 5, 41, 17, 2, 60] * 6)
    data = cfg(window=3, sample=1e-2, chunk_tokens=150, shuffle_tokens=shuffle_tokens)
    kw = dict(batch_size=50, seed=11, model=model, epochs=2)
    full, infos = collect(iterate_batches(corpus, vocab, data, **kw))
    assert len({i.position.chunk for i in infos}) > 2  # several chunks
    for cut in [1, 2, len(full) // 3, len(full) // 2, len(full) - 1]:
        rest, rest_infos = collect(
            iterate_batches(corpus, vocab, data, start=infos[cut - 1].position, **kw)
        )
        assert rest_infos == infos[cut:]
        got = np.concatenate([np.ravel(getattr(b, f)) for b in rest for f in b._fields])
        want = np.concatenate([np.ravel(getattr(b, f)) for b in full[cut:] for f in b._fields])
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- corpus slices


def fields_of(batches):
    return [np.concatenate([np.ravel(getattr(b, f)) for b in batches]) for f in batches[0]._fields]


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_one_slice_is_the_plain_stream(model):
    corpus, vocab = unique_word_corpus([23, 5, 41, 17, 2, 60] * 6)
    data = cfg(window=3, sample=1e-2, chunk_tokens=150)
    kw = dict(batch_size=50, seed=11, model=model, epochs=2)
    plain, infos = collect(iterate_batches(corpus, vocab, data, **kw))
    sliced, steps = collect(iterate_slices(corpus, vocab, data, slices=1, **kw))
    for got, want in zip(fields_of(sliced), fields_of(plain), strict=True):
        np.testing.assert_array_equal(got, want)
    assert [s.positions[0] for s in steps] == [i.position for i in infos]
    assert [s.words_done[0] for s in steps] == [i.words_done for i in infos]
    assert all(s.real for s in steps)


def test_slice_bounds_cut_whole_sentences_into_about_equal_tokens():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 30, size=200)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for n in (1, 2, 3, 7):
        cuts = slice_bounds(starts, n)
        assert cuts[0] == 0 and cuts[-1] == len(lengths) and np.all(np.diff(cuts) >= 0)
        tokens = np.diff(starts[cuts])
        assert tokens.sum() == starts[-1]
        assert np.all(np.abs(tokens - starts[-1] / n) <= lengths.max())
    # one sentence longer than a slice's share leaves a slice empty, not an error
    np.testing.assert_array_equal(slice_bounds(np.array([0, 100, 101]), 3), [0, 1, 1, 2])


@pytest.mark.parametrize("slices", [2, 3])
def test_sliced_stream_gives_every_pair_once_per_epoch_and_rows_by_slice(slices):
    # No subsampling and a fixed window: an epoch's skip-gram pairs are a fixed multiset,
    # whatever the slicing (pairs never cross a sentence, and slices cut between sentences).
    corpus, vocab = unique_word_corpus([23, 5, 41, 17, 2, 60] * 6)
    data = cfg(window=2, dynamic_window=False, sample=0.0, chunk_tokens=100)
    kw = dict(batch_size=12 * slices, seed=4, model="sg", epochs=1)
    one, _ = collect(iterate_batches(corpus, vocab, data, **kw))
    many, steps = collect(iterate_slices(corpus, vocab, data, slices=slices, **kw))

    def pairs(batches):
        c, o = valid_pairs(batches)
        return sorted(zip(c.tolist(), o.tolist(), strict=True))

    assert pairs(many) == pairs(one)
    # rows [s*B/S, (s+1)*B/S) of every step come from slice s's sentences only
    cuts = corpus.sentence_starts[slice_bounds(corpus.sentence_starts, slices)]
    sub = kw["batch_size"] // slices
    for b in many:
        for s in range(slices):
            rows = slice(s * sub, (s + 1) * sub)
            centers = b.center[rows][b.mask[rows] > 0]
            assert np.all((cuts[s] <= centers) & (centers < cuts[s + 1]))  # id = position
    # each slice's words add up to the corpus's, and the progress never goes back
    total = [sum(s.words_done) for s in steps]
    assert total == sorted(total) and total[-1] == corpus.raw_words


def test_each_reader_of_some_slices_gets_its_rows_of_the_whole_stream():
    corpus, vocab = unique_word_corpus([23, 5, 41, 17, 2, 60] * 6)
    data = cfg(window=3, sample=1e-2, chunk_tokens=100)
    kw = dict(batch_size=40, seed=9, model="cbow", epochs=2, slices=4)
    whole, steps = collect(iterate_slices(corpus, vocab, data, **kw))
    n = len(whole)
    # pad_forever: a reader done early gives padding steps, for as long as it is asked
    halves = [
        collect(
            itertools.islice(
                iterate_slices(corpus, vocab, data, read=r, pad_forever=True, **kw), n + 3
            )
        )
        for r in (range(0, 2), range(2, 4))
    ]
    for k in range(n):
        joined = [np.concatenate([h[0][k][i] for h in halves]) for i in range(4)]
        for got, want in zip(joined, whole[k], strict=True):
            np.testing.assert_array_equal(got, want)
        assert halves[0][1][k].positions + halves[1][1][k].positions == steps[k].positions
        assert halves[0][1][k].real or halves[1][1][k].real
    for batches, infos in halves:
        assert not any(i.real for i in infos[n:]) and not any(b.mask.any() for b in batches[n:])


def test_sliced_stream_resumes_exactly():
    corpus, vocab = unique_word_corpus([23, 5, 41, 17, 2, 60] * 6)
    data = cfg(window=3, sample=1e-2, chunk_tokens=150)
    kw = dict(batch_size=48, seed=2, model="sg", epochs=3, slices=3)
    full, steps = collect(iterate_slices(corpus, vocab, data, **kw))
    for cut in (1, len(full) // 2, len(full) - 1):
        rest, rest_steps = collect(
            iterate_slices(corpus, vocab, data, start=steps[cut - 1].positions, **kw)
        )
        assert rest_steps == steps[cut:]
        for got, want in zip(fields_of(rest), fields_of(full[cut:]), strict=True):
            np.testing.assert_array_equal(got, want)


def test_slices_must_divide_the_batch():
    corpus, vocab = unique_word_corpus([10, 10])
    with pytest.raises(ValueError, match="--batch-size 10 must be a multiple of --corpus-slices 3"):
        next(iterate_slices(corpus, vocab, cfg(), batch_size=10, seed=0, model="sg", epochs=1,
                            slices=3))  # fmt: skip


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(data=cfg(window=0)), "--window must be >= 1"),
        (dict(batch_size=0), "--batch-size"),
        (dict(model="skipgram"), "--model"),
        (dict(epochs=0), "--epochs"),
        (dict(start=Position(0, 99, 0)), "resume position"),
    ],
)
def test_bad_arguments(kw, match):
    corpus, vocab = unique_word_corpus([10])
    args = dict(data=cfg(), batch_size=4, seed=0, model="sg", epochs=1)
    args.update(kw)
    data = args.pop("data")
    with pytest.raises(ValueError, match=match) as e:
        next(iterate_batches(corpus, vocab, data, **args))
    assert "\n" not in str(e.value)


def test_encoded_corpus_is_exported_from_batches():
    from w2v_jax import corpus

    assert EncodedCorpus is corpus.EncodedCorpus


def test_prefetch_yields_everything_in_order_and_forwards_errors():
    assert list(prefetch(iter(range(100)), size=3)) == list(range(100))

    def boom():
        yield 1
        raise RuntimeError("producer failed")

    it = prefetch(boom())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="producer failed"):
        next(it)


def test_prefetch_close_stops_the_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = prefetch(endless(), size=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert threading.active_count() == before


def test_shuffle_mixes_the_whole_chunk_across_blocks(monkeypatch):
    from w2v_jax import batches as batches_mod

    monkeypatch.setattr(batches_mod, "_BLOCK_CENTERS", 256)  # 20 blocks in this chunk
    corpus, vocab = unique_word_corpus([5120])
    data = cfg(window=2, dynamic_window=False, sample=0.0)
    it = iterate_batches(corpus, vocab, data, batch_size=400, seed=2, model="sg", epochs=1)
    first, _ = next(it)
    assert stats.kstest(first.center / 5120, "uniform").pvalue > 1e-3
    assert len(np.unique(first.center // 256)) >= 18
    rest = [b for b, _ in it]
    center, context = valid_pairs([first, *rest])
    assert len(center) == 2 * (5119 + 5118)  # every pair exactly once
    assert len(set(zip(center.tolist(), context.tolist(), strict=True))) == len(center)


@pytest.mark.parametrize("sample", [0.0, 1e-5])
@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_examples_are_shuffled_within_spans_that_follow_corpus_order(model, sample):
    """A word's id is its corpus position, so a center's span is id // shuffle_tokens, counted
    before subsampling: spans never go back, each is shuffled, and every example comes once."""
    corpus, vocab = unique_word_corpus([300] * 10)  # one chunk of 3000 tokens, 6 spans
    data = cfg(window=2, dynamic_window=False, sample=sample, shuffle_tokens=500)
    kw = dict(batch_size=64, seed=3, model=model, epochs=1)
    batches, _ = collect(iterate_batches(corpus, vocab, data, **kw))
    center = np.concatenate([b.center[b.mask > 0] for b in batches])
    span = center // 500
    assert np.all(np.diff(span) >= 0)
    assert set(span.tolist()) == set(range(6))
    for s in range(6):
        assert np.any(np.diff(center[span == s]) < 0)  # not in corpus order inside a span
    if model == "sg":
        c, o = valid_pairs(batches)
        assert len(set(zip(c.tolist(), o.tolist(), strict=True))) == len(c)
        if sample == 0.0:
            assert len(c) == 10 * 2 * (299 + 298)
    else:
        assert len(np.unique(center)) == len(center) == (3000 if sample == 0.0 else len(center))
    if sample:
        assert len(center) < 0.5 * (3000 if model == "cbow" else 10 * 2 * (299 + 298))


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_a_span_as_long_as_the_chunk_is_the_whole_chunk_shuffle(model):
    corpus, vocab = unique_word_corpus([300] * 10)
    kw = dict(batch_size=64, seed=3, model=model, epochs=2)
    runs = []
    for shuffle_tokens in (0, 3000, 1 << 20):
        data = cfg(window=3, sample=1e-4, shuffle_tokens=shuffle_tokens)
        batches, _ = collect(iterate_batches(corpus, vocab, data, **kw))
        runs.append(fields_of(batches))
    for fields in runs[1:]:
        for got, want in zip(fields, runs[0], strict=True):
            np.testing.assert_array_equal(got, want)


def test_chunks_hold_tokens_and_cover_all_raw_words():
    from w2v_jax.batches import chunk_bounds

    starts = np.array([0, 3, 5, 5, 9, 9, 9])
    for chunk_tokens in (1, 2, 4, 5, 100):
        bounds = chunk_bounds(starts, chunk_tokens)
        assert bounds[0] == 0 and bounds[-1] == 6
        assert np.all(np.diff(starts[bounds]) > 0)  # every chunk has tokens
    # trailing all-OOV sentences: their raw words still reach the last batch
    sents = [["a", "b", "a", "b"], ["a", "b", "a"], ["zz1", "zz2"], ["zz3"]]
    vocab = build_vocab(sents, cfg(min_count=2))
    corpus = encode_sentences(sents, vocab)
    assert corpus.raw_words == 10 and corpus.num_tokens == 7
    data = cfg(window=2, sample=0.0, chunk_tokens=4)
    _, infos = collect(
        iterate_batches(corpus, vocab, data, batch_size=3, seed=0, model="sg", epochs=2)
    )
    assert infos[-1].words_done == 20 and infos[-1].progress == 1.0
