"""Names: how word2vec.c's variables map onto ours (CS224N notation).

==================  =======================  ===================================================
word2vec.c          w2v_jax                  meaning
==================  =======================  ===================================================
``syn0``            ``center_vecs`` [V, D]   input vectors; the embeddings we export (v)
``syn1neg``         ``outside_vecs`` [V, D]  output vectors for SGNS and the full softmax (u)
``syn1``            ``node_vecs`` [N, D]     HS inner-node vectors, N = V - 1
``layer1_size``     ``D``                    embedding dimension
``negative``        ``K``                    negatives per (center, outside) pair
``vocab_size``      ``V``                    vocabulary size
``window``          ``W``                    maximum window radius
``neu1``            ``h``                    CBOW hidden vector (``losses.cbow_hidden``)
``neu1e``           ``-alpha * dJ/dh``       accumulated error: minus the SGD step on h (or v_c)
``vocab[w].point``  ``points[w]``            HS inner nodes on w's path (``huffman.py``)
``vocab[w].code``   ``codes[w]``             HS branch bits on w's path
``codelen``         ``lengths[w]``           HS code length
==================  =======================  ===================================================

Direction of skip-gram. word2vec.c's skip-gram loop sets ``l1 = last_word * layer1_size``: it
reads ``syn0`` of the *context* word and predicts the *center* word ``word`` through
``syn1neg``/``syn1``, i.e. it models P(center | context). We follow CS224N and model P(o | c):
``v_c = center_vecs[center]`` predicts the outside word through ``u_o = outside_vecs[context]``.
Every (center, context) pair inside a window also occurs with the roles swapped, so both
directions train on the same multiset of pairs (up to which word's dynamic window admitted it)
and ``center_vecs`` plays the role of ``syn0``. For CBOW the two agree: the context rows of
``syn0`` are averaged and predict the center word.

Signs. word2vec.c computes ``g = (label - sigma) * alpha`` and adds it (gradient *ascent* on the
log-likelihood); :mod:`w2v_jax.gradients` returns gradients of the loss J = -log-likelihood, so
word2vec.c's ``g`` is ``-alpha`` times our score coefficient.
"""

WORD2VEC_NAMES: dict[str, str] = {
    "syn0": "center_vecs",
    "syn1neg": "outside_vecs",
    "syn1": "node_vecs",
    "layer1_size": "D",
    "negative": "K",
    "vocab_size": "V",
    "window": "W",
    "neu1": "h",
    "neu1e": "-alpha * dJ/dh",
    "point": "points",
    "code": "codes",
    "codelen": "lengths",
}
