"""JAX's default random generator in NumPy, bit for bit, for the draws a run makes before its
first step: the keys of its seed and the initial table of word vectors.

JAX traces and lowers a small program for each of these draws at every start of a process, even
when its compilation cache holds the compiled code; on a small vocabulary that is most of the
time a run spends before training (BENCHMARKS.md, "The start and end of a run"). The same bits
in NumPy take milliseconds. They are JAX's only while JAX draws them this way (the
``threefry2x32`` generator in its partitionable form, JAX's default):
:func:`matches_jax` says whether it does, and the callers fall back to ``jax.random`` otherwise.
The tests compare every function here with ``jax.random``.

Threefry-2x32 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) maps a
key ``(k_0, k_1)`` and a counter ``(x_0, x_1)`` of 32-bit words to two words, in 20 rounds of

.. math:: x_0 \\leftarrow x_0 + x_1, \\quad x_1 \\leftarrow \\mathrm{rotl}(x_1, r) \\oplus x_0

(arithmetic modulo :math:`2^{32}`, rotations ``r`` from two fixed sets of four), with the key
schedule ``k_2 = k_0 ^ k_1 ^ 0x1BD11BDA`` added every four rounds.

In the partitionable form, element ``i`` of a draw of any shape depends only on the key and on
the counter ``(i >> 32, i & 0xFFFFFFFF)``: so a block of a table can be drawn without the rest.
"""

from __future__ import annotations

import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
_MASK = 0xFFFFFFFF
# Elements hashed at a time: the working arrays stay in the core's cache.
_CHUNK = 1 << 15


def matches_jax(impl: str | None = None) -> bool:
    """Whether JAX draws keys of generator ``impl`` (default: JAX's default generator) as the
    functions here do: Threefry-2x32 in its partitionable form."""
    import jax

    impl = str(jax.config.jax_default_prng_impl) if impl is None else impl
    return impl == "threefry2x32" and bool(jax.config.jax_threefry_partitionable)


def hash2x32(key_2: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 of counters ``(x0, x1)`` under ``key_2``, element by element.

    Args:
      key_2: [2] uint32, ``(k_0, k_1)``.
      x0, x1: [N] uint32, the counters' high and low words (overwritten: the result).

    Returns:
      ``(y0, y1)``: [N] uint32 each, ``x0`` and ``x1`` themselves.
    """
    k0, k1 = int(key_2[0]), int(key_2[1])
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    tmp = np.empty_like(x1)
    x0 += np.uint32(ks[0])
    x1 += np.uint32(ks[1])
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 += x1
            np.left_shift(x1, r, out=tmp)  # rotl(x1, r) = (x1 << r) | (x1 >> (32 - r))
            x1 >>= 32 - r
            x1 |= tmp
            x1 ^= x0
        # the key injection after each four rounds: words i+1 and i+2 of the schedule, plus i+1
        x0 += np.uint32(ks[(i + 1) % 3])
        x1 += np.uint32((ks[(i + 2) % 3] + i + 1) & _MASK)
    return x0, x1


def seed_key(seed: int) -> np.ndarray:
    """The data of ``jax.random.key(seed)`` for a seed in ``[0, 2**32)``: ``[0, seed]``.

    Returns:
      [2] uint32.
    """
    if not 0 <= seed <= _MASK:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return np.array([0, seed], np.uint32)


def split(key_2: np.ndarray, num: int = 2) -> np.ndarray:
    """The data of ``jax.random.split(key, num)``: key ``j`` is the hash of counter ``(0, j)``.

    Returns:
      [num, 2] uint32.
    """
    y0, y1 = hash2x32(key_2, np.zeros(num, np.uint32), np.arange(num, dtype=np.uint32))
    return np.stack([y0, y1], axis=1)


def split_seed(seed: int, num: int = 2) -> tuple:
    """``tuple(jax.random.split(jax.random.key(seed), num))``: the same keys, drawn here when JAX
    would draw them alike (:func:`matches_jax`).

    Returns:
      ``num`` JAX key arrays of shape [].
    """
    import jax

    if matches_jax():
        return tuple(jax.random.wrap_key_data(k) for k in split(seed_key(seed), num))
    return tuple(jax.random.split(jax.random.key(seed), num))


def symmetric_uniform(
    key_2: np.ndarray, dim: int, bound: float, rows: tuple[int, int], cols: tuple[int, int]
) -> np.ndarray:
    """Rows ``rows = (lo, hi)`` and columns ``cols = (c0, c1)`` of
    ``jax.random.uniform(key, (R, dim), float32, -bound, bound)``, for any ``R >= hi``.

    Element ``(r, c)`` takes the bits ``t_0 ^ t_1`` of the hash of its flat index ``i = r * dim
    + c``; their top 23 bits, under the exponent of 1, make ``f = 1.m - 1`` in ``[0, 1)``, and
    the value is ``max(-b, f (b - (-b)) + (-b))`` with ``b = float32(bound)``. JAX rounds that
    product and sum once (XLA fuses them into one multiply-add); here it is exact in float64 and
    then rounded once, which is the same number: ``f = m / 2^23`` and ``2b`` has 24 significant
    bits, so ``f 2b - b = 2b (m - 2^22) / 2^23`` has at most 47. (For bounds that are not
    symmetric the sum need not be exact in float64, hence only this case.)

    Returns:
      [hi - lo, c1 - c0] float32.
    """
    (lo, hi), (c0, c1) = rows, cols
    b = np.float32(bound)
    low, span = -np.float64(b), np.float64(b - (-b))
    out = np.empty((hi - lo, c1 - c0), np.float32)
    flat = out.reshape(-1)
    width = c1 - c0
    step = max(1, _CHUNK // max(width, 1))  # rows per chunk
    col_W = np.arange(c0, c1, dtype=np.uint64)
    for r in range(lo, hi, step):
        r_end = min(hi, r + step)
        index = (np.arange(r, r_end, dtype=np.uint64)[:, None] * np.uint64(dim) + col_W).ravel()
        x0 = (index >> np.uint64(32)).astype(np.uint32)
        x1 = index.astype(np.uint32)  # the low word: the cast keeps it
        t0, t1 = hash2x32(key_2, x0, x1)
        t0 ^= t1
        t0 >>= 9
        t0 |= np.uint32(0x3F800000)  # exponent of 1: a float in [1, 2)
        f = t0.view(np.float32).astype(np.float64) - 1.0
        values = np.maximum(f * span + low, low)  # exact in float64
        flat[(r - lo) * width : (r_end - lo) * width] = values
    return out
