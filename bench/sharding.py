"""Sharded step: the collectives in its compiled HLO, their bytes, and pairs/s.

    python bench/sharding.py                       # sg/ns, V=1e5 D=100 B=4096 K=5; ~1-2 min
    python bench/sharding.py --shard-by rows       # tables split by rows (default: dims)
    python bench/sharding.py --model cbow --loss hs --devices 1 2
    python bench/sharding.py --json out.json       # also write the rows as JSON
    python bench/sharding.py --rounds 3 --baseline # 1,2,4,1,2,4,... pooled; + the one-device step
    python bench/sharding.py --bucketed            # + the dedup/all_to_all prototype, checked
    python bench/sharding.py --platform gpu --devices 1 2 4 8   # real accelerators
    python bench/sharding.py --trainer --devices 1 2 --rounds 3  # whole runs of w2v_jax.train

For each device count n (default 1, 2, 4) a fresh Python process is started with
``XLA_FLAGS=--xla_force_host_platform_device_count=n`` (set before JAX is imported), so every n
runs with its own CPU client. It builds the tables split over n simulated CPU devices (by
dimensions, or by rows with ``--shard-by rows``),
compiles :func:`w2v_jax.sharding.make_sharded_step`, lists the collectives of the optimized HLO
(``lower(...).compile().as_text()``) with their operand and result bytes per device per step,
and times ``--repeats`` runs of ``--steps`` steps on batches already on the devices (pairs/s =
B * steps / seconds, median over repeats). With ``--baseline`` the one-device pure-JAX step
(:func:`w2v_jax.step.make_step`, ``--update sparse``: the same model and update, no collectives)
is timed too.

With ``--trainer`` it times whole training runs instead: ``w2v-jax train --update sparse
--devices n`` on the default corpus (``--corpus``), each in a fresh process, and reports the
training seconds the run prints (XLA compilation included), against ``--devices 1``, the
one-device pure-JAX step's run; ``--dim`` and ``--shard-by`` apply.

Simulated CPU devices share the machine's cores: on a 2-core machine, 4 devices are 2 cores
time-sliced, so only n <= cores can show a speed-up; on any machine they measure the
communication and bookkeeping overhead of the sharded step, not multi-GPU scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import child_env, fmt_bytes


def _zipf_ids(rng, v, shape, power=1.0):
    """Ids drawn with p(rank r) ~ r^-power: Zipf(1) words, power 0.75 for the noise distribution."""
    import numpy as np

    p = np.arange(1, v + 1, dtype=np.float64) ** -power
    return rng.choice(v, size=shape, p=p / p.sum()).astype(np.int32)


def _batches(args, n_batches):
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_batches):
        b = {
            "center": _zipf_ids(rng, args.vocab, args.batch),
            "mask": np.ones(args.batch, np.float32),
        }
        if args.model == "sg":
            b["context"] = _zipf_ids(rng, args.vocab, args.batch)
        else:
            b["context"] = _zipf_ids(rng, args.vocab, (args.batch, 2 * args.window))
            b["context_mask"] = np.ones((args.batch, 2 * args.window), np.float32)
        out.append(b)
    return out


def _time(fn, args):
    import jax

    fn()  # compile + warm up
    jax.block_until_ready(fn())
    runs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t)
    return runs


def worker(args) -> dict:
    """Runs in a process whose XLA_FLAGS ask for ``args.worker`` CPU devices."""
    import jax
    import numpy as np

    from w2v_jax import hlo, optim, sharding
    from w2v_jax import step as step_lib

    n = args.worker
    if args.platform == "cpu":
        assert len(jax.devices()) == n, jax.devices()
    elif len(jax.devices()) < n:
        raise SystemExit(f"--devices {n}: only {len(jax.devices())} {args.platform} devices")
    mesh = sharding.make_mesh(jax.devices()[:n])
    rng = np.random.default_rng(1)
    v, d = args.vocab, args.dim
    objective, inputs = _values(args)
    host = {
        "center_vecs": rng.uniform(-0.5 / d, 0.5 / d, (v, d)).astype(np.float32),
        objective.table: np.zeros((objective.table_rows(v), d), np.float32),
    }
    counts = np.maximum((1e7 / np.arange(1, v + 1)).astype(np.int64), 1)
    consts = jax.device_put(objective.make_consts(counts))
    host_batches = _batches(args, 8)
    batches = [sharding.shard_batch(b, mesh) | {"progress": np.float32(0.0)} for b in host_batches]
    tx = optim.make_optimizer("sgd", 0.025)
    init = step_lib.init_state({k: jax.numpy.asarray(x) for k, x in host.items()}, tx)
    layout = sharding.layout_named(args.shard_by)
    sstate = sharding.shard_state(init, mesh, layout=layout)
    jax.block_until_ready((batches, sstate))  # all host-to-device copies done before timing
    step = jax.jit(
        sharding.make_sharded_step(mesh, objective, inputs, tx, layout=layout), donate_argnums=0
    )
    key = jax.random.key(0)

    compiled = step.lower(sstate, consts, batches[0], key).compile()
    ops = hlo.hlo_collectives(compiled.as_text())
    mem = compiled.memory_analysis()
    row = {
        "devices": n,
        "shard_by": args.shard_by,
        "model": args.model,
        "loss": args.loss,
        "V": v,
        "D": d,
        "B": args.batch,
        "K": args.negative,
        "L": int(consts["points"].shape[1]) if "points" in consts else None,
        "cores": os.cpu_count(),
        "collectives": ops,
        "table_bytes_per_device": sum(
            int(t.addressable_shards[0].data.nbytes) for t in sstate.params.values()
        ),
        "temp_bytes_per_device": int(getattr(mem, "temp_size_in_bytes", -1)) if mem else None,
    }

    holder = {"state": sstate}

    def run_sharded():
        # every step waits for the previous one, here and in the baseline: multi-device CPU
        # meshes must (sharding.needs_sync), so the comparison is like for like
        st = holder["state"]
        for s in range(args.steps):
            st, metrics = jax.block_until_ready(step(st, consts, batches[s % len(batches)], key))
        holder["state"] = st
        return metrics["loss_sum"]

    row["load_before"] = os.getloadavg()[0]
    runs = _time(run_sharded, args)
    row["seconds"] = runs
    row["pairs_per_s"] = args.batch * args.steps / statistics.median(runs)
    row["best_pairs_per_s"] = args.batch * args.steps / min(runs)

    if args.baseline and n == 1:
        row["baseline_pairs_per_s"] = _baseline(args, host, counts, host_batches)
    if args.bucketed:
        row.update(_bucketed(args, mesh, objective, inputs, tx, host, consts, batches, step))
    return row


def _bucketed(args, mesh, objective, inputs, tx, host, consts, batches, step):
    """The prototype of bench/_bucketed.py: checked against the sharded step (tables after two
    steps from the same state), then timed the same way."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _bucketed import make_bucketed_step

    from w2v_jax import sharding
    from w2v_jax import step as step_lib

    fresh = lambda: sharding.shard_state(  # noqa: E731
        step_lib.init_state({k: jnp.asarray(x) for k, x in host.items()}, tx), mesh
    )
    bucketed = jax.jit(make_bucketed_step(mesh, objective, inputs, tx), donate_argnums=0)
    key = jax.random.key(0)
    ref, got, dropped = fresh(), fresh(), 0.0
    for b in batches[:2]:
        ref, _ = step(ref, consts, b, key)
        got, m = bucketed(got, consts, b, key)
        dropped += float(m["dropped"])
    # relative to the largest entry (float sums in another order differ by a few ulps)
    err = max(
        float(np.max(np.abs(np.asarray(got.params[k]) - np.asarray(ref.params[k]))))
        / max(float(np.max(np.abs(np.asarray(ref.params[k])))), 1e-30)
        for k in ref.params
    )
    if dropped == 0 and err > 1e-4:
        raise SystemExit(f"bucketed prototype disagrees with the sharded step: {err:.1e}")
    holder = {"state": got, "dropped": dropped}

    def run():
        st = holder["state"]
        for s in range(args.steps):
            batch = batches[s % len(batches)]
            st, metrics = jax.block_until_ready(bucketed(st, consts, batch, key))
            holder["dropped"] += float(metrics["dropped"])
        holder["state"] = st
        return metrics["loss_sum"]

    runs = _time(run, args)
    return {
        "bucketed_seconds": runs,
        "bucketed_max_diff": err,
        "bucketed_dropped": holder["dropped"],
    }


