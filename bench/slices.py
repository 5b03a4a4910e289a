"""Counting plus encoding per host: every process reads the whole corpus, or only its slice.

A multi-host run cuts a plain-text corpus into one byte slice per process
(``corpus.prepare_slices``): each process counts and encodes only its slice, the counts are
merged across processes, and each encodes its slice's ids. This script runs P processes side by
side (``multiprocessing``, an all-gather through a manager in place of the trainer's
``jax.distributed`` one) and reports each process's seconds and bytes read, against one process
preparing the whole corpus (``prepare_corpus``: what every host of a multi-host run did before).
Side by side, the P processes share this machine's cores and memory; so each is then run again
alone (a fresh cache, the others' shared tables read from the files of the run side by side):
what each of P separate machines would spend, less the network.
Each kind runs in fresh cache folders; kinds alternate within each repeat; medians of
``--repeats``.

    python bench/slices.py --corpus /tmp/w2v_jax_bench/zipf50M.txt --processes 1 2 --repeats 3

(``bench/prepare.py --generate`` writes the Zipf corpora.) Numbers are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path


def _whole(corpus: str, min_count: int, cache: str, out) -> None:
    from w2v_jax.config import DataConfig
    from w2v_jax.corpus import prepare_corpus, resolve_corpus

    src = resolve_corpus(corpus)
    t0 = time.perf_counter()
    vocab, enc = prepare_corpus(src, DataConfig(min_count=min_count), cache_dir=cache)
    out.put((0, time.perf_counter() - t0, Path(corpus).stat().st_size, len(vocab), enc.num_tokens))


def _slice(corpus, min_count, cache, p, n, barrier, out) -> None:
    from w2v_jax import corpus as corpus_lib
    from w2v_jax.config import DataConfig

    calls = [0]

    def share(mine: bytes) -> list[bytes]:  # an all-gather between the P processes, by files
        calls[0] += 1
        path = Path(cache).parent / f"share{calls[0]}"
        path.mkdir(exist_ok=True)
        (path / f"{p}.tmp").write_bytes(mine)
        (path / f"{p}.tmp").rename(path / f"{p}.bin")
        if barrier is not None:  # alone: the others' files are there from a run side by side
            barrier.wait()
        return [(path / f"{q}.bin").read_bytes() for q in range(n)]

    src = corpus_lib.resolve_corpus(corpus)
    cfg = DataConfig(min_count=min_count)
    t0 = time.perf_counter()
    vocab, sliced = corpus_lib.prepare_slices(
        src, cfg, slices=n, read=range(p, p + 1), share=share, cache_dir=cache
    )
    seconds = time.perf_counter() - t0
    read = sum(r.size for r in corpus_lib.byte_slices(src, n)[p])
    out.put((p, seconds, read, len(vocab), sliced.tokens[p]))


def _start_all(ctx, procs, out) -> list[tuple]:
    for pr in procs:
        pr.start()
    rows = sorted(out.get(timeout=3600) for _ in procs)
    for pr in procs:
        pr.join()
    return rows


def _run(kind: int, corpus: str, min_count: int) -> tuple[list[tuple], list[tuple]]:
    """(rows of the P processes side by side, rows of each alone on the machine)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == 1:
            rows = _start_all(
                ctx, [ctx.Process(target=_whole, args=(corpus, min_count, tmp, out))], out
            )
            return rows, rows
        barrier = ctx.Barrier(kind)
        procs = []
        for p in range(kind):
            args = (corpus, min_count, f"{tmp}/{p}", p, kind, barrier, out)
            procs.append(ctx.Process(target=_slice, args=args))
        together = _start_all(ctx, procs, out)
        # Each again alone (fresh cache), the others' shared tables read from the run above:
        # what one of P separate machines does, less the network.
        alone = []
        for p in range(kind):
            args = (corpus, min_count, f"{tmp}/alone{p}/{p}", p, kind, None, out)
            Path(f"{tmp}/alone{p}").mkdir()
            for share in Path(tmp).glob("share*"):
                (Path(f"{tmp}/alone{p}") / share.name).symlink_to(share)
            alone += _start_all(ctx, [ctx.Process(target=_slice, args=args)], out)
        return together, alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    together: dict[int, list[float]] = {n: [] for n in a.processes}
    alone: dict[int, list[float]] = {n: [] for n in a.processes}
    last: dict[int, list[tuple]] = {}
    for r in range(a.repeats):
        for n in a.processes:
            rows, solo = _run(n, a.corpus, a.min_count)
            together[n].append(max(row[1] for row in rows))  # the run waits for the slowest
            alone[n].append(max(row[1] for row in solo))
            last[n] = rows
            print(
                f"repeat {r + 1}: P={n} side by side "
                + ", ".join(f"{row[1]:.2f}" for row in rows)
                + " s; alone "
                + ", ".join(f"{row[1]:.2f}" for row in solo)
                + " s"
            )
    base = statistics.median(together[a.processes[0]])
    print(f"\n{a.corpus}, min_count {a.min_count}, medians of {a.repeats}")
    print(
        "| processes | MB read per process | V | s, side by side (slowest) | ratio "
        "| s, each alone (slowest) | ratio |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in a.processes:
        t, s = statistics.median(together[n]), statistics.median(alone[n])
        mb = "/".join(f"{row[2] / 1e6:.0f}" for row in last[n])
        print(
            f"| {n} | {mb} | {last[n][0][3]:,} | {t:.2f} | {base / t:.2f}x | {s:.2f} "
            f"| {base / s:.2f}x |"
        )


if __name__ == "__main__":
    main()
