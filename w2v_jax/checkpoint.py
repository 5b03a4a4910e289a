"""Atomic, checksummed checkpoints, written and read without a second copy of the tables.

File layout (``MAGIC`` = ``W2VJAX02``)::

    MAGIC (8) | n = length of the head (uint64, little-endian) | head (n bytes, msgpack)
              | the bytes of every array, one after another, in the head's order
              | sha256 of everything before it (32)

The head is the payload (a nested dict of arrays, numbers, strings and lists) with each array
replaced by ``{"__w2v_array__": index, "dtype": ..., "shape": ...}``, packed by msgpack with the
keys of every dict in sorted order. Arrays are written straight from their own memory (a table
of gigabytes is not serialised into a buffer first) and read straight into the arrays returned,
so saving or loading a checkpoint needs no memory beyond the tables themselves. Files of the
first layout (``W2VJAX01``: magic, sha256, one msgpack body) are still read.

A checkpoint is written to a temporary file in the destination folder, flushed and fsynced, then
renamed over the old one (``os.replace`` is atomic on POSIX), and the folder is fsynced. A crash
at any point leaves either the old checkpoint or the new one, never a torn file. Loading checks
the sizes before allocating and the checksum before returning, so a truncated or corrupt file
gives a clear error instead of a msgpack trace, and a failed load never touches the file.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np

from w2v_jax.fileio import atomic_write

MAGIC = b"W2VJAX02"
MAGIC_V1 = b"W2VJAX01"
_ARRAY = "__w2v_array__"
_DIGEST = 32
_MMAP_BYTES = 16 << 20  # load_checkpoint(mmap=True): larger arrays are mapped, not read


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupt or from another run."""


class ArrayBlocks:
    """An array that :func:`save_checkpoint` writes block by block, never whole in memory.

    ``blocks()`` yields arrays of ``dtype`` whose C-order bytes, one after another, are the bytes
    of the whole array of ``shape`` (a table split over hosts, gathered one row block at a time:
    :func:`w2v_jax.sharding.streamed_state`). The file is the one the whole array would give.
    """

    def __init__(
        self, shape: tuple[int, ...], dtype: Any, blocks: Callable[[], Iterable[np.ndarray]]
    ):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.blocks = blocks

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


# Leaf types that hold no array: a list of only these is copied as it is.
_PLAIN = {str, int, float, bool, type(None)}