def _values(args):
    """The objective and input side the bench's --model/--loss name."""
    from w2v_jax import config as config_lib
    from w2v_jax import trainer

    cfg = config_lib.override(
        config_lib.Config(), model=args.model, loss=args.loss, negative=args.negative
    )
    objective, inputs, _ = trainer.resolve(cfg)
    return objective, inputs


def _baseline(args, host, counts, host_batches):
    """pairs/s of the single-device trainer step (step.make_step, jitted), same shapes."""
    import jax
    import jax.numpy as jnp

    from w2v_jax import config as config_lib
    from w2v_jax import step as step_lib
    from w2v_jax import trainer

    cfg = config_lib.override(
        config_lib.Config(),
        model=args.model,
        loss=args.loss,
        dim=args.dim,
        negative=args.negative,
        batch_size=args.batch,
        window=args.window,
        update="sparse",  # the pure-JAX step the sharded one splits (auto could pick the kernel)
    )
    objective, inputs, tx = trainer.resolve(cfg)
    consts = jax.device_put(objective.make_consts(counts))
    st = {"state": step_lib.init_state({k: jnp.asarray(v) for k, v in host.items()}, tx)}
    one = jax.jit(step_lib.for_config(cfg, objective, inputs, tx), donate_argnums=0)
    step = lambda s, b, k: one(s, consts, b, k)  # noqa: E731
    keep = ("center", "context", "mask", "context_mask")
    batches = [
        {**{k: jnp.asarray(b[k]) for k in keep if k in b}, "progress": jnp.float32(0.0)}
        for b in host_batches
    ]
    key = jax.random.key(0)

    def run():
        s = st["state"]
        for i in range(args.steps):
            s, metrics = jax.block_until_ready(step(s, batches[i % len(batches)], key))
        st["state"] = s
        return metrics["loss_sum"]

    runs = _time(run, args)
    return args.batch * args.steps / statistics.median(runs)


