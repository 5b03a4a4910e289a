"""Throughput of the host data pipeline alone, and of the device negative samplers.

Pipeline (pairs/s: skip-gram pairs, or CBOW context words, produced by ``iterate_batches`` for one
epoch, median of ``--repeats`` passes; vocabulary and encoding are built once beforehand). It
prints wall-clock pairs/s and pairs per CPU-second of this process (the latter is what one core
delivers when other processes compete for the machine; with ``--prefetch`` it sums both threads)::

    python bench/pipeline.py                        # wiki-sample, the default corpus
    python bench/pipeline.py --corpus lee --min-count 1
    python bench/pipeline.py --model cbow

One host's share of a multi-host run (``--slices 1,2,4``: for each count S, one epoch of what
the process reading slice 0 of S builds, ``iterate_slices(read=range(1))``; seconds per epoch,
median, and the ratio to S = 1, interleaved)::

    python bench/pipeline.py --slices 1,2,4

Negative samplers (draws/s of ``sample_negatives`` for shape [4096, 5], jitted, CPU, median)::

    python bench/pipeline.py --negatives

Expected runtime: under a minute each. Numbers and the machine that gave them are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import numpy as np


def bench_pipeline(args: argparse.Namespace) -> None:
    from w2v_jax.batches import iterate_batches, prefetch
    from w2v_jax.config import DataConfig
    from w2v_jax.corpus import encode_corpus, resolve_corpus
    from w2v_jax.vocab import build_vocab

    cfg = DataConfig()
    cfg = dataclasses.replace(
        cfg,
        min_count=args.min_count,
        window=args.window,
        chunk_tokens=args.chunk_tokens,
        dynamic_window=not args.fixed_window,
    )
    t0 = time.perf_counter()
    source = resolve_corpus(args.corpus)
    vocab = build_vocab(source.sentences(), cfg)
    corpus = encode_corpus(source, vocab)
    setup = time.perf_counter() - t0
    print(
        f"corpus={source.name} tokens={corpus.num_tokens} raw={corpus.raw_words} V={len(vocab)} "
        f"model={args.model} W={cfg.window} dynamic={cfg.dynamic_window} B={args.batch_size} "
        f"chunk_tokens={cfg.chunk_tokens} prefetch={args.prefetch} (setup {setup:.1f}s, "
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus)"
    )
    rates, cpu_rates, batch_rates = [], [], []
    for r in range(args.repeats):
        it = iterate_batches(
            corpus, vocab, cfg, batch_size=args.batch_size, seed=r, model=args.model, epochs=1
        )
        if args.prefetch:
            it = prefetch(it, size=args.prefetch)
        pairs = 0
        n_batches = 0
        t = time.perf_counter()
        c = time.process_time()
        for batch, _info in it:
            # pairs: valid (center, context) for sg; valid context slots for cbow
            m = batch.mask if args.model == "sg" else batch.context_mask
            pairs += int(np.count_nonzero(m))
            n_batches += 1
        dt = time.perf_counter() - t
        cpu = time.process_time() - c
        rates.append(pairs / dt)
        cpu_rates.append(pairs / cpu)
        batch_rates.append(n_batches / dt)
        print(
            f"  repeat {r}: {pairs} pairs in {n_batches} batches, {dt:.3f}s wall, {cpu:.3f}s cpu, "
            f"{pairs / dt / 1e6:.2f}M pairs/s"
        )
    print(
        f"median: {statistics.median(rates) / 1e6:.2f}M pairs/s wall-clock, "
        f"{statistics.median(cpu_rates) / 1e6:.2f}M pairs per cpu-second, "
        f"{statistics.median(batch_rates):.0f} batches/s; load average {os.getloadavg()[0]:.1f}"
    )


def bench_slices(args: argparse.Namespace) -> None:
    from w2v_jax.batches import iterate_slices
    from w2v_jax.config import DataConfig
    from w2v_jax.corpus import prepare_corpus, resolve_corpus

    cfg = dataclasses.replace(
        DataConfig(), min_count=args.min_count, window=args.window, chunk_tokens=args.chunk_tokens
    )
    source = resolve_corpus(args.corpus)
    vocab, corpus = prepare_corpus(source, cfg)
    counts = [int(x) for x in args.slices.split(",")]
    print(
        f"corpus={source.name} tokens={corpus.num_tokens} V={len(vocab)} model={args.model} "
        f"B={args.batch_size}; one epoch of the process reading slice 0 of S, median of "
        f"{args.repeats}, {os.cpu_count()} cpus"
    )
    times: dict[int, list[float]] = {s: [] for s in counts}
    steps: dict[int, int] = {}
    for r in range(args.repeats):
        for s in counts:
            it = iterate_slices(
                corpus, vocab, cfg, batch_size=args.batch_size, seed=r, model=args.model,
                epochs=1, slices=s, read=range(1),
            )  # fmt: skip
            t = time.perf_counter()
            steps[s] = sum(1 for _ in it)
            times[s].append(time.perf_counter() - t)
    base = statistics.median(times[counts[0]])
    for s in counts:
        med = statistics.median(times[s])
        print(
            f"  S={s}: {med:.3f} s per epoch ({steps[s]} steps of {args.batch_size // s} rows), "
            f"{base / med:.2f}x the S={counts[0]} stream"
        )


def bench_negatives(args: argparse.Namespace) -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from w2v_jax.sampling import build_noise_table, sample_negatives

    rng = np.random.default_rng(0)
    shape = (4096, 5)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, prng {args.prng}; shape {shape}; "
        f"{args.calls} calls per repeat, median of {args.repeats} (kinds interleaved)"
    )
    draw = jax.jit(lambda t, k: sample_negatives(t, k, shape))
    for v in (10_000, 71_290, 1_000_000):
        counts = np.sort(rng.zipf(1.3, size=v).astype(np.int64))[::-1] + 5
        kinds = {
            "alias": build_noise_table(counts, 0.75, "alias"),
            "table N=1e6": build_noise_table(counts, 0.75, "table", table_size=1_000_000),
            "table N=1e7": build_noise_table(counts, 0.75, "table", table_size=10_000_000),
        }
        kinds = {name: jax.device_put(t) for name, t in kinds.items()}
        keys = jax.random.split(jax.random.key(0, impl=args.prng), args.calls)
        for t in kinds.values():
            draw(t, keys[0]).block_until_ready()
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.repeats):
            for name, t in kinds.items():
                start = time.perf_counter()
                for i in range(args.calls):
                    out = draw(t, keys[i])
                out.block_until_ready()
                times[name].append((time.perf_counter() - start) / args.calls)
        for name, ts in times.items():
            med = statistics.median(ts)
            print(
                f"  V={v:>9,} {name:<12} {shape[0] * shape[1] / med / 1e6:7.1f}M draws/s "
                f"({med * 1e6:.0f} us/call)"
            )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", default="wiki-sample")
    p.add_argument("--model", default="sg", choices=("sg", "cbow"))
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--fixed-window", action="store_true")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--chunk-tokens", type=int, default=1 << 20)
    p.add_argument("--prefetch", type=int, default=0, help="background thread, queue size (0: off)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--slices", help="comma-separated slice counts: one host's share of each")
    p.add_argument("--negatives", action="store_true", help="benchmark the negative samplers")
    p.add_argument("--calls", type=int, default=100, help="jitted calls per repeat (--negatives)")
    p.add_argument("--prng", default="threefry2x32", help="jax PRNG impl (--negatives)")
    args = p.parse_args()
    if args.negatives:
        bench_negatives(args)
    elif args.slices:
        bench_slices(args)
    else:
        bench_pipeline(args)


if __name__ == "__main__":
    main()
