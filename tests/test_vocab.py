"""Tests `../w2v_jax/vocab.py`: counting, pruning, min_count, max_final_vocab, save/load."""

import collections
import dataclasses

import numpy as np
import pytest

from w2v_jax.config import DataConfig
from w2v_jax.vocab import (
    Vocab,
    build_vocab,
    count_words,
    load_vocab,
    save_vocab,
    select_words,
    vocab_from_counter,
)


def cfg(**kw):
    return dataclasses.replace(DataConfig(), **kw)


def test_sorted_by_count_ties_by_first_appearance():
    sents = [["b", "a", "c", "a"], ["d", "c", "b", "e"], ["a"]]
    v = build_vocab(sents, cfg(min_count=1))
    assert v.words == ("a", "b", "c", "d", "e")  # a:3; b, c: 2 (b first); d, e: 1 (d first)
    np.testing.assert_array_equal(v.counts, [3, 2, 2, 1, 1])
    assert v.counts.dtype == np.int64
    assert v.total_words == 9
    assert v.index == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    assert len(v) == 5


def test_min_count_drops_rare_words_but_total_counts_them():
    sents = [["x"] * 5 + ["y"] * 4 + ["z"]]
    v = build_vocab(sents, cfg(min_count=4))
    assert v.words == ("x", "y")
    assert v.total_words == 10


def test_no_word_at_min_count_is_a_one_line_error_naming_the_flag():
    with pytest.raises(ValueError, match="--min-count=5") as e:
        build_vocab([["a", "b", "a"]], cfg(min_count=5))
    assert "\n" not in str(e.value)


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        build_vocab([[], []], cfg(min_count=1))


def test_pruning_keeps_the_most_frequent_words():
    rng = np.random.default_rng(0)
    frequent = [f"w{i}" for i in range(10)]
    sents = []
    for s in range(400):
        sent = list(rng.choice(frequent, size=20, p=np.linspace(2, 1, 10) / 15))
        sent += [f"rare{s}_{k}" for k in range(5)]  # 2000 singletons, interleaved
        sents.append(sent)
    true = collections.Counter(w for s in sents for w in s)
    v = build_vocab(sents, cfg(min_count=1, max_vocab_size=50))
    assert len(v) <= 50
    assert set(frequent) <= set(v.words)
    assert v.total_words == sum(true.values())
    # frequent words are never pruned, so their counts are exact
    for w in frequent:
        assert v.counts[v.index[w]] == true[w]
    assert [w for w in v.words if w in frequent] == sorted(frequent, key=lambda w: -true[w])


def test_max_final_vocab_follows_gensim():
    # counts: a 6, b 5, c 5, d 3, e 1
    sents = [["a"] * 6 + ["b"] * 5 + ["c"] * 5 + ["d"] * 3 + ["e"]]
    # gensim: effective min_count = count(sorted_words[max_final_vocab]) + 1
    v = build_vocab(sents, cfg(min_count=1, max_final_vocab=3))
    assert v.words == ("a", "b", "c")  # effective min_count = count(d) + 1 = 4
    v = build_vocab(sents, cfg(min_count=1, max_final_vocab=2))
    assert v.words == ("a",)  # effective min_count = count(c) + 1 = 6: ties cut together
    v = build_vocab(sents, cfg(min_count=1, max_final_vocab=10))
    assert len(v) == 5


def test_save_load_round_trip(tmp_path):
    v = build_vocab([["der", "größte", "der", "x"]], cfg(min_count=1))
    path = tmp_path / "vocab.txt"
    save_vocab(v, path)
    assert path.read_text(encoding="utf-8").splitlines() == ["der 2", "größte 1", "x 1"]
    w = load_vocab(path)
    assert w.words == v.words
    np.testing.assert_array_equal(w.counts, v.counts)
    assert w.total_words == 4
    assert w.fingerprint == v.fingerprint


def test_load_vocab_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_vocab(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1\nb\n")
    with pytest.raises(ValueError, match="expected 'word count'"):
        load_vocab(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("a 2\na 1\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_vocab(dup)


def test_vocab_is_frozen_and_checks_lengths():
    v = Vocab(("a", "b"), np.array([2, 1]), 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.total_words = 4
    with pytest.raises(ValueError, match="2 words but 1 counts"):
        Vocab(("a", "b"), np.array([2]), 3)


def test_bytes_counter_gives_the_same_vocab_as_str_tokens():
    # corpus.prepare_corpus counts UTF-8 bytes tokens with max_vocab_size; the words come back
    # decoded, in the same order and with the same pruning as counting str tokens.
    sents = [["der", "größte", "der", "x"], ["größte", "y", "der"]] * 3 + [["z"] * 4]
    c = cfg(min_count=1, max_vocab_size=3)
    counts, total = count_words(([w.encode() for w in s] for s in sents), c.max_vocab_size)
    from_bytes = vocab_from_counter(counts, total, c)
    ref = build_vocab(sents, c)
    assert from_bytes.words == ref.words and from_bytes.total_words == ref.total_words
    np.testing.assert_array_equal(from_bytes.counts, ref.counts)


def test_select_words_orders_by_count_then_table_order():
    counts = np.array([1, 3, 2, 3, 1], np.int64)
    order = select_words(counts, 10, cfg(min_count=2), str)
    np.testing.assert_array_equal(order, [1, 3, 2])
    with pytest.raises(ValueError, match="most frequent, '1', occurs 3 times"):
        select_words(counts, 10, cfg(min_count=4), str)
