"""Fused CPU kernels (gather, exact update, scatter in one pass) called from JAX through XLA FFI.

The pure-XLA row-sparse step runs its gathers and scatters on one thread with several passes
over memory, which caps it near 1M pairs/s on CPU. The kernels in ``kernels/w2v_kernels.cc`` do
word2vec.c's per-pair SGD in one pass, in place on the tables, on ``num_threads`` threads
(Hogwild, like word2vec.c and gensim). See the header of that file for the exact semantics;
the short version:

* per pair, ``h = center_vecs[center]``; for the positive (label 1) then each negative (label 0):
  ``f = h.u``, ``g = (label - sigmoid(f)) * lr * mask``, ``neu1e += g*u``, ``u += g*h``; finally
  ``center_vecs[center] += neu1e``. Exact sigmoid, no EXP_TABLE, no MAX_EXP clipping.
* negatives equal to the positive are kept (word2vec.c skips them).
* ``loss[i]`` is the pair's SGNS loss on the values before its update (0 where ``mask == 0``).
* ``num_threads=1`` is sequential and deterministic; more threads race on shared rows (accepted,
  as in word2vec.c), so results then depend on timing, unless ``deterministic=True``: then each
  thread takes a fixed range of the batch, and a row that several ranges touch is updated in
  private copies that are merged in thread order at the end of the call (bit-reproducible for a
  given thread count; at most 32 threads).
* the tables are updated in place (``input_output_aliases``): inside ``jax.jit(...,
  donate_argnums=...)`` no table is copied. Without donation XLA copies the table first.
* CPU only: the targets are registered for the ``cpu`` platform, so use them when the tables
  live on a CPU device (``jax.default_backend() == "cpu"``); on GPU/TPU keep the pure-JAX step.

The shared library is built lazily on first use with the system ``g++`` (about 15 s) into a cache
directory (``$W2V_JAX_KERNEL_CACHE``, else ``$W2V_JAX_CACHE/kernels``, else
``~/.cache/w2v_jax/kernels``), keyed by a hash of the source, the flags, the compiler, the CPU
and the jax/jaxlib versions, compiled under a temporary name and renamed into place atomically.
:func:`fused_available` says whether that worked; nothing here raises at import time, so the
trainer can fall back to the pure-JAX path.
Set ``W2V_JAX_DISABLE_FUSED=1`` to force the fallback, ``W2V_JAX_CXX`` to pick another compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CXX_FLAGS",
    "alias_sample",
    "alias_table",
    "cbow_hs_update",
    "cbow_ns_update",
    "cbow_ns_update_sampled",
    "default_num_threads",
    "make_step",
    "fused_available",
    "library_path",
    "seed_words",
    "sg_hs_update",
    "sgns_update",
    "sgns_update_sampled",
    "unavailable_reason",
    "unsupported",
    "vose_alias_loaded",
]

SOURCE = Path(__file__).with_name("kernels") / "w2v_kernels.cc"
CXX_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")

# FFI target name -> exported symbol in the shared library.
_TARGETS = {
    "w2v_sgns_update": "W2vSgnsUpdate",
    "w2v_sgns_sampled_update": "W2vSgnsSampledUpdate",
    "w2v_alias_sample": "W2vAliasSample",
    "w2v_sg_hs_update": "W2vSgHsUpdate",
    "w2v_cbow_ns_update": "W2vCbowNsUpdate",
    "w2v_cbow_ns_sampled_update": "W2vCbowNsSampledUpdate",
    "w2v_cbow_hs_update": "W2vCbowHsUpdate",
}

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib", "path", "error"


# ------------------------------------------------------------------------------------------------
# Build, load, register.


def _cache_dir() -> Path:
    """$W2V_JAX_KERNEL_CACHE, else $W2V_JAX_CACHE/kernels, else ~/.cache/w2v_jax/kernels."""
    env = os.environ.get("W2V_JAX_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    env = os.environ.get("W2V_JAX_CACHE")
    if env:
        return Path(env).expanduser() / "kernels"
    return Path.home() / ".cache" / "w2v_jax" / "kernels"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("W2V_JAX_CXX", "g++"))


def _cpu_fingerprint() -> str:
    """-march=native code must not be reused on another CPU sharing the same home directory."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _jaxlib_version() -> str:
    try:
        import jaxlib

        return str(getattr(jaxlib, "__version__", ""))
    except ImportError:
        return ""


