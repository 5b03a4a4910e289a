"""Helpers shared by test modules (imported as ``_helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from w2v_jax import step as step_lib
from w2v_jax import trainer


def fused_or_skip() -> None:
    from w2v_jax import fused

    if not fused.fused_available():
        pytest.skip(f"fused kernel unavailable: {fused.unavailable_reason()}")


def values(cfg, counts: np.ndarray):
    """``(objective, inputs, tx, consts)`` of a config, as :func:`w2v_jax.train` resolves them."""
    objective, inputs, tx = trainer.resolve(cfg)
    consts = jax.device_put(objective.make_consts(np.asarray(counts)))
    return objective, inputs, tx, consts


def config_step(cfg, counts: np.ndarray):
    """``(step, consts, tx, objective)``: the un-jitted single step ``cfg.train.update`` names."""
    objective, inputs, tx, consts = values(cfg, counts)
    return step_lib.for_config(cfg, objective, inputs, tx), consts, tx, objective
