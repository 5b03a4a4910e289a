"""Tests ``../w2v_jax/huffman.py``: optimality, tree shape, word2vec.c numbering, errors."""

import heapq
from fractions import Fraction

import numpy as np
import pytest

from w2v_jax import huffman


def _zipf_counts(V, seed, ties=False):
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.zipf(1.3, size=V))[::-1].astype(np.int64)
    if ties:
        counts = np.sort(rng.integers(1, 4, size=V))[::-1].astype(np.int64)
    return counts


def _heap_optimal_cost(counts):
    """Optimal weighted path length sum_w count_w * len_w: the sum of all merged weights."""
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def _word2vec_c_reference(counts):
    """Line-by-line transliteration of word2vec.c CreateBinaryTree (sentinel 1e15, leaf walks)."""
    V = len(counts)
    count = [int(c) for c in counts] + [int(1e15)] * V
    binary = [0] * (2 * V)
    parent_node = [0] * (2 * V)
    pos1, pos2 = V - 1, V
    for a in range(V - 1):
        mins = []
        for _ in range(2):
            if pos1 >= 0 and count[pos1] < count[pos2]:
                mins.append(pos1)
                pos1 -= 1
            else:
                mins.append(pos2)
                pos2 += 1
        count[V + a] = count[mins[0]] + count[mins[1]]
        parent_node[mins[0]] = parent_node[mins[1]] = V + a
        binary[mins[1]] = 1
    out = []
    for a in range(V):
        code, point, b = [], [], a
        while True:
            code.append(binary[b])
            point.append(b)
            b = parent_node[b]
            if b == 2 * V - 2:
                break
        i = len(code)
        vcode = [0] * i
        vpoint = [0] * (i + 1)
        vpoint[0] = V - 2
        for k in range(i):
            vcode[i - k - 1] = code[k]
            vpoint[i - k] = point[k] - V
        out.append((vcode, vpoint[:i]))  # vpoint[i] = a - V is the leaf itself, never read
    return out


COUNT_CASES = [
    pytest.param(np.array([5, 3, 2, 2, 1]), id="small"),
    pytest.param(_zipf_counts(37, 0), id="zipf37"),
    pytest.param(_zipf_counts(200, 1), id="zipf200"),
    pytest.param(_zipf_counts(64, 2, ties=True), id="ties64"),
    pytest.param(np.ones(16, np.int64), id="uniform16"),
]


@pytest.mark.parametrize("counts", COUNT_CASES)
def test_weighted_path_length_is_optimal(counts):
    tree = huffman.build_huffman(counts)
    cost = int(np.sum(counts * tree.lengths.astype(np.int64)))
    assert cost == _heap_optimal_cost(counts)


@pytest.mark.parametrize("counts", COUNT_CASES)
def test_codes_are_prefix_free_and_kraft_sum_is_one(counts):
    tree = huffman.build_huffman(counts)
    words = [tuple(tree.codes[w, : tree.lengths[w]]) for w in range(len(counts))]
    assert len(set(words)) == len(words)
    as_set = set(words)
    for code in words:
        assert not any(code[:j] in as_set for j in range(len(code)))
    assert sum(Fraction(1, 2 ** len(code)) for code in words) == 1


@pytest.mark.parametrize("counts", COUNT_CASES)
def test_matches_word2vec_c_exactly(counts):
    tree = huffman.build_huffman(counts)
    for w, (code, point) in enumerate(_word2vec_c_reference(counts)):
        n = tree.lengths[w]
        assert n == len(code)
        np.testing.assert_array_equal(tree.codes[w, :n], code)
        np.testing.assert_array_equal(tree.points[w, :n], point)


@pytest.mark.parametrize("counts", COUNT_CASES)
def test_paths_form_one_tree(counts):
    """Same code prefix <-> same inner node; V - 1 inner nodes; root V - 2 first; padding 0."""
    tree = huffman.build_huffman(counts)
    V, L = tree.codes.shape
    assert tree.codes.dtype == tree.points.dtype == tree.lengths.dtype == np.int32
    assert L == tree.lengths.max() and tree.lengths.min() >= 1
    assert np.all(tree.points[:, 0] == V - 2)
    node_of_prefix = {}
    for w in range(V):
        n = tree.lengths[w]
        for j in range(n):
            prefix = tuple(tree.codes[w, :j])
            assert node_of_prefix.setdefault(prefix, tree.points[w, j]) == tree.points[w, j]
    assert sorted(node_of_prefix.values()) == list(range(V - 1))
    pad = ~huffman.huffman_path_mask(tree.lengths, L)
    assert np.all(tree.codes[pad] == 0) and np.all(tree.points[pad] == 0)
    assert set(np.unique(tree.codes)) <= {0, 1}


@pytest.mark.parametrize("counts", COUNT_CASES)
@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0])
def test_leaf_probabilities_sum_to_one(counts, scale):
    tree = huffman.build_huffman(counts)
    rng = np.random.default_rng(7)
    D = 6
    for _ in range(3):
        v_c = scale * rng.normal(size=D)
        node_vecs = scale * rng.normal(size=(len(counts) - 1, D))
        p = huffman.hs_path_probabilities(tree, v_c, node_vecs)
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)


def test_two_words():
    tree = huffman.build_huffman([7, 3])
    # One inner node (id 0 = V - 2, the root); word2vec.c gives the heavier word branch 1.
    np.testing.assert_array_equal(tree.codes, [[1], [0]])
    np.testing.assert_array_equal(tree.points, [[0], [0]])
    np.testing.assert_array_equal(tree.lengths, [1, 1])


def test_no_depth_cap():
    """Counts 2^(V-1), ..., 2, 1, 1 give a chain: the deepest code is V - 1 > word2vec.c's 40."""
    V = 50
    counts = np.array([2**k for k in range(V - 2, -1, -1)] + [1], np.int64)
    tree = huffman.build_huffman(counts)
    assert tree.codes.shape == (V, V - 1)
    np.testing.assert_array_equal(tree.lengths, list(range(1, V)) + [V - 1])
    assert int(np.sum(counts * tree.lengths)) == _heap_optimal_cost(counts)


def test_float_counts_and_zeros():
    tree = huffman.build_huffman(np.array([3.5, 2.0, 0.0, 0.0]))
    assert tree.codes.shape[0] == 4
    assert sum(Fraction(1, 2 ** int(n)) for n in tree.lengths) == 1


def test_path_mask():
    mask = huffman.huffman_path_mask(np.array([1, 3, 2]), 3)
    np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 1, 1], [1, 1, 0]])
    assert mask.dtype == bool


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ([5], "at least 2 words"),
        ([], "at least 2 words"),
        ([[3, 2], [1, 1]], "1-D"),
        ([1, 5, 3], r"descending.*counts\[0\]=1 < counts\[1\]=5"),
        ([5, 3, -1], ">= 0"),
        ([5.0, np.nan], "finite"),
        (["a", "b"], "numbers"),
    ],
)
def test_bad_counts(counts, match):
    with pytest.raises(ValueError, match=f"build_huffman: .*{match}"):
        huffman.build_huffman(counts)


def test_path_probabilities_checks_node_vecs():
    tree = huffman.build_huffman([3, 2, 1])
    with pytest.raises(ValueError, match=r"node_vecs must be \[V - 1, D\] with V=3"):
        huffman.hs_path_probabilities(tree, np.ones(4), np.ones((3, 4)))
