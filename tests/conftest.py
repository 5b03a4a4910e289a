"""Global JAX flags for the whole suite, set once (never toggled inside a test).

float64 makes the gradient checks meaningful at 1e-10; rank promotion raises so that a
silently broadcast [B] against [B, 1] is a failure, not a wrong number.
"""

import os

# Tests run on CPU even where a GPU is visible; the sharding tests ask for 4 host devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import tempfile  # noqa: E402

# Encoded-corpus caches of the suite go to a fresh folder, never the user's ~/.cache.
os.environ.setdefault("W2V_JAX_CACHE", tempfile.mkdtemp(prefix="w2v_jax_test_cache_"))
# The CLI turns on JAX's persistent compilation cache, a process-wide setting: off for the
# in-process CLI calls of the suite; test_cli checks the cache in subprocesses of its own.
os.environ.setdefault("W2V_JAX_XLA_CACHE", "off")


import pytest  # noqa: E402


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A cache folder ($W2V_JAX_CACHE) of the test's own, empty at its start: for tests that
    count what gets cached or read."""
    monkeypatch.setenv("W2V_JAX_CACHE", str(tmp_path / "cache"))
