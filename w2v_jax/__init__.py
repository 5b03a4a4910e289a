"""w2v_jax: word2vec in JAX with hand-derived, tested gradients.

The Python API in one line::

    import w2v_jax
    result = w2v_jax.train("wiki-sample", w2v_jax.Config())
    result.vectors().most_similar("france")

``w2v_jax.train`` is :func:`w2v_jax.trainer.train`. It is loaded on first use, so that importing
the math alone (``w2v_jax.losses``, ``w2v_jax.gradients``) loads neither the trainer nor optax.
"""

from w2v_jax.config import Config, DataConfig, ModelConfig, TrainConfig, override

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "TrainResult", "override", "train"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from w2v_jax import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'w2v_jax' has no attribute {name!r}")