def dedup_estimate(args, ns=(2, 4, 8, 16, 64, 256)) -> list[dict]:
    """Host-side estimate of the next step: dedup per device + fixed-capacity all-to-all buckets.

    For one global batch of ``args`` (SGNS outside table: context + negatives), splits it over n
    devices as the step does, counts each device's unique ids, and the largest (device, owner)
    bucket under "div" (contiguous rows, as now) and "mod" (id % n) ownership. A fixed-capacity
    all-to-all that drops nothing needs capacity c = that maximum; each device then exchanges
    n * c rows each way instead of the B * (1 + K) rows of the all-gather scheme.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    b = args.batch
    ids = np.concatenate(
        [
            _zipf_ids(rng, args.vocab, (b, 1)),
            _zipf_ids(rng, args.vocab, (b, args.negative), 0.75),
        ],
        axis=1,
    )  # [B, 1 + K], row i = example i
    out = []
    for n in ns:
        if b % n:
            continue
        vs = -(-args.vocab // n)
        uniq = [np.unique(part) for part in np.split(ids, n)]
        cap = {
            "div": max(int(np.bincount(u // vs, minlength=n).max()) for u in uniq),
            "mod": max(int(np.bincount(u % n, minlength=n).max()) for u in uniq),
        }
        out.append(
            {
                "devices": n,
                "rows_allgather": b * ids.shape[1],
                "unique_mean": float(np.mean([len(u) for u in uniq])),
                "cap_div": cap["div"],
                "cap_mod": cap["mod"],
                "rows_bucket_mod": n * cap["mod"],
                "rows_bucket_div": n * cap["div"],
            }
        )
    return out


def report_dedup(rows, args) -> None:
    d = args.dim
    print(
        f"\n### next step, estimated: dedup + all-to-all buckets (outside table, B={args.batch}, "
        f"K={args.negative}, Zipf(1) words, negatives ~ r^-0.75)\n"
    )
    print(
        "| devices | rows now (all-gather) | unique ids / device | bucket cap div / mod "
        "| rows bucketed, mod | f32 bytes per device per direction: now -> bucketed |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['devices']} | {r['rows_allgather']:,} | {r['unique_mean']:,.0f} | "
            f"{r['cap_div']} / {r['cap_mod']} | {r['rows_bucket_mod']:,} | "
            f"{fmt_bytes(r['rows_allgather'] * d * 4)} -> "
            f"{fmt_bytes(r['rows_bucket_mod'] * d * 4)} |"
        )


def report(rows) -> None:
    r0 = rows[0]
    print(
        f"\n## {r0['model']}/{r0['loss']}, tables split by {r0['shard_by']}: "
        f"V={r0['V']} D={r0['D']} B={r0['B']} K={r0['K']}"
        + (f" L={r0['L']}" if r0["L"] else "")
        + f"; {r0['cores']} CPU cores\n"
    )
    for r in rows:
        if not r["collectives"]:
            continue
        print(
            f"### collectives of the compiled step, {r['devices']} devices "
            "(bytes per device per step)\n"
        )
        print("| op | result | operand bytes | result bytes |")
        print("| --- | --- | ---: | ---: |")
        for o in r["collectives"]:
            print(
                f"| {o['op']} | `{o['result']}` | {fmt_bytes(o['operand_bytes'])} | "
                f"{fmt_bytes(o['result_bytes'])} |"
            )
        tot_in = sum(o["operand_bytes"] for o in r["collectives"])
        tot_out = sum(o["result_bytes"] for o in r["collectives"])
        print(
            f"| **total** ({len(r['collectives'])} ops) | | {fmt_bytes(tot_in)} | "
            f"{fmt_bytes(tot_out)} |\n"
        )
    print("### memory and throughput\n")
    print(
        "| devices | tables per device | XLA temp per device | pairs/s (median) | vs 1 device "
        "| pairs/s (best) | max load avg |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = rows[0]["pairs_per_s"]
    for r in rows:
        print(
            f"| {r['devices']} | {fmt_bytes(r['table_bytes_per_device'])} | "
            f"{fmt_bytes(r['temp_bytes_per_device'] or 0)} | {r['pairs_per_s']:,.0f} | "
            f"{r['pairs_per_s'] / base:.2f}x | {r['best_pairs_per_s']:,.0f} | "
            f"{r['load_before']:.1f} |"
        )
    if any("bucketed_pairs_per_s" in r for r in rows):
        print("\n### dedup + all_to_all buckets (prototype, bench/_bucketed.py)\n")
        print(
            "| devices | pairs/s (median) | vs the sharded step | ids dropped "
            "| relative difference after 2 steps |"
        )
        print("| ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            if "bucketed_pairs_per_s" in r:
                # a step that dropped ids computed something else: its time is not comparable
                dropped = r["bucketed_dropped"]
                note = f"{dropped:,.0f} (not a valid step)" if dropped else "0"
                print(
                    f"| {r['devices']} | {r['bucketed_pairs_per_s']:,.0f} | "
                    f"{r['bucketed_pairs_per_s'] / r['pairs_per_s']:.2f}x | "
                    f"{note} | {r['bucketed_max_diff']:.1e} |"
                )
    for r in rows:
        if "baseline_pairs_per_s" in r:
            b = r["baseline_pairs_per_s"]
            print(
                f"\none-device pure-JAX step (step.make_step, --update sparse): {b:,.0f} pairs/s; "
                "the sharded step against it: "
                + ", ".join(f"{x['devices']} devices {x['pairs_per_s'] / b:.2f}x" for x in rows)
            )


def _run_worker(n: int, argv: list[str], attempts: int = 2) -> dict:
    """Runs :func:`worker` for n devices in a fresh process; retries once if it dies.

    XLA:CPU aborts a process whose simulated devices miss a collective rendezvous for
    ``--xla_cpu_collective_call_terminate_timeout_seconds`` (40 s by default) when queued steps
    starve one device's launch thread (``sharding.needs_sync`` makes the trainer wait for each
    step for that reason); a dead worker is retried once (and reported on stderr).
    """
    if "--platform" in argv and argv[argv.index("--platform") + 1] != "cpu":
        env = child_env()
        env.pop("JAX_PLATFORMS", None)  # the accelerator's own devices; n of them are used
    else:
        env = child_env(cpu_devices=n)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), *argv]
    for attempt in range(1, attempts + 1):
        try:
            res = subprocess.run(
                cmd, env=env, capture_output=True, text=True, check=False, timeout=900
            )
        except subprocess.TimeoutExpired:
            print(f"worker with {n} devices timed out (attempt {attempt})", file=sys.stderr)
            continue
        if res.returncode == 0:
            return json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"worker with {n} devices failed (attempt {attempt}):\n{res.stderr[-3000:]}",
            file=sys.stderr,
        )
    sys.exit(f"worker with {n} devices failed {attempts} times")


def trainer_runs(args) -> None:
    """Training seconds of ``w2v-jax train --devices n`` for each n, rounds interleaved."""
    import re
    import tempfile

    seconds: dict[int, list[float]] = {n: [] for n in args.devices}
    speed: dict[int, list[float]] = {n: [] for n in args.devices}
    losses: dict[int, str] = {}
    for r in range(args.rounds):
        for n in args.devices:
            with tempfile.TemporaryDirectory() as out:
                cmd = [
                    sys.executable, "-m", "w2v_jax.cli", "train", "--corpus", args.corpus,
                    "--out", out, "--update", "sparse", "--devices", str(n), "--dim",
                    str(args.dim), "--shard-by", args.shard_by, "--neighbours=",
                ]  # fmt: skip
                res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
            m = re.search(r"in ([0-9.]+)s \(([0-9.]+)k words/s\); epoch losses (.*)", res.stdout)
            if res.returncode != 0 or m is None:
                sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
            seconds[n].append(float(m.group(1)))
            speed[n].append(float(m.group(2)))
            losses[n] = m.group(3)
            print(f"round {r + 1}, {n} devices: {m.group(1)} s", file=sys.stderr)
    base = statistics.median(seconds[args.devices[0]])
    print(f"w2v-jax train --update sparse, corpus {args.corpus}, D={args.dim}, "
          f"--shard-by {args.shard_by}, medians of {args.rounds}")  # fmt: skip
    print("| devices | training s | k words/s | ratio to 1 device | epoch losses |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for n in args.devices:
        med = statistics.median(seconds[n])
        print(
            f"| {n} | {med:.1f} | {statistics.median(speed[n]):.0f} | {base / med:.2f}x "
            f"| {losses[n]} |"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--model", choices=("sg", "cbow"), default="sg")
    ap.add_argument("--loss", choices=("ns", "hs"), default="ns")
    ap.add_argument("--vocab", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--negative", type=int, default=5)
    ap.add_argument("--window", type=int, default=5, help="CBOW: C = 2 * window slots")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved passes over --devices; repeats are pooled",
    )
    ap.add_argument(
        "--platform",
        choices=("cpu", "gpu", "tpu"),
        default="cpu",
        help="cpu: n simulated host devices; gpu/tpu: the first n real devices",
    )
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also time the one-device pure-JAX step (step.make_step)",
    )
    ap.add_argument(
        "--bucketed",
        action="store_true",
        help="also check and time the dedup + all_to_all prototype (bench/_bucketed.py)",
    )
    ap.add_argument(
        "--shard-by",
        choices=("dims", "rows"),
        default="dims",
        help="split the tables by dimensions (the trainer's default) or by vocabulary rows",
    )
    ap.add_argument("--json", help="write the rows to this JSON file")
    ap.add_argument(
        "--trainer", action="store_true", help="time whole w2v-jax train runs (see above)"
    )
    ap.add_argument("--corpus", default="wiki-sample", help="--trainer: the corpus")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.trainer:
        trainer_runs(args)
        return
    if args.bucketed and args.shard_by != "rows":
        ap.error("--bucketed checks the prototype against the row layout: add --shard-by rows")

    if args.worker:
        print(json.dumps(worker(args)))
        return

    # Rounds interleave the device counts (1, 2, 4, 1, 2, 4, ...) so that drifting load from
    # other processes hits every count alike; each count's repeats are pooled over rounds.
    by_n: dict[int, dict] = {}
    for r in range(args.rounds):
        for n in args.devices:
            row = _run_worker(n, argv if argv is not None else sys.argv[1:])
            print(
                f"round {r + 1}, {n} devices: {row['pairs_per_s']:,.0f} pairs/s "
                f"(load {row['load_before']:.1f})",
                file=sys.stderr,
            )
            if n in by_n:
                keep = by_n[n]
                keep["seconds"] += row["seconds"]
                if "bucketed_seconds" in row:
                    keep["bucketed_seconds"] += row["bucketed_seconds"]
                    keep["bucketed_dropped"] += row["bucketed_dropped"]
                keep["load_before"] = max(keep["load_before"], row["load_before"])
                if "baseline_pairs_per_s" in row:
                    keep.setdefault("baseline_runs", []).append(row["baseline_pairs_per_s"])
            else:
                by_n[n] = row
                if "baseline_pairs_per_s" in row:
                    row["baseline_runs"] = [row["baseline_pairs_per_s"]]
    rows = [by_n[n] for n in args.devices]
    for row in rows:
        pairs = args.batch * args.steps
        row["pairs_per_s"] = pairs / statistics.median(row["seconds"])
        row["best_pairs_per_s"] = pairs / min(row["seconds"])
        if "baseline_runs" in row:
            row["baseline_pairs_per_s"] = statistics.median(row["baseline_runs"])
        if "bucketed_seconds" in row:
            row["bucketed_pairs_per_s"] = pairs / statistics.median(row["bucketed_seconds"])
    report(rows)
    dedup = dedup_estimate(args) if args.loss == "ns" and args.model == "sg" else []
    if dedup:
        report_dedup(dedup, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": rows, "dedup_estimate": dedup}, f, indent=1)


if __name__ == "__main__":
    main()
