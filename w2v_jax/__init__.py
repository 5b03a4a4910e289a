"""w2v_jax: word2vec in JAX with hand-derived, tested gradients.

The Python API in one line::

    import w2v_jax
    result = w2v_jax.train("wiki-sample", w2v_jax.Config())
    result.vectors().most_similar("france")

``w2v_jax.train`` is the function; its module is imported as ``from w2v_jax.train import ...``.
"""

from w2v_jax.config import Config, DataConfig, ModelConfig, TrainConfig, override
from w2v_jax.train import TrainResult, train

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "TrainResult", "override", "train"]
__version__ = "0.1.0"
