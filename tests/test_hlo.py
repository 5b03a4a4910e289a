"""Tests `../w2v_jax/hlo.py`: the compiled-HLO readers see what they claim to see."""

import jax
import jax.numpy as jnp

from w2v_jax import hlo


def test_vocab_sized_ops_flags_a_table_copy():
    v = 5003
    table = jnp.zeros((v, 4), jnp.float32)
    ids = jnp.arange(8, dtype=jnp.int32)

    def copy_then_scatter(t, i):  # t is not donated: XLA must copy it to update it
        return t.at[i].add(1.0), t[i]

    text = jax.jit(copy_then_scatter).lower(table, ids).compile().as_text()
    assert hlo.vocab_sized_ops(text, v)
    donated = jax.jit(lambda t, i: t.at[i].add(1.0), donate_argnums=0)
    assert hlo.vocab_sized_ops(donated.lower(table, ids).compile().as_text(), v) == []
