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


def test_every_kind_of_array_round_trips_with_its_dtype_and_shape(tmp_path):
    import jax.numpy as jnp

    payload = {
        "scalar": np.asarray(7, np.int32),
        "empty": np.zeros((0, 5), np.float32),
        "strided": np.arange(20, dtype=np.int64).reshape(4, 5)[:, ::2],  # not contiguous
        "device": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
        "nested": [{"u8": np.arange(3, dtype=np.uint8)}, "text", 1.5],
    }
    back = load_checkpoint(save_checkpoint(tmp_path / "c.w2v", payload))
    for name in ("scalar", "empty", "strided", "device"):
        want = np.asarray(payload[name])
        assert back[name].dtype == want.dtype and back[name].shape == want.shape, name
        np.testing.assert_array_equal(back[name], want)
    np.testing.assert_array_equal(back["nested"][0]["u8"], [0, 1, 2])
    assert back["nested"][1:] == ["text", 1.5]


def test_a_corrupt_head_is_a_clear_error_not_a_msgpack_trace(tmp_path):
    path = save_checkpoint(tmp_path / "c.w2v", _payload())
    blob = bytearray(path.read_bytes())
    for at in (8, 12, 20):  # the head's length, then bytes inside the head
        bad = bytearray(blob)
        bad[at] ^= 0xFF
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_checkpoint(path)


def test_first_layout_files_are_still_read(tmp_path):
    import hashlib

    from flax import serialization

    from w2v_jax.checkpoint import MAGIC_V1

    body = serialization.msgpack_serialize(_payload())
    path = tmp_path / "old.w2v"
    path.write_bytes(MAGIC_V1 + hashlib.sha256(body).digest() + body)
    back = load_checkpoint(path)
    np.testing.assert_array_equal(
        back["params"]["center_vecs"], _payload()["params"]["center_vecs"]
    )
    path.write_bytes(MAGIC_V1 + hashlib.sha256(body).digest() + body[:-3])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_saving_and_loading_need_no_second_copy_of_the_tables(tmp_path):
    """The tables are written from their own memory and read into the arrays returned: the
    extra memory Python allocates (numpy included) stays far below one table's 64 MB."""
    import tracemalloc

    table = np.ones((1 << 14, 1 << 10), np.float32)  # 64 MiB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        path = save_checkpoint(tmp_path / "big.w2v", {"params": {"t": table}, "step": 3})
        save_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        back = load_checkpoint(path)
        load_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert save_peak < table.nbytes // 8, save_peak
    assert load_peak < table.nbytes * 9 // 8, load_peak  # the returned table itself, no more
    np.testing.assert_array_equal(back["params"]["t"], table)


def test_a_mapped_load_checks_everything_and_reads_only_what_is_used(tmp_path, monkeypatch):
    """``mmap=True`` (each host of a multi-host resume): large arrays are read-only maps of the
    file, equal to a full load; a flipped byte anywhere in them is still caught, and the load
    itself allocates no table-sized memory."""
    import tracemalloc

    from w2v_jax import checkpoint as ckpt_lib

    monkeypatch.setattr(ckpt_lib, "_MMAP_BYTES", 1 << 20)
    table = np.arange(1 << 22, dtype=np.float32).reshape(1 << 12, 1 << 10)  # 16 MiB
    small = np.arange(10, dtype=np.int64)
    path = save_checkpoint(tmp_path / "c.w2v", {"t": table, "small": small, "step": 3})
    tracemalloc.start()
    try:
        back = load_checkpoint(path, mmap=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < table.nbytes // 8, peak
    assert isinstance(back["t"], np.memmap) and not back["t"].flags.writeable
    assert not isinstance(back["small"], np.memmap)
    np.testing.assert_array_equal(back["t"], table)
    np.testing.assert_array_equal(back["small"], small)
    np.testing.assert_array_equal(back["t"][100:102], load_checkpoint(path)["t"][100:102])
    del back
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # inside the mapped table
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path, mmap=True)


def test_the_head_is_the_bytes_flax_packed_it_into():
    """Heads were written by ``flax.serialization.msgpack_serialize``: the same bytes (dict keys
    sorted), so files and their checksums do not depend on which code packed them, and a head
    either one packed reads back the same."""
    from flax import serialization

    from w2v_jax import checkpoint as ckpt_lib

    payload = {
        **_payload(),
        "config": {"train": {"seed": 1, "alpha": None, "devices": 2}, "data": {"sample": 1e-3}},
        "identity": {"update": "fused", "objective": "sgns(negative=5)", "deterministic": True},
        "position": np.asarray([1, 2, 3], np.int64),
        "words_done": 2**40,
        "accumulators": {"sum": np.float64(3.5), "n": np.int64(4)},
        "vocab": {"words": ["é", "b", "a"], "counts": np.asarray([3, 2, 1]), "total_words": 6},
    }
    head = ckpt_lib._split(payload, [])
    packed = ckpt_lib._pack_head(head)
    assert packed == serialization.msgpack_serialize(head)
    assert ckpt_lib._unpack_head(packed) == serialization.msgpack_restore(packed)


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam", "rmsprop"])
def test_optimizer_states_take_the_layout_flax_gave_them(name):
    """``state_dict`` / ``from_state_dict`` lay an optax state out as flax's functions of those
    names did (checkpoints they wrote still load) and restore it whole."""
    import jax
    import jax.numpy as jnp
    from flax import serialization

    from w2v_jax import optim
    from w2v_jax.checkpoint import from_state_dict, state_dict

    tx = optim.make_optimizer(name, 0.025)
    tables = {"center_vecs": jnp.ones((5, 3)), "outside_vecs": jnp.zeros((5, 3))}
    state = {k: tx.init(t) for k, t in tables.items()}
    state = jax.tree.map(lambda x: x + 1, state)  # leaves that differ from a fresh state's
    ours, flax_dict = state_dict(state), serialization.to_state_dict(state)
    assert jax.tree.structure(ours) == jax.tree.structure(flax_dict)
    jax.tree.map(np.testing.assert_array_equal, ours, flax_dict)
    fresh = {k: tx.init(t) for k, t in tables.items()}
    back = from_state_dict(fresh, ours)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, back, state)
    if jax.tree.leaves(fresh):  # plain SGD's state has no leaves, so no layout to get wrong
        with pytest.raises(ValueError):
            from_state_dict(fresh, {"center_vecs": ours["center_vecs"]})
