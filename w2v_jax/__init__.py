"""w2v_jax: word2vec in JAX with hand-derived, tested gradients."""

__version__ = "0.1.0"
