r"""Huffman tree for hierarchical softmax: each word's ``points`` and ``codes`` (host numpy).

The tree is built by word2vec.c's linear two-queue method (CreateBinaryTree): the leaves, sorted by
descending count, form one queue read from its light end; merged inner nodes form a second queue
that is born sorted. Each step merges the two lightest nodes; the second pick becomes branch 1.
Ties go to the inner-node queue, exactly as in word2vec.c, so the trees are identical.

Numbering follows word2vec.c's ``point[d] - vocab_size``: inner node ``a`` is the ``a``-th merge,
ids run over ``[0, V - 2]`` and the root is ``V - 2``. For word ``w`` with code length
``lengths[w]``:

* ``points[w, j]`` is the inner node at depth ``j`` on the way down (``points[w, 0] = V - 2``);
* ``codes[w, j]`` is the branch taken there, 0 or 1 (word2vec.c: 0 means :math:`\sigma(x)`,
  1 means :math:`\sigma(-x)`, see :func:`w2v_jax.losses.hierarchical_softmax_loss`);
* entries at ``j >= lengths[w]`` are 0 padding; ``L = max(lengths)`` with no depth cap
  (word2vec.c stops at MAX_CODE_LENGTH = 40; we size L to the tree).

Anchor: tmikolov/word2vec:word2vec.c (CreateBinaryTree).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Huffman(NamedTuple):
    """Padded Huffman paths of all V words (numpy, built once on the host)."""

    codes: np.ndarray  # [V, L] int32 in {0, 1}, branch at each depth; padding 0
    points: np.ndarray  # [V, L] int32 in [0, V - 2], inner node at each depth; padding 0
    lengths: np.ndarray  # [V] int32 in [1, L], code length of each word


def _check_counts(counts) -> np.ndarray:
    a = np.asarray(counts)
    if a.ndim != 1:
        raise ValueError(f"build_huffman: counts must be 1-D [V], got shape {a.shape}")
    if a.size < 2:
        raise ValueError(
            f"build_huffman: counts needs at least 2 words (a tree over V=1 has no inner node), "
            f"got V={a.size}"
        )
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"build_huffman: counts must be numbers, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)) or a.min() < 0:
        raise ValueError("build_huffman: counts must be finite and >= 0")
    rises = np.flatnonzero(np.diff(a) > 0)
    if rises.size:
        i = int(rises[0])
        raise ValueError(
            "build_huffman: counts must be sorted in descending order (as vocab.py sorts them), "
            f"but counts[{i}]={a[i]} < counts[{i + 1}]={a[i + 1]}"
        )
    return a


def _merge_two_queues(counts: list) -> tuple[np.ndarray, np.ndarray]:
    """word2vec.c's CreateBinaryTree merge loop.

    Nodes 0..V-1 are the leaves, node V + a is the a-th merge (root 2V - 2).

    Returns:
      ``parent`` [2V - 2] node id of each non-root node's parent, and ``branch`` [2V - 2] 1 where
      the node was the second pick of its merge (word2vec.c's ``binary``).
    """
    V = len(counts)
    weight = counts + [0] * (V - 1)
    parent = [0] * (2 * V - 2)
    branch = [0] * (2 * V - 2)
    leaf, inner = V - 1, V  # word2vec.c pos1 (lightest unused leaf), pos2 (oldest unused merge)
    for new in range(V, 2 * V - 1):
        picks = []
        for _ in range(2):
            # Take the leaf only if it is strictly lighter than the oldest unused merge (ties and
            # an exhausted leaf queue go to the merge), as word2vec.c's `count[pos1] < count[pos2]`.
            if leaf >= 0 and (inner == new or weight[leaf] < weight[inner]):
                picks.append(leaf)
                leaf -= 1
            else:
                picks.append(inner)
                inner += 1
        weight[new] = weight[picks[0]] + weight[picks[1]]
        parent[picks[0]] = parent[picks[1]] = new
        branch[picks[1]] = 1
    return np.asarray(parent, np.int64), np.asarray(branch, np.int32)


def build_huffman(counts) -> Huffman:
    """Builds the Huffman paths of all words from counts sorted in descending order.

    O(V) for the tree (two queues, no heap) plus O(sum of code lengths) numpy work for the
    paths (under a second for V = 100k, about ten seconds for V = 1M on a small CPU).

    Args:
      counts: [V] non-negative counts, sorted descending (word 0 the most frequent), V >= 2.

    Returns:
      :class:`Huffman` with ``codes`` [V, L], ``points`` [V, L] and ``lengths`` [V], int32.

    Raises:
      ValueError: counts not 1-D, V < 2, negative or non-finite, or not sorted descending.
    """
    counts = _check_counts(counts)
    V = counts.size
    parent, branch = _merge_two_queues(counts.tolist())
    root = 2 * V - 2

    # Walk all leaves up to the root in lockstep, dropping each one as it arrives: first to
    # measure the code lengths, then to write each path from its deepest slot back to slot 0.
    lengths = np.zeros(V, np.int64)
    words = node = np.arange(V)
    while words.size:
        lengths[words] += 1
        node = parent[node]
        below_root = node != root
        words, node = words[below_root], node[below_root]
    L = int(lengths.max())

    codes = np.zeros(V * L, np.int32)  # flat [V, L]
    points = np.zeros(V * L, np.int32)
    slot = np.arange(V) * L + lengths - 1  # flat index of each word's deepest slot
    node = np.arange(V)
    while node.size:
        codes[slot] = branch[node]
        points[slot] = parent[node] - V
        node = parent[node]
        below_root = node != root
        node, slot = node[below_root], slot[below_root] - 1
    return Huffman(
        codes=codes.reshape(V, L), points=points.reshape(V, L), lengths=lengths.astype(np.int32)
    )


def huffman_path_mask(lengths, L: int) -> np.ndarray:
    """[V, L] bool, True at the on-path slots ``j < lengths[w]``."""
    return np.arange(L)[None, :] < np.asarray(lengths)[:, None]


def hs_path_probabilities(tree: Huffman, v_c, node_vecs) -> np.ndarray:
    r"""P(w | c) for every leaf w, straight from the tree (a numpy reference for HS).

    .. math::

        P(w \mid c) = \prod_{j < \ell_w} \sigma\big((1 - 2\,\mathrm{codes}_{w,j})\,
            n_{\mathrm{points}_{w,j}}^\top v_c\big)

    These sum to 1 over the V words for any ``v_c`` and ``node_vecs``, because the two branches
    of every inner node carry :math:`\sigma(x) + \sigma(-x) = 1`. The tests use this as an
    invariant of the tree and of :func:`w2v_jax.losses.hierarchical_softmax_loss`.

    Args:
      tree: the :class:`Huffman` paths.
      v_c: [D] float, a center vector.
      node_vecs: [V - 1, D] float, one vector per inner node.

    Returns:
      [V] float64 probabilities.
    """
    V, L = tree.codes.shape
    node_vecs = np.asarray(node_vecs, np.float64)
    if node_vecs.ndim != 2 or node_vecs.shape[0] != V - 1:
        raise ValueError(
            f"hs_path_probabilities: node_vecs must be [V - 1, D] with V={V}, got {node_vecs.shape}"
        )
    x_VxL = (1 - 2 * tree.codes) * (node_vecs[tree.points] @ np.asarray(v_c, np.float64))
    log_sig_VxL = -np.logaddexp(0.0, -x_VxL)
    on_path_VxL = huffman_path_mask(tree.lengths, L)
    return np.exp(np.sum(np.where(on_path_VxL, log_sig_VxL, 0.0), axis=1))
