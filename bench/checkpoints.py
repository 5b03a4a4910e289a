"""Checkpoints of vocabulary-sharded state: the trainer's file vs per-shard .npy vs orbax.

    python bench/checkpoints.py                      # V=1e6 D=100, 1 and 4 devices, sgd; ~2.5 min
    python bench/checkpoints.py --optimizer adagrad  # + Adagrad's [V, D] state: 2x bytes, ~5 min
    python bench/checkpoints.py --vocab 20000 --dim 16 --repeats 1   # smoke test, ~10 s
    python bench/checkpoints.py --cold               # drop the files from the page cache first
    python bench/checkpoints.py --json out.json      # also write the rows as JSON

The state is what the trainer checkpoints: ``params`` (``center_vecs`` and ``outside_vecs``,
[V, D] float32), ``opt_state`` (for adagrad/adam/rmsprop its [V, D] leaves, split like the
tables, and its replicated scalars) and ``step``, row-sharded with
:func:`w2v_jax.sharding.shard_state` over n simulated CPU devices. These write and read it:

  (a) trainer: what ``trainer.train`` does on a one-process mesh. Save =
      ``sharding.unshard_state`` + ``unpad_state`` (gather to host numpy) +
      :func:`w2v_jax.checkpoint.save_checkpoint` of the same ``params``/``opt_state``/``step``
      dict as ``trainer._checkpoint_payload`` (a msgpack head, the arrays' bytes written from
      their own memory, sha256, temp file, fsync, rename). (a') streamed: what it does on a mesh
      of several processes, the same file from :func:`w2v_jax.sharding.streamed_state` (each
      split leaf all-reduced onto every device in row blocks of 16 MiB, one at a time, written
      block by block); its restore is (a)'s.
      Restore = :func:`~w2v_jax.checkpoint.load_checkpoint` + the steps of ``trainer._restore``
      (tables onto the default device, ``from_state_dict``) + ``shard_state`` onto the mesh.
      The real payload also holds the vocabulary, config and data position; they are left out
      here, as in (b) and (c).
  (b) npy-shards: :func:`w2v_jax.sharding.save_sharded` / :func:`~w2v_jax.sharding.restore_sharded`
      (one ``.npy`` per shard, memory-mapped restore of the rows each device owns). They take a
      dict of tables only, so each [V, D] optimizer leaf goes in as one more table and the
      scalars (step, Adagrad's count and hyperparameters) ride in ``extra`` (JSON).
  (c) orbax: ``orbax.checkpoint.StandardCheckpointer`` (tensorstore, OCDBT) on the sharded arrays
      as they are (padding rows included); ``save`` then ``wait_until_finished`` inside the clock
      (the "blocking" figure is when ``save`` returned, i.e. how long training would stall with
      orbax's async commit). Restore takes an abstract tree of ``jax.ShapeDtypeStruct`` with the
      target mesh's ``NamedSharding``; ``strict=False`` only where the padded row count differs.

For each device count n of ``--devices`` a fresh process (``XLA_FLAGS=
--xla_force_host_platform_device_count=n``, set before JAX is imported, as in
``bench/sharding.py``) saves and restores each format ``--repeats`` times on its n-device mesh.
The checkpoints written on the largest n are then restored in processes with each count of
``--cross`` (default 2 and 1): a change of device count on resume. The first restore of each
series is gathered back to host and compared with ``np.array_equal`` (and dtype) against the
state that was saved.

Reported per format: median seconds (the previous checkpoint is deleted outside the clock, so a
save is a fresh write; the first repeat also pays one-time set-up such as tensorstore's, so use
``--repeats`` >= 3); "+ fsync after": an fsync of every file and folder written, outside the
clock, i.e. what the format still owes for durability (about 0 where it fsyncs itself); bytes
and files on disk (orbax compresses with zstd level 1 by default),
peak RSS over the call minus RSS before it (``/proc/self/status`` VmHWM after resetting it
through ``/proc/self/clear_refs``; CPU devices live in the process, so a restore's figure
includes the restored arrays themselves), and whether the restore is bit-identical. RSS
growth under-counts where a call reuses memory the process already holds (small V); at V=1e6
the buffers are large enough to be returned to the OS when freed. Ratios are against (a) at
the same device count.

Caveats: restores read from the page cache unless ``--cold`` (``os.sync`` then
``posix_fadvise(DONTNEED)`` on every file of the checkpoint, no root needed), and even then a
VM's disk may be cached by its host. All three fsync their files. Simulated CPU devices share
the machine's cores and memory bandwidth: this measures the formats' own costs, not a multi-GPU
host's. Checkpoints go to a temporary folder under ``--tmp`` (default: the system's), removed at
the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import child_env, fmt_bytes, status_kib

FORMAT_LABELS = {
    "trainer": "(a) trainer",
    "streamed": "(a') streamed",
    "npy-shards": "(b) npy-shards",
    "orbax": "(c) orbax",
}


# ----------------------------------------------------------------------------- the state


def _host_state(args):
    """The state to checkpoint as one device holds it (numpy, no padding), from a fixed seed.

    Every worker rebuilds the same values, so a restore in another process can be checked
    against it. Row-shaped optimizer leaves get random values (not optax's zeros), so a restore
    that mixed up or dropped them would fail the comparison.
    """
    import jax
    import numpy as np

    from w2v_jax import optim
    from w2v_jax import step as step_lib

    v, d = args.vocab, args.dim
    rng = np.random.default_rng(0)
    half, scale = np.float32(0.5), np.float32(1.0 / d)
    params = {  # float32 draws: at V=1e6, float64 ones and a cast cost seconds per worker
        "center_vecs": (rng.random((v, d), np.float32) - half) * scale,
        "outside_vecs": (rng.random((v, d), np.float32) - half) * (2 * scale),
    }
    tx = optim.make_optimizer(args.optimizer, 0.025)
    one_row = jax.device_get(tx.init(np.zeros((1, d), np.float32)))  # the state's layout
    opt_state = {
        name: jax.tree.map(
            lambda x: rng.random((v, d), np.float32) if np.ndim(x) == 2 else x,
            one_row,
        )
        for name in params
    }
    return step_lib.TrainState(
        params=params,
        opt_state=opt_state,
        step=np.asarray(123_457, np.int32),
        scratch=np.zeros((v,), np.float32),
    )


def _saved(state) -> dict:
    """The part of a :class:`~w2v_jax.step.TrainState` a checkpoint holds (not ``scratch``)."""
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step}


def _specs(like) -> dict:
    """``PartitionSpec`` of each leaf of ``_saved(like)``: [V, D] by rows, scalars replicated."""
    from w2v_jax import sharding

    return _saved(sharding.state_specs(like))


def _identical(restored: dict, want: dict, vocab_size: int) -> bool:
    """Restored tree (sharded, maybe padded) == ``want`` (host): structure, dtypes and bits."""
    import jax
    import numpy as np

    from w2v_jax import sharding

    got = jax.tree.map(np.asarray, sharding.unshard_state(restored))
    if jax.tree.structure(got) != jax.tree.structure(want):
        return False

    def same(a, b):
        a = a[:vocab_size] if a.ndim else a  # padding rows of a padded layout
        return a.dtype == np.asarray(b).dtype and np.array_equal(a, b)

    return all(jax.tree.leaves(jax.tree.map(same, got, want)))


# ----------------------------------------------------------------------------- the formats


def _trainer_save(path: Path, state, vocab_size: int, *, streamed: bool = False) -> dict:
    """(a) Gather the whole state to host, cut the padding, then the trainer's checksummed
    atomic file; (a') stream the split leaves into it in row blocks instead."""
    import numpy as np
    from flax import serialization

    from w2v_jax import checkpoint, sharding

    t = time.perf_counter()
    rows = {name: sharding.table_rows(name, vocab_size) for name in state.params}
    if streamed:
        host = sharding.streamed_state(state, rows)
    else:
        host = sharding.unpad_state(sharding.unshard_state(state), rows, vocab_size)
    gather_s = time.perf_counter() - t
    payload = {  # the state part of trainer._checkpoint_payload
        "params": host.params,
        "opt_state": serialization.to_state_dict(host.opt_state),
        "step": np.asarray(host.step),
    }
    path.mkdir(parents=True, exist_ok=True)
    checkpoint.save_checkpoint(path / "checkpoint.w2v", payload)
    return {"gather_s": gather_s}


def _trainer_restore(path: Path, mesh, like, saved_on: int) -> tuple[dict, dict]:
    """(a) Read and verify the file, rebuild the state as ``trainer._restore``, shard it."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import serialization

    from w2v_jax import checkpoint, sharding

    t = time.perf_counter()
    ckpt = checkpoint.load_checkpoint(path / "checkpoint.w2v")
    load_s = time.perf_counter() - t
    state = like.replace(
        params={k: jnp.asarray(np.asarray(a)) for k, a in ckpt["params"].items()},
        opt_state=jax.device_put(serialization.from_state_dict(like.opt_state, ckpt["opt_state"])),
        step=jnp.asarray(ckpt["step"], jnp.int32),
    )
    return _saved(sharding.shard_state(state, mesh)), {"load_s": load_s}


def _leaf_name(key_path) -> str:
    """``['opt_state']['center_vecs'].inner_state[0].sum_of_squares`` -> a file-name-safe name;
    tables keep their own name (``center_vecs``), as ``save_sharded`` expects."""
    import jax

    name = re.sub(r"[^A-Za-z0-9_]+", ".", jax.tree_util.keystr(key_path)).strip(".")
    return name.removeprefix("params.")


def _npy_save(path: Path, state, vocab_size: int) -> dict:
    """(b) ``save_sharded`` of every [V, D] leaf; the scalars go to ``meta.json``."""
    import jax
    import numpy as np

    from w2v_jax import sharding

    tables, scalars = {}, {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(_saved(state))[0]:
        if leaf.ndim == 2:
            tables[_leaf_name(key_path)] = leaf
        else:
            x = np.asarray(jax.device_get(leaf))
            scalars[_leaf_name(key_path)] = [str(x.dtype), x.tolist()]
    sharding.save_sharded(path, tables, vocab_size, extra={"scalars": scalars})
    return {}


def _npy_restore(path: Path, mesh, like, saved_on: int) -> tuple[dict, dict]:
    """(b) ``restore_sharded`` onto ``mesh``; scalars replicated; the tree rebuilt from ``like``."""
    import jax
    import numpy as np

    from w2v_jax import sharding

    tables, meta = sharding.restore_sharded(path, mesh)
    scalars = {
        name: np.asarray(value, dtype) for name, (dtype, value) in meta["extra"]["scalars"].items()
    }
    scalars = sharding.replicate(scalars, mesh)
    paths, treedef = jax.tree_util.tree_flatten_with_path(_saved(like))
    leaves = []
    for key_path, leaf in paths:
        name = _leaf_name(key_path)
        leaves.append(tables[name] if np.ndim(leaf) == 2 else scalars[name])
    return jax.tree_util.tree_unflatten(treedef, leaves), {}


def _orbax_formats(ckptr) -> dict:
    """(c) save/restore through one ``StandardCheckpointer`` (kept open for the worker's life)."""

    def save(path: Path, state, vocab_size: int) -> dict:
        t = time.perf_counter()
        ckptr.save(path, _saved(state))  # returns once the arrays are copied to host
        blocking_s = time.perf_counter() - t
        ckptr.wait_until_finished()  # tensorstore writes, fsync, rename of the temp folder
        return {"blocking_s": blocking_s}

    def restore(path: Path, mesh, like, saved_on: int) -> tuple[dict, dict]:
        import jax
        from jax.sharding import NamedSharding

        from w2v_jax import sharding

        n = mesh.devices.size

        def abstract(leaf, spec):
            shape = (sharding.padded_rows(leaf.shape[0], n), *leaf.shape[1:]) if leaf.ndim else ()
            return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=NamedSharding(mesh, spec))

        target = jax.tree.map(abstract, _saved(like), _specs(like))
        # The saved arrays keep their padding rows: Vp = V rounded up to a multiple of the device
        # count that wrote them. strict=True refuses another Vp; strict=False pads/truncates
        # (only zero padding rows here), so it is asked for only when Vp differs.
        v = like.params["center_vecs"].shape[0]
        strict = sharding.padded_rows(v, saved_on) == sharding.padded_rows(v, n)
        return ckptr.restore(path, target, strict=strict), {}

    return {"save": save, "restore": restore}


def _formats(ckptr) -> dict:
    """Name -> {"save": fn, "restore": fn}; the name is read once, here."""
    return {
        "trainer": {"save": _trainer_save, "restore": _trainer_restore},
        "streamed": {
            "save": lambda path, state, v: _trainer_save(path, state, v, streamed=True),
            "restore": _trainer_restore,
        },
        "npy-shards": {"save": _npy_save, "restore": _npy_restore},
        "orbax": _orbax_formats(ckptr),
    }


# ----------------------------------------------------------------------------- measuring


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(fn):
    """``fn()``'s result, its seconds (blocked until ready) and peak RSS growth in bytes."""
    import jax

    gc.collect()
    exact = _reset_peak()
    before = status_kib("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    seconds = time.perf_counter() - t
    after = status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Without clear_refs, getrusage's maximum only shows growth past the earlier peak.
    return out, seconds, max(0, (after or 0) - (before or 0)) * 1024


def _disk(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    size = files = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            size += os.path.getsize(os.path.join(dirpath, name))
            files += 1
    return size, files


def _fsync_files(path: Path) -> float:
    """Seconds to fsync every file under ``path`` and the folders: what a save that had not
    made its files durable still owes (about 0 for one that had)."""
    t = time.perf_counter()
    for dirpath, _, names in os.walk(path):
        for name in [*names, "."]:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return time.perf_counter() - t


def _evict(path: Path) -> None:
    """Drops the checkpoint's pages from the page cache (written back first): a cold read."""
    os.sync()
    for dirpath, _, names in os.walk(path):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _restores(fmt, path: Path, mesh, like, want, args, saved_on: int) -> dict:
    """Times ``--repeats`` restores of one checkpoint; the first result is checked (as slow as a
    restore at V=1e6; the later ones read the same files the same way), each is freed."""
    secs, peaks, same, parts = [], [], None, []
    for i in range(args.repeats):
        if args.cold:
            _evict(path)
        (tree, extra), s, peak = _measure(
            lambda: fmt["restore"](path, mesh, like, saved_on)  # noqa: B023
        )
        secs.append(s)
        peaks.append(peak)
        parts.append(extra)
        if i == 0:
            same = _identical(tree, want, args.vocab)
        del tree
    return {
        "restore_s": secs,
        "restore_peak_bytes": max(peaks),
        "restore_parts": parts,
        "identical": same,
    }


def worker(args) -> dict:
    """Runs in a process whose XLA_FLAGS ask for ``args.worker`` CPU devices."""
    import jax
    import orbax.checkpoint as ocp

    from w2v_jax import sharding

    n = args.worker
    assert len(jax.devices()) == n, jax.devices()
    mesh = sharding.make_mesh(jax.devices()[:n])
    like = _host_state(args)
    want = jax.tree.map(lambda x: x, _saved(like))
    row = {
        "devices": n,
        "V": args.vocab,
        "D": args.dim,
        "optimizer": args.optimizer,
        "state_bytes": sum(x.nbytes for x in jax.tree.leaves(want)),
        "cores": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "cold": args.cold,
        "same": {},
        "cross": {},
    }
    ckptr = ocp.StandardCheckpointer()
    try:
        formats = _formats(ckptr)
        if args.write:
            for name, fmt in formats.items():
                path = Path(args.write) / name
                saves, peaks, parts, syncs = [], [], [], []
                for _ in range(args.repeats):
                    shutil.rmtree(path, ignore_errors=True)  # a fresh write, outside the clock
                    # Fresh arrays for every save: a jax.Array caches its host copy after the
                    # first device_get, which would make a repeated gather free.
                    state = jax.block_until_ready(sharding.shard_state(like, mesh))
                    extra, s, peak = _measure(
                        lambda: fmt["save"](path, state, args.vocab)  # noqa: B023
                    )
                    del state
                    syncs.append(_fsync_files(path))  # outside the clock
                    saves.append(s)
                    peaks.append(peak)
                    parts.append(extra)
                size, files = _disk(path)
                r = {
                    "save_s": saves,
                    "fsync_after_s": syncs,
                    "save_peak_bytes": max(peaks),
                    "save_parts": parts,
                    "bytes": size,
                    "files": files,
                }
                r.update(_restores(fmt, path, mesh, like, want, args, n))
                row["same"][name] = r
                print(f"{n} devices, {name}: saved and restored", file=sys.stderr)
        if args.read:
            for name, fmt in formats.items():
                r = _restores(
                    fmt, Path(args.read) / name, mesh, like, want, args, args.read_devices
                )
                row["cross"][name] = {"from": args.read_devices, **r}
                print(f"{n} devices, {name}: restored from {args.read_devices}", file=sys.stderr)
    finally:
        ckptr.close()
    return row


# ----------------------------------------------------------------------------- report


def _median(xs) -> float:
    return statistics.median(xs)


def _part(parts: list[dict], key: str, label: str) -> str:
    vals = [p[key] for p in parts if key in p]
    return f"{label} {_median(vals):.3f}" if vals else ""


def _ratio(x: float, base: float) -> str:
    return f"{x / base:.2f}x" if base > 0 else "-"


def report(rows: list[dict]) -> None:
    r0 = rows[0]
    print(
        f"\n## checkpoints: V={r0['V']:,} D={r0['D']} {r0['optimizer']}, state "
        f"{fmt_bytes(r0['state_bytes'])}; {r0['cores']} CPU cores; "
        f"{'cold' if r0['cold'] else 'warm'} page cache\n"
    )
    print("### save and restore on the same device count (median s; ratio = format / (a))\n")
    print(
        "| devices | format | save s | vs (a) | + fsync after s | restore s | vs (a) | on disk "
        "| files | peak RSS save / restore | bit-identical | of which (s) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | --- |")
    for r in rows:
        if not r["same"]:
            continue
        base = r["same"]["trainer"]
        for name, f in r["same"].items():
            save, rest = _median(f["save_s"]), _median(f["restore_s"])
            notes = ", ".join(
                filter(
                    None,
                    [
                        _part(f["save_parts"], "gather_s", "gather"),
                        _part(f["save_parts"], "blocking_s", "save blocks"),
                        _part(f["restore_parts"], "load_s", "read file"),
                    ],
                )
            )
            print(
                f"| {r['devices']} | {FORMAT_LABELS[name]} | {save:.3f} | "
                f"{_ratio(save, _median(base['save_s']))} | {_median(f['fsync_after_s']):.3f} | "
                f"{rest:.3f} | "
                f"{_ratio(rest, _median(base['restore_s']))} | {fmt_bytes(f['bytes'])} | "
                f"{f['files']} | {fmt_bytes(f['save_peak_bytes'])} / "
                f"{fmt_bytes(f['restore_peak_bytes'])} | "
                f"{'yes' if f['identical'] else '**NO**'} | {notes} |"
            )
    cross = [r for r in rows if r["cross"]]
    if cross:
        print("\n### restore onto another device count (median s; ratio = format / (a))\n")
        print("| devices | format | restore s | vs (a) | peak RSS | bit-identical |")
        print("| ---: | --- | ---: | ---: | ---: | :---: |")
        for r in cross:
            base = _median(r["cross"]["trainer"]["restore_s"])
            for name, f in r["cross"].items():
                rest = _median(f["restore_s"])
                print(
                    f"| {f['from']} -> {r['devices']} | {FORMAT_LABELS[name]} | {rest:.3f} | "
                    f"{_ratio(rest, base)} | {fmt_bytes(f['restore_peak_bytes'])} | "
                    f"{'yes' if f['identical'] else '**NO**'} |"
                )
    print(f"\nmax load average before a worker: {max(r['load_before'] for r in rows):.1f}")


# ----------------------------------------------------------------------------- driver


def _run_worker(n: int, argv: list[str]) -> dict:
    """Runs :func:`worker` for n devices in a fresh process; its last stdout line is the row."""
    env = child_env(cpu_devices=n)
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", str(n)]
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=1800)
    if res.returncode != 0:
        sys.exit(f"worker with {n} devices failed:\n{res.stderr[-4000:]}")
    print(f"worker with {n} devices: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument(
        "--devices", type=int, nargs="+", default=[1, 4], help="save + restore on each count"
    )
    ap.add_argument(
        "--cross",
        type=int,
        nargs="*",
        default=[2, 1],
        help="restore the largest --devices count's checkpoints onto these counts",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--optimizer", choices=("sgd", "adagrad", "adam", "rmsprop"), default="sgd")
    ap.add_argument("--cold", action="store_true", help="evict the files before each restore")
    ap.add_argument("--tmp", default=None, help="parent of the temporary checkpoint folder")
    ap.add_argument("--json", help="write the rows to this JSON file")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--write", help=argparse.SUPPRESS)
    ap.add_argument("--read", help=argparse.SUPPRESS)
    ap.add_argument("--read-devices", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return

    argv = list(argv if argv is not None else sys.argv[1:])
    src = max(args.devices)
    cross = [m for m in dict.fromkeys(args.cross) if m != src]
    others = sorted({*args.devices, *cross} - {src}, reverse=True)
    order = [src, *others]  # the largest count first: the others read its checkpoints
    root = Path(tempfile.mkdtemp(prefix="w2v_jax_ckpt_bench.", dir=args.tmp))
    rows = []
    try:
        for m in order:
            extra = []
            if m in args.devices:
                extra += ["--write", str(root / f"n{m}")]
            if m in cross:
                extra += ["--read", str(root / f"n{src}"), "--read-devices", str(src)]
            rows.append(_run_worker(m, argv + extra))
            if m != src:
                shutil.rmtree(root / f"n{m}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
