"""Tests `../w2v_jax/vectors.py`: lookup, most_similar against gensim, word2vec files both ways."""

import re
import struct

import numpy as np
import pytest

from w2v_jax import vectors as vectors_mod
from w2v_jax.vectors import Vectors, from_tables, load_vectors, load_word2vec_format

gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
KeyedVectors = gensim_kv.KeyedVectors

WORDS = ["the", "of", "king", "queen", "café", "東京", "naïve", "x-ray", "U.S.", "Paris"]


def _random_vectors(v=200, d=16, seed=0, words=None):
    rng = np.random.default_rng(seed)
    words = list(words or WORDS) + [f"w{i}" for i in range(v - len(words or WORDS))]
    return Vectors(tuple(words), rng.standard_normal((v, d)).astype(np.float32))


def _gensim(vec: Vectors) -> "KeyedVectors":
    kv = KeyedVectors(vec.dim)
    kv.add_vectors(list(vec.words), np.array(vec.matrix))
    return kv


# ---------------------------------------------------------------------------- the object
def test_lookup_contains_len_and_clear_keyerror():
    vec = _random_vectors(v=20, d=4)
    assert len(vec) == 20 and vec.dim == 4
    assert "queen" in vec and "xyz" not in vec
    np.testing.assert_array_equal(vec["queen"], vec.matrix[vec.index["queen"]])
    with pytest.raises(KeyError, match=r"word 'xyz' is not in the vocabulary \(V=20\)"):
        vec["xyz"]


def test_matrix_is_a_frozen_copy():
    m = np.ones((2, 3), dtype=np.float64)
    vec = Vectors(("a", "b"), m)
    m[0, 0] = 5.0  # the caller's array is not aliased
    assert vec.matrix.dtype == np.float32 and vec.matrix[0, 0] == 1.0
    assert m.flags.writeable
    with pytest.raises(ValueError):
        vec.matrix[0, 0] = 2.0


@pytest.mark.parametrize(
    "words, shape, match",
    [
        (("a", "a"), (2, 3), "duplicate word 'a'"),
        (("a", "b", "c", "b"), (4, 3), "duplicate word 'b' at rows 1 and 3"),
        (("a", "b"), (3, 3), "2 words but matrix has 3 rows"),
        (("a", "b"), (2,), r"matrix must be \[V, D\]"),
    ],
)
def test_bad_construction_fails_clearly(words, shape, match):
    with pytest.raises(ValueError, match=match):
        Vectors(words, np.zeros(shape, dtype=np.float32))


def test_words_that_are_not_str_are_named():
    with pytest.raises(TypeError, match="words must be str, got int at row 1"):
        Vectors(("a", 3), np.zeros((2, 3), dtype=np.float32))
    # a str subclass (numpy's, from a numpy array of words) is a word
    vec = Vectors(tuple(np.array(["a", "b"])), np.zeros((2, 3), dtype=np.float32))
    assert vec.index == {"a": 0, "b": 1}


def test_normalized_is_unit_and_keeps_zero_rows():
    m = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    u = Vectors(("a", "b"), m).normalized()
    np.testing.assert_allclose(u, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-7)


# ------------------------------------------------------------------- similarity vs gensim
@pytest.mark.parametrize(
    "query",
    [
        dict(positive=["king"]),
        dict(positive="queen", topn=5),
        dict(positive=["king", "café"], negative=["the"]),
        dict(positive=["w10", "w20", "w30"], negative=["w40", "w50"], topn=25),
        dict(positive=["w7"], restrict_vocab=60),
        dict(negative=["Paris"]),
    ],
)
def test_most_similar_matches_gensim(query):
    vec = _random_vectors(v=300, d=16, seed=1)
    ours = vec.most_similar(**query)
    theirs = _gensim(vec).most_similar(**query)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([c for _, c in ours], [c for _, c in theirs], atol=1e-5)


def test_most_similar_excludes_inputs_and_restricts():
    vec = _random_vectors(v=50, d=8, seed=2)
    got = vec.most_similar(["w5", "w6"], ["w7"], topn=100)
    assert {"w5", "w6", "w7"}.isdisjoint(w for w, _ in got)
    assert len(got) == 47
    got = vec.most_similar("w30", topn=100, restrict_vocab=10)
    assert [w for w, _ in got] and all(vec.index[w] < 10 for w, _ in got)
    assert len(vec.most_similar("w3", topn=None)) == 50


