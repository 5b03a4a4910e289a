"""Atomic, checksummed checkpoints.

File layout: ``MAGIC`` (8 bytes) | sha256 of the body (32 bytes) | body, where the body is
``flax.serialization.msgpack_serialize`` of a nested dict of numpy arrays, numbers and strings.

A checkpoint is written to a temporary file in the destination folder, flushed and fsynced, then
renamed over the old one (``os.replace`` is atomic on POSIX), and the folder is fsynced. A crash
at any point leaves either the old checkpoint or the new one, never a torn file. Loading checks
the magic and the checksum first, so a truncated or corrupt file gives a clear error instead of a
msgpack trace, and a failed load never touches the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from flax import serialization

from w2v_jax.fileio import atomic_write

MAGIC = b"W2VJAX01"
_HEADER = len(MAGIC) + 32


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupt or from another run."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Writes ``payload`` to ``path`` atomically (temp file, fsync, rename, fsync folder)."""
    body = serialization.msgpack_serialize(payload)
    digest = hashlib.sha256(body).digest()

    def write(f) -> None:  # three writes, not one concatenation: no second copy of the body
        f.write(MAGIC)
        f.write(digest)
        f.write(body)

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint`; raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (nothing to --resume from)")
    blob = path.read_bytes()
    if len(blob) < _HEADER or blob[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path} is not a w2v_jax checkpoint (bad header or truncated)")
    # a view, not a slice: the body is not copied (tables can be gigabytes)
    digest, body = blob[len(MAGIC) : _HEADER], memoryview(blob)[_HEADER:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    try:
        return serialization.msgpack_restore(body)
    except Exception as e:  # a valid checksum over an unreadable body: written by other code
        raise CheckpointError(f"checkpoint {path} cannot be decoded: {e}") from None