def _split(tree: Any, arrays: list) -> Any:
    """The head of ``tree``: each array moved to ``arrays`` and replaced by a reference."""
    if isinstance(tree, ArrayBlocks):
        arrays.append(tree)
        return {_ARRAY: len(arrays) - 1, "dtype": tree.dtype.str, "shape": list(tree.shape)}
    if isinstance(tree, dict):
        return {k: _split(v, arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        if set(map(type, tree)) <= _PLAIN:  # a vocabulary's words: nothing to look into
            return list(tree)
        return [_split(v, arrays) for v in tree]
    if isinstance(tree, np.ndarray) or hasattr(tree, "__array__") and hasattr(tree, "shape"):
        a = np.asarray(tree)  # a jax array on CPU: a view of its buffer, not a copy
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
            a = a.copy(order="C")
        if a.dtype.hasobject:
            raise TypeError(f"a checkpoint cannot hold an array of Python objects ({a.dtype})")
        arrays.append(a)
        return {_ARRAY: len(arrays) - 1, "dtype": a.dtype.str, "shape": list(a.shape)}
    return tree


def _join(head: Any, arrays: list[np.ndarray]) -> Any:
    """Inverse of :func:`_split`."""
    if isinstance(head, dict):
        if _ARRAY in head:
            return arrays[head[_ARRAY]]
        return {k: _join(v, arrays) for k, v in head.items()}
    if isinstance(head, list):
        return [_join(v, arrays) for v in head]
    return head


def _specs(head: Any) -> list[tuple[int, np.dtype, tuple[int, ...]]]:
    """(index, dtype, shape) of every array reference in ``head``, in index order."""
    found: list[tuple[int, np.dtype, tuple[int, ...]]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if _ARRAY in node:
                found.append((int(node[_ARRAY]), np.dtype(node["dtype"]), tuple(node["shape"])))
                return
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(head)
    found.sort(key=lambda s: s[0])
    if [s[0] for s in found] != list(range(len(found))):
        raise ValueError("array references are not numbered 0..n-1")
    return found


def _sorted_keys(head: Any) -> Any:
    if isinstance(head, dict):
        return {k: _sorted_keys(head[k]) for k in sorted(head)}
    if isinstance(head, list):
        return [_sorted_keys(v) for v in head]
    return head


def _pack_head(head: Any) -> bytes:
    """The msgpack bytes of a head (no arrays left in it), dict keys sorted: the bytes that
    ``flax.serialization.msgpack_serialize`` gives, which wrote the heads before."""
    return msgpack.packb(_sorted_keys(head), strict_types=True)


def _unpack_head(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def state_dict(tree: Any) -> Any:
    """An optimizer state (named tuples, tuples, lists and dicts around arrays) as nested dicts
    with string keys: a named tuple by its field names, a tuple or list by "0", "1", ..., a dict
    by its keys as strings; anything else is a leaf. This is the layout of
    ``flax.serialization.to_state_dict``, so the checkpoints it wrote still load.
    """
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return {k: state_dict(getattr(tree, k)) for k in tree._fields}
    if type(tree) in (tuple, list):
        return {str(i): state_dict(v) for i, v in enumerate(tree)}
    if type(tree) is dict:
        if len({str(k) for k in tree}) != len(tree):
            raise ValueError(f"dict keys are not unique as strings: {list(tree)}")
        return {str(k): state_dict(v) for k, v in tree.items()}
    return tree


def from_state_dict(target: Any, state: Any) -> Any:
    """Inverse of :func:`state_dict`: ``state``'s leaves in the structure of ``target`` (whose
    own leaves are not used; abstract ones will do).

    Raises:
      ValueError: the fields, length or keys of ``state`` are not those of ``target``.
    """
    if isinstance(target, tuple) and hasattr(target, "_fields"):
        if set(state) != set(target._fields):
            raise ValueError(
                f"fields {sorted(state)} where {type(target).__name__} has {sorted(target._fields)}"
            )
        return type(target)(
            **{k: from_state_dict(getattr(target, k), state[k]) for k in target._fields}
        )
    if type(target) in (tuple, list):
        if len(state) != len(target):
            raise ValueError(f"{len(state)} entries where the target has {len(target)}")
        items = [from_state_dict(t, state[str(i)]) for i, t in enumerate(target)]
        return tuple(items) if type(target) is tuple else items
    if type(target) is dict:
        missing = {str(k) for k in target} - set(state)
        if missing:
            raise ValueError(f"keys {sorted(missing)} missing")
        return {k: from_state_dict(v, state[str(k)]) for k, v in target.items()}
    return state


def _bytes(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1)).cast("B") if a.size else memoryview(bytearray())


def _chunks(a: np.ndarray | ArrayBlocks) -> Iterable[memoryview]:
    """The bytes of an array, or of an :class:`ArrayBlocks` block by block (checked in size)."""
    if not isinstance(a, ArrayBlocks):
        yield _bytes(a)
        return
    written = 0
    for block in a.blocks():
        view = _bytes(np.ascontiguousarray(block, dtype=a.dtype))
        written += len(view)
        yield view
    if written != a.nbytes:
        raise ValueError(f"array blocks gave {written} bytes for {a.shape} {a.dtype}")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Writes ``payload`` to ``path`` atomically (temp file, fsync, rename, fsync folder)."""
    arrays: list = []
    head = _pack_head(_split(payload, arrays))

    def write(f: IO[bytes]) -> None:
        h = hashlib.sha256()
        for chunk in (MAGIC, struct.pack("<Q", len(head)), head):
            h.update(chunk)
            f.write(chunk)
        for a in arrays:
            for chunk in _chunks(a):
                h.update(chunk)
                f.write(chunk)
        f.write(h.digest())

    return atomic_write(path, write)


def drain(payload: dict[str, Any]) -> None:
    """Produces every block of ``payload``'s :class:`ArrayBlocks` in the order
    :func:`save_checkpoint` would, writing nothing: the processes of a multi-host run that do
    not write take part in the same gathers as the one that does."""
    arrays: list = []
    _split(payload, arrays)
    for a in arrays:
        for _ in _chunks(a):
            pass


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint`; raises :class:`CheckpointError`.

    With ``mmap=True`` every array of at least ``_MMAP_BYTES`` is a read-only ``np.memmap`` of
    the file instead of a copy in memory: a process that goes on to use some rows of a table (a
    host of a multi-host run taking its shard) reads only those pages. The checksum is still
    checked over the whole file, streamed through a small buffer, before anything is returned.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (nothing to --resume from)")
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic == MAGIC_V1:
            return _load_v1(path, f)
        if magic != MAGIC:
            raise CheckpointError(f"{path} is not a w2v_jax checkpoint (bad header or truncated)")
        return _load(path, f, os.fstat(f.fileno()).st_size, mmap)


def _corrupt(path: Path) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")


def _load(path: Path, f: IO[bytes], size: int, mmap: bool = False) -> dict[str, Any]:
    h = hashlib.sha256(MAGIC)
    n_bytes = f.read(8)
    if len(n_bytes) < 8:
        raise _corrupt(path)
    (n,) = struct.unpack("<Q", n_bytes)
    if len(MAGIC) + 8 + n + _DIGEST > size:
        raise _corrupt(path)
    head_bytes = f.read(n)
    h.update(n_bytes)
    h.update(head_bytes)
    try:
        head = _unpack_head(head_bytes)
        specs = _specs(head)
    except Exception:  # the checksum cannot be checked before the head is read: say both
        raise _corrupt(path) from None
    body = sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for _, dtype, shape in specs)
    if len(MAGIC) + 8 + n + body + _DIGEST != size:  # before allocating anything
        raise _corrupt(path)
    arrays = []
    offset = len(MAGIC) + 8 + n
    buf = None
    for _, dtype, shape in specs:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if mmap and nbytes >= _MMAP_BYTES:
            arrays.append(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape))
            buf = buf if buf is not None else bytearray(_MMAP_BYTES)
            left = nbytes
            while left:  # hashed through one buffer: the pages are not kept
                view = memoryview(buf)[: min(left, len(buf))]
                if f.readinto(view) != len(view):
                    raise _corrupt(path)
                h.update(view)
                left -= len(view)
        else:
            a = np.empty(shape, dtype)
            view = _bytes(a)
            if f.readinto(view) != len(view):
                raise _corrupt(path)
            h.update(view)
            arrays.append(a)
        offset += nbytes
    if f.read(_DIGEST) != h.digest():
        raise _corrupt(path)
    return _join(head, arrays)


def _load_v1(path: Path, f: IO[bytes]) -> dict[str, Any]:
    """``W2VJAX01``: magic | sha256 of the body | msgpack body."""
    blob = f.read()
    if len(blob) < _DIGEST:
        raise _corrupt(path)
    # a view, not a slice: the body is not copied
    digest, body = blob[:_DIGEST], memoryview(blob)[_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise _corrupt(path)
    from flax import serialization  # arrays inside the msgpack body: flax's own encoding

    try:
        return serialization.msgpack_restore(body)
    except Exception as e:  # a valid checksum over an unreadable body: written by other code
        raise CheckpointError(f"checkpoint {path} cannot be decoded: {e}") from None