def test_similarity_matches_gensim():
    vec = _random_vectors(seed=3)
    kv = _gensim(vec)
    for a, b in [("king", "queen"), ("東京", "café"), ("w1", "w1")]:
        assert vec.similarity(a, b) == pytest.approx(float(kv.similarity(a, b)), abs=1e-6)


# ---------------------------------------------------------------------- word2vec files
def test_binary_bytes_are_word2vec_c(tmp_path):
    vec = Vectors(("a", "bé"), np.array([[1.0, -2.5], [0.125, 3.0]], dtype=np.float32))
    path = tmp_path / "v.bin"
    vec.save_word2vec_format(path, binary=True)
    data = path.read_bytes()
    expected = (
        b"2 2\n"
        + b"a "
        + struct.pack("<2f", 1.0, -2.5)
        + b"\n"
        + "bé".encode()
        + b" "
        + struct.pack("<2f", 0.125, 3.0)
        + b"\n"
    )
    assert data == expected


def test_binary_bytes_across_write_blocks(tmp_path):
    """The writer joins its records in blocks of words: a table of several blocks (and a
    float64 one, written as float32) gives word2vec.c's bytes record by record."""
    n = 2 * vectors_mod._WRITE_BLOCK + 3
    words = [f"w{i}" if i % 7 else f"wörd{i}" for i in range(n)]
    table = np.random.default_rng(0).standard_normal((n, 3))
    path = tmp_path / "v.bin"
    Vectors(words, table).save_word2vec_format(path, binary=True)
    rows = table.astype("<f4")
    expected = f"{n} 3\n".encode() + b"".join(
        w.encode() + b" " + rows[i].tobytes() + b"\n" for i, w in enumerate(words)
    )
    assert path.read_bytes() == expected