def library_path() -> Path | None:
    """Where the shared library for this source/compiler/CPU/jax lives (None without a compiler)."""
    cxx = _compiler()
    if cxx is None:
        return None
    h = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(CXX_FLAGS).encode(),
        _compiler_version(cxx).encode(),
        _cpu_fingerprint().encode(),
        jax.__version__.encode(),
        _jaxlib_version().encode(),
    ):
        h.update(part)
        h.update(b"\0")
    return _cache_dir() / f"w2v_kernels-{h.hexdigest()[:16]}.so"


def _build(path: Path, cxx: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp.so")
    os.close(fd)
    cmd = [cxx, *CXX_FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(
                f"compiling the fused kernels failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}"
            )
        os.replace(tmp, path)  # atomic: concurrent builders race harmlessly
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL:
    """Build (if needed), load and register once; raise RuntimeError with the reason otherwise."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        if "error" in _state:
            raise RuntimeError(_state["error"])
        try:
            if os.environ.get("W2V_JAX_DISABLE_FUSED", "") not in ("", "0"):
                raise RuntimeError("disabled by W2V_JAX_DISABLE_FUSED")
            if not SOURCE.exists():
                raise RuntimeError(f"kernel source missing: {SOURCE}")
            cxx = _compiler()
            if cxx is None:
                raise RuntimeError(
                    f"no C++ compiler found ({os.environ.get('W2V_JAX_CXX', 'g++')} not on PATH)"
                )
            path = library_path()
            assert path is not None
            if not path.exists():
                try:
                    _build(path, cxx)
                except OSError:  # cache folder not writable: build in a private temp folder
                    private = Path(tempfile.gettempdir()) / f"w2v_jax_kernels_{os.getuid()}"
                    path = private / path.name
                    if not path.exists():
                        _build(path, cxx)
            lib = ctypes.CDLL(str(path))
            for target, symbol in _TARGETS.items():
                jax.ffi.register_ffi_target(
                    target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu"
                )
            lib.w2v_vose_alias.restype = None
            lib.w2v_vose_alias.argtypes = [
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
        except Exception as e:  # noqa: BLE001 - any failure means "use the fallback"
            _state["error"] = f"{type(e).__name__}: {e}"
            raise RuntimeError(_state["error"]) from e
        _state["lib"] = lib
        _state["path"] = path
        return lib


def fused_available() -> bool:
    """True if the fused CPU kernels compiled and registered (builds them on the first call).

    Never raises; :func:`unavailable_reason` says why it is False.
    """
    try:
        _load()
    except RuntimeError:
        return False
    return True


def unavailable_reason() -> str | None:
    """None if the kernels are usable, else the reason (no compiler, compile error, disabled)."""
    return None if fused_available() else str(_state.get("error"))


def default_num_threads() -> int:
    """The cores this process may use (sched_getaffinity), the default kernel thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------
# Host helpers.


def alias_table(weights) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table for drawing ids with probability proportional to ``weights``.

    Args:
      weights: [V] non-negative, finite, positive sum (e.g. ``counts ** 0.75``).

    Returns:
      ``(alias_prob [V] float32, alias_idx [V] int32)``: draw a column j uniformly, keep j with
      probability ``alias_prob[j]``, else take ``alias_idx[j]``.
    """
    w = np.ascontiguousarray(np.asarray(weights, dtype=np.float64).reshape(-1))
    if w.size == 0 or w.size >= 2**31:
        raise ValueError(f"alias_table needs 1 <= V < 2**31 weights, got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("alias_table weights must be finite, >= 0, with a positive sum")
    prob, alias = _vose_alias(_load(), w / w.sum() * w.size)
    return prob.astype(np.float32), alias.astype(np.int32)


def vose_alias_loaded(q: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`w2v_jax.sampling.vose_alias`'s loop in C++, the same operations so the same bits
    (``q`` [V] float64 -> prob [V] float64, alias [V] int64), if the kernel library is already
    loaded; else None, since building it only for this would cost more than it saves."""
    lib = _state.get("lib")
    return None if lib is None else _vose_alias(lib, q)


def _vose_alias(lib: ctypes.CDLL, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.ascontiguousarray(q, dtype=np.float64)
    prob = np.empty(q.size, np.float64)
    alias = np.empty(q.size, np.int64)
    lib.w2v_vose_alias(q.ctypes.data, q.size, prob.ctypes.data, alias.ctypes.data)
    return prob, alias


def seed_words(key: jax.Array) -> jax.Array:
    """Two uint32 words for the in-kernel generator, from a JAX PRNG key (jittable)."""
    return jax.random.bits(key, (2,), jnp.uint32)


# ------------------------------------------------------------------------------------------------
# Boundary checks.


def _check(name: str, x, dtype, ndim: int) -> None:
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise ValueError(f"{name} must be an array, got {type(x).__name__}")
    if x.dtype != dtype:
        raise ValueError(
            f"{name} must be {np.dtype(dtype).name}, got {x.dtype} (cast it with .astype)"
        )
    if len(x.shape) != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {tuple(x.shape)}")


def _same(what: str, a: int, b: int) -> None:
    if a != b:
        raise ValueError(f"{what}: {a} != {b}")


def _tables(center_vecs, outside_vecs, out_name: str = "outside_vecs") -> tuple[int, int]:
    _check("center_vecs", center_vecs, jnp.float32, 2)
    _check(out_name, outside_vecs, jnp.float32, 2)
    _same(
        f"center_vecs and {out_name} must have the same D",
        center_vecs.shape[1],
        outside_vecs.shape[1],
    )
    if max(center_vecs.shape[0], outside_vecs.shape[0]) >= 2**31:
        raise ValueError("tables must have fewer than 2**31 rows (int32 ids)")
    return center_vecs.shape[0], center_vecs.shape[1]


def _lr(lr) -> jax.Array:
    lr = jnp.asarray(lr)
    if lr.shape != ():
        raise ValueError(f"lr must be a scalar, got shape {lr.shape}")
    if not jnp.issubdtype(lr.dtype, jnp.floating):
        raise ValueError(f"lr must be a float scalar, got {lr.dtype}")
    return lr.astype(jnp.float32)


def _seed(seed) -> jax.Array:
    seed = jnp.asarray(seed)
    if seed.dtype != jnp.uint32 or seed.shape != (2,):
        raise ValueError(
            f"seed must be uint32 [2] (e.g. fused.seed_words(key)), got {seed.dtype} {seed.shape}"
        )
    return seed


def _alias(alias_prob, alias_idx) -> None:
    _check("alias_prob", alias_prob, jnp.float32, 1)
    _check("alias_idx", alias_idx, jnp.int32, 1)
    _same("alias_prob and alias_idx lengths", alias_prob.shape[0], alias_idx.shape[0])
    if alias_prob.shape[0] == 0:
        raise ValueError("empty alias table")


def _threads(num_threads: int | None) -> np.int64:
    if num_threads is None:
        return np.int64(default_num_threads())
    if int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return np.int64(int(num_threads))


def _hs(points, codes, lengths) -> None:
    _check("points", points, jnp.int32, 2)
    _check("codes", codes, jnp.int32, 2)
    _check("lengths", lengths, jnp.int32, 1)
    _same("points and codes shapes", tuple(points.shape), tuple(codes.shape))
    _same("lengths and points rows", lengths.shape[0], points.shape[0])


def _cbow_context(context, context_mask, b: int) -> None:
    _check("context", context, jnp.int32, 2)
    _check("context_mask", context_mask, jnp.float32, 2)
    _same("context rows and batch", context.shape[0], b)
    _same("context and context_mask shapes", tuple(context.shape), tuple(context_mask.shape))


def _call(target: str, tables, b: int, args, **attrs):
    _load()
    out = (
        jax.ShapeDtypeStruct(tables[0].shape, jnp.float32),
        jax.ShapeDtypeStruct(tables[1].shape, jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.float32),
    )
    fn = jax.ffi.ffi_call(target, out, input_output_aliases={0: 0, 1: 1}, vmap_method="sequential")
    return fn(*tables, *args, **attrs)


# ------------------------------------------------------------------------------------------------
# Wrappers (usable inside jax.jit; donate the tables to update them without a copy).


def sgns_update(
    center_vecs,
    outside_vecs,
    center,
    context,
    negatives,
    mask,
    lr,
    *,
    num_threads: int | None = None,
    deterministic: bool = False,
    compute_loss: bool = True,
):
    """One fused skip-gram SGNS SGD pass over a batch of pairs, in place.

    Args:
      center_vecs: [V, D] float32, input vectors v (word2vec.c syn0).
      outside_vecs: [V, D] float32, output vectors u (syn1neg).
      center: [B] int32, the word c whose v_c is used.
      context: [B] int32, the outside word o (label 1).
      negatives: [B, K] int32 noise words (label 0); ones equal to ``context`` are kept.
      mask: [B] float32, 0 for padding (the pair is skipped), else scales the step.
      lr: scalar learning rate.
      num_threads: kernel threads (default: the usable cores); 1 is deterministic.
      deterministic: with more threads, the deterministic schedule instead of Hogwild.
      compute_loss: False skips the log1p per target and returns zeros.

    Returns:
      ``(center_vecs, outside_vecs, loss [B] float32)``.
    """
    _tables(center_vecs, outside_vecs)
    _check("center", center, jnp.int32, 1)
    b = center.shape[0]
    _check("context", context, jnp.int32, 1)
    _check("negatives", negatives, jnp.int32, 2)
    _check("mask", mask, jnp.float32, 1)
    _same("context and center lengths", context.shape[0], b)
    _same("negatives rows and batch", negatives.shape[0], b)
    _same("mask and batch", mask.shape[0], b)
    return _call(
        "w2v_sgns_update",
        (center_vecs, outside_vecs),
        b,
        (center, context, negatives, mask, _lr(lr)),
        num_threads=_threads(num_threads),
        deterministic=np.int64(bool(deterministic)),
        compute_loss=np.int64(bool(compute_loss)),
    )


def sgns_update_sampled(
    center_vecs,
    outside_vecs,
    center,
    context,
    mask,
    alias_prob,
    alias_idx,
    seed,
    lr,
    *,
    negative: int,
    num_threads: int | None = None,
    deterministic: bool = False,
    compute_loss: bool = True,
):
    """:func:`sgns_update` with the K negatives drawn inside the kernel from an alias table.

    Negative k of pair i is ``alias_sample(alias_prob, alias_idx, seed, (B, K))[i, k]``: it
    depends on (seed, i, k) only, not on the threads. Use a fresh ``seed`` per call
    (``seed_words(jax.random.fold_in(key, step))``).

    Args:
      alias_prob, alias_idx: [V'] float32 / int32 from :func:`alias_table` (V' <= V).
      seed: [2] uint32.
      negative: K, static.
    """
    _tables(center_vecs, outside_vecs)
    _check("center", center, jnp.int32, 1)
    b = center.shape[0]
    _check("context", context, jnp.int32, 1)
    _check("mask", mask, jnp.float32, 1)
    _same("context and center lengths", context.shape[0], b)
    _same("mask and batch", mask.shape[0], b)
    _alias(alias_prob, alias_idx)
    if alias_prob.shape[0] > outside_vecs.shape[0]:
        raise ValueError("alias table is longer than outside_vecs")
    if int(negative) < 0:
        raise ValueError(f"negative must be >= 0, got {negative}")
    return _call(
        "w2v_sgns_sampled_update",
        (center_vecs, outside_vecs),
        b,
        (center, context, mask, alias_prob, alias_idx, _seed(seed), _lr(lr)),
        num_threads=_threads(num_threads),
        deterministic=np.int64(bool(deterministic)),
        compute_loss=np.int64(bool(compute_loss)),
        negative=np.int64(int(negative)),
    )


def alias_sample(alias_prob, alias_idx, seed, shape: tuple[int, int], *, num_threads=None):
    """Draw ids from the alias table: [B, K] int32, the same draws the sampled kernels use."""
    _alias(alias_prob, alias_idx)
    b, k = (int(s) for s in shape)
    if b < 0 or k < 0:
        raise ValueError(f"shape must be non-negative, got {shape}")
    _load()
    fn = jax.ffi.ffi_call(
        "w2v_alias_sample", jax.ShapeDtypeStruct((b, k), jnp.int32), vmap_method="sequential"
    )
    return fn(alias_prob, alias_idx, _seed(seed), num_threads=_threads(num_threads))


def sg_hs_update(
    center_vecs,
    node_vecs,
    center,
    context,
    points,
    codes,
    lengths,
    mask,
    lr,
    *,
    num_threads: int | None = None,
    deterministic: bool = False,
    compute_loss: bool = True,
):
    """Fused skip-gram hierarchical-softmax SGD pass, in place.

    For each node n = points[o, j], j < lengths[o] on the Huffman path of o = context: label
    ``1 - codes[o, j]`` (word2vec.c: ``g = (1 - code - sigma(f)) * alpha``), exact sigmoid, no
    skip at |f| >= MAX_EXP. loss = -sum_j log sigma((1 - 2 code_j) f_j).

    Args:
      node_vecs: [N, D] float32 inner-node vectors (syn1).
      points, codes: [V, L] int32; lengths: [V] int32 (huffman.build_huffman).

    Returns:
      ``(center_vecs, node_vecs, loss [B])``.
    """
    _tables(center_vecs, node_vecs, "node_vecs")
    _check("center", center, jnp.int32, 1)
    b = center.shape[0]
    _check("context", context, jnp.int32, 1)
    _check("mask", mask, jnp.float32, 1)
    _same("context and center lengths", context.shape[0], b)
    _same("mask and batch", mask.shape[0], b)
    _hs(points, codes, lengths)
    return _call(
        "w2v_sg_hs_update",
        (center_vecs, node_vecs),
        b,
        (center, context, points, codes, lengths, mask, _lr(lr)),
        num_threads=_threads(num_threads),
        deterministic=np.int64(bool(deterministic)),
        compute_loss=np.int64(bool(compute_loss)),
    )


def cbow_ns_update(
    center_vecs,
    outside_vecs,
    center,
    context,
    context_mask,
    negatives,
    mask,
    lr,
    *,
    cbow_mean: bool = True,
    exact_grad: bool = False,
    num_threads: int | None = None,
    deterministic: bool = False,
    compute_loss: bool = True,
):
    """Fused CBOW SGNS pass, in place: h = mean (or sum) of center_vecs[context slots with
    context_mask > 0] predicts ``center`` (label 1) against ``negatives``.

    Every used context row gets ``+= neu1e`` as word2vec.c does (``exact_grad=False``), or
    ``neu1e / n`` (``exact_grad=True`` with ``cbow_mean``, the true gradient of the mean).
    Pairs with no context slot are skipped (loss 0).

    Args:
      center: [B] int32 predicted word; context: [B, C] int32; context_mask: [B, C] float32.
    """
    _tables(center_vecs, outside_vecs)
    _check("center", center, jnp.int32, 1)
    b = center.shape[0]
    _cbow_context(context, context_mask, b)
    _check("negatives", negatives, jnp.int32, 2)
    _check("mask", mask, jnp.float32, 1)
    _same("negatives rows and batch", negatives.shape[0], b)
    _same("mask and batch", mask.shape[0], b)
    return _call(
        "w2v_cbow_ns_update",
        (center_vecs, outside_vecs),
        b,
        (center, context, context_mask, negatives, mask, _lr(lr)),
        num_threads=_threads(num_threads),
        deterministic=np.int64(bool(deterministic)),
        compute_loss=np.int64(bool(compute_loss)),
        cbow_mean=np.int64(bool(cbow_mean)),
        exact_grad=np.int64(bool(exact_grad)),
    )


def cbow_ns_update_sampled(
    center_vecs,
    outside_vecs,
    center,
    context,
    context_mask,
    mask,
    alias_prob,
    alias_idx,
    seed,
    lr,
    *,
    negative: int,
    cbow_mean: bool = True,
    exact_grad: bool = False,
    num_threads: int | None = None,
    deterministic: bool = False,
    compute_loss: bool = True,
):
    """:func:`cbow_ns_update` with in-kernel alias-table negatives (as sgns_update_sampled)."""
    _tables(center_vecs, outside_vecs)
    _check("center", center, jnp.int32, 1)
    b = center.shape[0]
    _cbow_context(context, context_mask, b)
    _check("mask", mask, jnp.float32, 1)
    _same("mask and batch", mask.shape[0], b)
    _alias(alias_prob, alias_idx)
    if alias_prob.shape[0] > outside_vecs.shape[0]:
        raise ValueError("alias table is longer than outside_vecs")
    if int(negative) < 0:
        raise ValueError(f"negative must be >= 0, got {negative}")
    return _call(
        "w2v_cbow_ns_sampled_update",
        (center_vecs, outside_vecs),
        b,
        (center, context, context_mask, mask, alias_prob, alias_idx, _seed(seed), _lr(lr)),
        num_threads=_threads(num_threads),
        deterministic=np.int64(bool(deterministic)),
        compute_loss=np.int64(bool(compute_loss)),
        negative=np.int64(int(negative)),
        cbow_mean=np.int64(bool(cbow_mean)),
        exact_grad=np.int64(bool(exact_grad)),
    )


def cbow_hs_update(
    center_vecs,
    node_vecs,
    center,
    context,
    context_mask,
    points,
    codes,
    lengths,
    mask,
    lr,
    *,
    cbow_mean: bool = True,
    exact_grad: bool = False,
    num_threads: int | None = None,
    deterministic: bool = False,
    compute_loss: bool = True,
):
    """Fused CBOW hierarchical-softmax pass, in place (targets: the Huffman path of ``center``)."""
    _tables(center_vecs, node_vecs, "node_vecs")
    _check("center", center, jnp.int32, 1)
    b = center.shape[0]
    _cbow_context(context, context_mask, b)
    _check("mask", mask, jnp.float32, 1)
    _same("mask and batch", mask.shape[0], b)
    _hs(points, codes, lengths)
    return _call(
        "w2v_cbow_hs_update",
        (center_vecs, node_vecs),
        b,
        (center, context, context_mask, points, codes, lengths, mask, _lr(lr)),
        num_threads=_threads(num_threads),
        deterministic=np.int64(bool(deterministic)),
        compute_loss=np.int64(bool(compute_loss)),
        cbow_mean=np.int64(bool(cbow_mean)),
        exact_grad=np.int64(bool(exact_grad)),
    )


# ------------------------------------------------------------------------------------------------
# The training step on the kernels: same signature as w2v_jax.step.make_step.
# Each adapter passes `schedule` (num_threads=, deterministic=) on to its kernel unchanged.


def _sg_sgns(p, c, batch, seed, lr, inputs, negative, **schedule):
    return sgns_update_sampled(
        p["center_vecs"],
        p["outside_vecs"],
        batch["center"],
        batch["context"],
        batch["mask"],
        c["noise"].prob,
        c["noise"].alias,
        seed,
        lr,
        negative=negative,
        **schedule,
    )


def _sg_hs(p, c, batch, seed, lr, inputs, negative, **schedule):
    return sg_hs_update(
        p["center_vecs"],
        p["node_vecs"],
        batch["center"],
        batch["context"],
        c["points"],
        c["codes"],
        c["lengths"],
        batch["mask"],
        lr,
        **schedule,
    )


def _cbow_sgns(p, c, batch, seed, lr, inputs, negative, **schedule):
    return cbow_ns_update_sampled(
        p["center_vecs"],
        p["outside_vecs"],
        batch["center"],
        batch["context"],
        batch["context_mask"],
        batch["mask"],
        c["noise"].prob,
        c["noise"].alias,
        seed,
        lr,
        negative=negative,
        cbow_mean=inputs.mean,
        exact_grad=inputs.rule == "exact",
        **schedule,
    )


def _cbow_hs(p, c, batch, seed, lr, inputs, negative, **schedule):
    return cbow_hs_update(
        p["center_vecs"],
        p["node_vecs"],
        batch["center"],
        batch["context"],
        batch["context_mask"],
        c["points"],
        c["codes"],
        c["lengths"],
        batch["mask"],
        lr,
        cbow_mean=inputs.mean,
        exact_grad=inputs.rule == "exact",
        **schedule,
    )


# (kernel family, input side) -> kernel call; the objective's kernel family names which
# objective's math the kernel implements.
_KERNELS = {
    ("sgns", "sg"): _sg_sgns,
    ("hs", "sg"): _sg_hs,
    ("sgns", "cbow"): _cbow_sgns,
    ("hs", "cbow"): _cbow_hs,
}


def unsupported(objective, inputs, tx) -> str | None:
    """Why the kernels cannot run this combination (``None`` when they can).

    The kernels implement word2vec's own rule: plain SGD with a progress schedule, the hand
    gradients of SGNS or hierarchical softmax, skip-gram or CBOW, on the CPU.
    """
    from w2v_jax import objectives as objectives_lib
    from w2v_jax import optim

    builtin_grads = {
        "sgns": objectives_lib.sgns_row_grads,
        "hs": objectives_lib.logistic_row_grads,
    }
    if objective.kernel not in builtin_grads or (objective.kernel, inputs.name) not in _KERNELS:
        return (
            f"no fused kernel implements the {objective.name!r} objective with {inputs.name!r} "
            "(kernels: SGNS and hierarchical softmax, skip-gram and CBOW)"
        )
    if objective.row_grads is not builtin_grads[objective.kernel]:
        return (
            f"the {objective.name!r} objective's row gradients are not the kernel's "
            "(autodiff or changed math)"
        )
    if not isinstance(tx, optim.ScheduledSGD):
        return "the fused kernels apply plain SGD only (an optimizer with state needs the JAX step)"
    if not fused_available():
        return f"the C++ kernel is unavailable ({unavailable_reason()})"
    return None


def make_step(
    objective,
    inputs,
    tx,
    *,
    threads: int | None = None,
    negative: int | None = None,
    deterministic: bool = False,
):
    """The training step on the kernels: ``(state, consts, batch, key) -> (state, metrics)``.

    word2vec.c's own rule: pairs are applied one after another (each at fresh parameters), on
    ``threads`` threads, with the exact sigmoid. Negatives are drawn inside the kernel from the
    objective's alias table, seeded from the step's key. The threads share the tables without
    locks (Hogwild, as word2vec.c and gensim do), so rows that two threads touch at once make the
    result timing-dependent; with ``deterministic`` they take fixed ranges of each batch and the
    rows several ranges touch are merged in thread order instead, so the result depends on the
    thread count but not on timing. ``threads=1`` is sequential and deterministic either way.
    ``grad_norm`` is reported as 0 (the kernels never form the gradient).

    Args:
      objective, inputs, tx: as :func:`w2v_jax.step.make_step`; ``tx`` must be plain SGD.
      threads: kernel threads (``None``: every usable core).
      negative: K for SGNS (the width of the objective's targets); unused for HS.
      deterministic: the deterministic schedule (see ``kernels/w2v_kernels.cc``).

    Raises:
      ValueError: naming what the kernels do not implement (:func:`unsupported`).
    """
    why = unsupported(objective, inputs, tx)
    if why is not None:
        raise ValueError(f"--update fused: {why}; use --update sparse")
    if objective.kernel == "sgns" and negative is None:
        raise ValueError("fused.make_step: SGNS needs negative=K")
    kernel = _KERNELS[(objective.kernel, inputs.name)]
    schedule = dict(num_threads=threads, deterministic=deterministic)

    def step(state, consts, batch, key):
        key = jax.random.fold_in(key, state.step)
        lr = tx.schedule(batch["progress"]).astype(jnp.float32)
        *tables, loss_B = kernel(
            state.params, consts, batch, seed_words(key), lr, inputs, negative, **schedule
        )
        params = dict(zip(("center_vecs", objective.table), tables, strict=True))
        metrics = {
            "loss_sum": jnp.sum(loss_B).astype(jnp.float32),
            "examples": jnp.sum(batch["mask"]).astype(jnp.float32),
            "lr": lr,
            "grad_norm": jnp.zeros((), jnp.float32),  # not formed by the kernels
        }
        return state.replace(params=params, step=state.step + 1), metrics

    return step
