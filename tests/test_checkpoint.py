"""Tests `../w2v_jax/checkpoint.py`: atomic writes, round trips, clear errors on bad files."""

import errno
import os

import numpy as np
import pytest

from w2v_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _payload():
    return {
        "params": {"center_vecs": np.arange(12, dtype=np.float32).reshape(3, 4)},
        "step": np.asarray(7),
        "config": {"model": {"loss": "ns"}},
        "words": ["a", "b"],
    }


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "c.w2v", _payload())
    back = load_checkpoint(path)
    np.testing.assert_array_equal(
        back["params"]["center_vecs"], _payload()["params"]["center_vecs"]
    )
    assert back["params"]["center_vecs"].dtype == np.float32
    assert int(back["step"]) == 7 and back["config"]["model"]["loss"] == "ns"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temp file left


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "c.w2v", _payload())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 10])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    path.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a w2v_jax checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.w2v")


def test_failed_write_keeps_the_old_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.w2v", _payload())
    good = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, {"bad": object()})  # cannot be serialised
    assert path.read_bytes() == good
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_full_disk_names_the_checkpoint_and_keeps_the_old_one(tmp_path, monkeypatch):
    from w2v_jax.fileio import WriteError

    path = save_checkpoint(tmp_path / "c.w2v", _payload())
    good = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(WriteError, match=f"no space left on device while writing {path}"):
        save_checkpoint(path, _payload())
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["c.w2v"]