@pytest.mark.parametrize("word", ["", "a b", "tab\there", "nb\u00a0sp", "line\n"])
def test_unwritable_words_are_named(tmp_path, word):
    vec = Vectors(("fine", word, "also"), np.ones((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=f"word {re.escape(repr(word))} cannot be written"):
        vec.save_word2vec_format(tmp_path / "v.bin", binary=True)
    assert not (tmp_path / "v.bin").exists()


def test_text_lines(tmp_path):
    vec = Vectors(("a", "b"), np.array([[1.0, -2.5], [0.1, 3e-7]], dtype=np.float32))
    path = tmp_path / "v.txt"
    vec.save_word2vec_format(path, binary=False)
    lines = path.read_text().splitlines()
    assert lines[0] == "2 2"
    assert lines[1] == "a 1 -2.5"
    assert lines[2].split(" ")[0] == "b" and len(lines[2].split(" ")) == 3
    assert np.float32(lines[2].split(" ")[1]) == np.float32(0.1)


@pytest.mark.parametrize("binary", [True, False])
def test_gensim_loads_our_files(tmp_path, binary):
    vec = _random_vectors(v=120, d=7, seed=4)
    path = tmp_path / ("v.bin" if binary else "v.txt")
    vec.save_word2vec_format(path, binary=binary)
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert kv.index_to_key == list(vec.words)
    # Text uses 9 significant digits, which round-trips float32 exactly.
    np.testing.assert_array_equal(kv.vectors, vec.matrix)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("detect", [True, False])
def test_we_load_gensim_files(tmp_path, binary, detect):
    vec = _random_vectors(v=90, d=5, seed=5)
    path = tmp_path / "g.w2v"
    _gensim(vec).save_word2vec_format(str(path), binary=binary)
    got = load_word2vec_format(path, binary=None if detect else binary)
    assert got.words == vec.words
    if binary:
        np.testing.assert_array_equal(got.matrix, vec.matrix)
    else:  # gensim prints str(float32), the shortest repr: also exact
        np.testing.assert_allclose(got.matrix, vec.matrix, rtol=0, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_own_round_trip_and_autodetect(tmp_path, binary):
    vec = _random_vectors(v=64, d=3, seed=6)
    path = tmp_path / "v"
    vec.save_word2vec_format(path, binary=binary)
    for got in (load_word2vec_format(path), Vectors.load_word2vec_format(path), load_vectors(path)):
        assert got.words == vec.words
        np.testing.assert_array_equal(got.matrix, vec.matrix)


def test_text_with_word2vec_c_trailing_space(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"2 3\nfoo 0.100000 -0.200000 0.300000 \nbar 1.000000 2.000000 3.000000 \n")
    got = load_word2vec_format(path)
    assert got.words == ("foo", "bar")
    np.testing.assert_allclose(got["foo"], [0.1, -0.2, 0.3], rtol=1e-7)


def test_truncated_or_bad_files_fail_clearly(tmp_path):
    vec = _random_vectors(v=10, d=4, seed=7)
    path = tmp_path / "v.bin"
    vec.save_word2vec_format(path, binary=True)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="ends after 9 of 10 vectors"):
        load_word2vec_format(path, binary=True)
    path.write_bytes(b"hello world\n")
    with pytest.raises(ValueError, match="first line must be 'V D'"):
        load_word2vec_format(path)
    path.write_bytes(b"2 3\na 1 2 3\nb 1 2\n")
    with pytest.raises(
        ValueError, match=r"v.bin:3: 2 values after the word 'b', the header says D=3"
    ):
        load_word2vec_format(path, binary=False)


# ------------------------------------------------------------------- defensive reading
def test_text_with_a_wrong_header_is_read_as_text_and_refused(tmp_path):
    """The header says D=5 but the rows have 4 numbers: reading it as binary used to "succeed"
    with garbage words; the content says text, so the row length is the error."""
    path = tmp_path / "v.bin"  # the extension does not decide either
    path.write_bytes(b"2 5\na 1.5 2.5 3.5 4.5\nb 5.5 6.5 7.5 8.5\n")
    with pytest.raises(
        ValueError, match=r"v.bin:2: 4 values after the word 'a', the header says D=5"
    ):
        load_word2vec_format(path)
    with pytest.raises(
        ValueError, match="asked to read word2vec binary, but its first row is text"
    ):
        load_word2vec_format(path, binary=True)


def test_binary_read_as_text_is_refused(tmp_path):
    path = tmp_path / "v.txt"
    _random_vectors(v=3, d=4, seed=1, words=WORDS[:3]).save_word2vec_format(path, binary=True)
    with pytest.raises(
        ValueError, match="asked to read word2vec text, but its first row is binary"
    ):
        load_word2vec_format(path, binary=False)


@pytest.mark.parametrize("binary", [True, False])
def test_huge_declared_count_fails_before_allocating(tmp_path, binary):
    """10^9 x 100 float32 would be 400 GB: the size check refuses it from the file's length."""
    path = tmp_path / "v"
    _random_vectors(v=3, d=100, seed=2, words=WORDS[:3]).save_word2vec_format(path, binary=binary)
    data = path.read_bytes()
    path.write_bytes(b"1000000000 100" + data[data.index(b"\n") :])
    with pytest.raises(ValueError, match=r"declares 1,000,000,000 words of 100 dims.*at least"):
        load_word2vec_format(path)


def test_more_rows_than_declared_are_refused(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"1 2\na 1 2\nb 3 4\n")
    with pytest.raises(ValueError, match="1 more rows follow the 1 the header declares"):
        load_word2vec_format(path)
    vec = _random_vectors(v=3, d=4, seed=3, words=WORDS[:3])
    vec.save_word2vec_format(path, binary=True)
    data = path.read_bytes()
    path.write_bytes(b"2 4" + data[data.index(b"\n") :])
    with pytest.raises(ValueError, match="bytes follow the 2 vectors the header declares"):
        load_word2vec_format(path)


def test_binary_with_a_wrong_dimension_is_refused(tmp_path):
    path = tmp_path / "v.bin"
    _random_vectors(v=5, d=4, seed=4, words=WORDS[:5]).save_word2vec_format(path, binary=True)
    data = path.read_bytes()
    path.write_bytes(b"5 3" + data[data.index(b"\n") :])
    with pytest.raises(ValueError, match="v.bin"):
        load_word2vec_format(path)


@pytest.mark.parametrize("binary", [True, False])
def test_non_finite_values_name_the_word(tmp_path, binary):
    matrix = np.ones((3, 2), dtype=np.float32)
    matrix[1, 1] = np.nan
    matrix[2, 0] = np.inf
    path = tmp_path / "v"
    Vectors(("a", "b", "c"), matrix).save_word2vec_format(path, binary=binary)
    where = "record 2" if binary else "line 3"
    with pytest.raises(ValueError, match=rf"the vector of 'b' \({where}\) has non-finite values"):
        load_word2vec_format(path)
    Vectors(("a", "b", "c"), matrix).save(tmp_path / "v.npz")
    with pytest.raises(ValueError, match=r"the vector of 'b' \(row 2\)"):
        load_vectors(tmp_path / "v.npz")


def test_undecodable_words_name_file_and_line(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"2 2\na 1 2\nb\xff\xfe 3 4\n")
    with pytest.raises(ValueError, match=r"v.txt:3: cannot decode as utf-8"):
        load_word2vec_format(path)
    assert load_word2vec_format(path, unicode_errors="replace").words == ("a", "b\ufffd\ufffd")
    path.write_bytes(b"1 2\n\xff " + struct.pack("<2f", 1.0, 2.0) + b"\n")
    with pytest.raises(ValueError, match=r"record 1 .*cannot be decoded as utf-8"):
        load_word2vec_format(path)


def test_corrupt_npz_is_a_value_error(tmp_path):
    path = tmp_path / "v.npz"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(ValueError, match="is not a w2v_jax vectors .npz"):
        load_vectors(path)


def test_words_with_spaces_cannot_be_written(tmp_path):
    vec = Vectors(("new york", "b"), np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="contains whitespace"):
        vec.save_word2vec_format(tmp_path / "v.txt", binary=False)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_npz_round_trip(tmp_path):
    vec = _random_vectors(v=30, d=6, seed=8)
    path = tmp_path / "v.npz"
    vec.save(path)
    for got in (Vectors.load(path), load_vectors(path)):
        assert got.words == vec.words
        np.testing.assert_array_equal(got.matrix, vec.matrix)


# ----------------------------------------------------------------------------- tables
def test_from_tables_in_out_sum():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    c = rng.standard_normal((4, 3)).astype(np.float32)
    words = ("a", "b", "c", "d")
    np.testing.assert_array_equal(from_tables(words, w, c, "in").matrix, w)
    np.testing.assert_array_equal(from_tables(words, w, c, "out").matrix, c)
    np.testing.assert_array_equal(from_tables(words, w, c, "sum").matrix, w + c)
    np.testing.assert_array_equal(from_tables(words, w, None).matrix, w)


def test_from_tables_accepts_jax_arrays_and_copies():
    import jax.numpy as jnp

    w = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    vec = from_tables(("a", "b"), w, w, "sum")
    np.testing.assert_array_equal(vec["b"], [6.0, 8.0, 10.0])
    assert vec.matrix.flags.owndata


@pytest.mark.parametrize("which", ["out", "sum"])
def test_from_tables_hs_has_no_output_word_vectors(which):
    w = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="hierarchical softmax"):
        from_tables(("a", "b", "c", "d"), w, None, which)
    node_vecs = np.zeros((3, 3), dtype=np.float32)  # [V-1, D]
    with pytest.raises(ValueError, match="node vectors"):
        from_tables(("a", "b", "c", "d"), w, node_vecs, which)
    with pytest.raises(ValueError, match="which must be one of"):
        from_tables(("a", "b", "c", "d"), w, None, "both")


def test_from_tables_shares_a_finished_table_only_when_asked():
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    shared = from_tables(["a", "b", "c"], table, copy=False)
    assert np.shares_memory(shared.matrix, table) and not shared.matrix.flags.writeable
    assert table.flags.writeable  # the caller's array is left as it was
    copied = from_tables(["a", "b", "c"], table)
    assert not np.shares_memory(copied.matrix, table)
    np.testing.assert_array_equal(copied.matrix, shared.matrix)
    # a layout that cannot be viewed as C-ordered float32 is converted either way
    strided = from_tables(["a", "b", "c"], np.asfortranarray(table.astype(np.float64)), copy=False)
    np.testing.assert_array_equal(strided.matrix, table)
