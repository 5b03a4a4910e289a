"""Cost of one training step as the vocabulary grows: V = 10^4 vs 10^6 at the same batch.

    python bench/step_scaling.py                    # sg-ns and sg-hs, sparse and fused updates
    python bench/step_scaling.py --vocab 10000,1000000 --batch 4096 --rounds 9
    python bench/step_scaling.py --check-hlo        # also: no V-sized copy in the compiled step

A row-sparse step touches B(K+2) rows for SGNS and B(L+1) for HS (L = the longest Huffman code,
the padded path length of the pure-JAX step; the fused kernel walks each path's real length),
whatever V is; only the tables themselves are V-sized (updated in place, donated).

Method: for each variant, one state per V is built up front and the V's are timed in turns
(round r times every V once, one ``steps_per_call`` call each), so load from other jobs on a
shared machine hits all V's alike. Every call feeds the next of ``--groups`` distinct pre-staged
batch groups, so large-V runs cannot live off rows cached by the previous call. Ids are
Zipf(1)-distributed like running text; negatives come from the unigram^0.75 table, drawn
inside the step as in training. Printed: median ms per step per V, the median over rounds of
the per-round ratio largest/smallest V, and its min..max.

Why the ratio is not exactly 1: at V = 10^6 the two tables take 800 MB, beyond every cache,
so rare rows come from DRAM (unigram^0.75 negatives make about two thirds of the negatives
rare), and HS paths get longer (log2 V). ``--check-hlo`` asserts what must hold regardless:
the compiled step copies or fills no V-sized buffer.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np


def zipf_counts(v: int) -> np.ndarray:
    return np.maximum(1, (1e7 / np.arange(1, v + 1)).astype(np.int64))


def zipf_ids(rng: np.random.Generator, cdf: np.ndarray, shape) -> np.ndarray:
    """Ids drawn from the distribution whose [V] cumulative sum is ``cdf`` (O(log V) per id)."""
    return np.minimum(np.searchsorted(cdf, rng.random(shape)), len(cdf) - 1).astype(np.int32)


def setup(model: str, loss: str, update: str, v: int, b: int, s: int, groups: int):
    """``(steps, state, batch_groups, key, consts)`` for one variant at vocabulary size ``v``."""
    from w2v_jax import step as step_lib
    from w2v_jax import trainer
    from w2v_jax.config import Config, override

    cfg = override(Config(), model=model, loss=loss, update=update, batch_size=b, steps_per_call=s)
    counts = zipf_counts(v)
    objective, inputs, tx = trainer.resolve(cfg)
    consts = jax.device_put(objective.make_consts(counts))
    params = step_lib.init_params(objective, v, cfg.model.dim, jax.random.key(0))
    state = step_lib.init_state(params, tx)
    steps = step_lib.make_steps(step_lib.for_config(cfg, objective, inputs, tx))
    rng = np.random.default_rng(v)
    cdf = np.cumsum(counts / counts.sum())
    batch_groups = [
        jax.device_put(
            {
                "center": zipf_ids(rng, cdf, (s, b)),
                "context": zipf_ids(rng, cdf, (s, b)),
                "mask": np.ones((s, b), np.float32),
                "progress": np.full((s,), 0.1, np.float32),
            }
        )
        for _ in range(groups)
    ]
    # consts ride along as the last field: they are an argument of every call, never donated
    return steps, state, batch_groups, jax.random.key(1), consts


def main(argv=None) -> int:
    from w2v_jax.hlo import vocab_sized_ops

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", default="10000,1000000")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps-per-call", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=9, help="timed calls per V (interleaved)")
    ap.add_argument("--groups", type=int, default=4, help="distinct batch groups cycled through")
    ap.add_argument("--variants", default="sg-ns-sparse,sg-hs-sparse,sg-ns-fused,sg-hs-fused")
    ap.add_argument("--check-hlo", action="store_true", help="fail on a V-sized copy or fill")
    a = ap.parse_args(argv)
    sizes = [int(float(x)) for x in a.vocab.split(",")]
    s, b = a.steps_per_call, a.batch
    print(
        f"B={b}, {s} steps per call, {a.groups} batch groups, V's interleaved over "
        f"{a.rounds} rounds; {jax.devices()[0].device_kind}"
    )
    print(
        "| variant | update | "
        + " | ".join(f"V={v:.0e} ms/step" for v in sizes)
        + " | ratio (min..max over rounds) |"
    )
    print("|" + " --- |" * (len(sizes) + 3))
    failed = False
    for variant in a.variants.split(","):
        model, loss, update = variant.split("-")
        runs = {v: list(setup(model, loss, update, v, b, s, a.groups)) for v in sizes}
        for v, (steps, state, groups, key, consts) in runs.items():
            if a.check_hlo:  # time the executable just checked: one compile, not two
                steps = runs[v][0] = steps.lower(state, consts, groups[0], key).compile()
                bad = vocab_sized_ops(steps.as_text(), v)
                if bad:
                    failed = True
                    print(f"{variant} V={v}: V-sized buffers in the step: {bad[:3]}")
            state, m = steps(state, consts, groups[0], key)  # compile and warm up
            jax.block_until_ready(m)
            runs[v][1] = state
        times = {v: [] for v in sizes}
        for r in range(a.rounds):
            for v in sizes:
                steps, state, groups, key, consts = runs[v]
                t0 = time.perf_counter()
                state, m = steps(state, consts, groups[(r + 1) % len(groups)], key)
                jax.block_until_ready(m)
                times[v].append((time.perf_counter() - t0) / s)
                runs[v][1] = state
        ratios = [big / small for big, small in zip(times[sizes[-1]], times[sizes[0]], strict=True)]
        ms = [1e3 * statistics.median(times[v]) for v in sizes]
        cells = " | ".join(f"{x:.2f} ({b / x / 1e3:.2f}M pairs/s)" for x in ms)
        print(
            f"| {model}-{loss} | {update} | {cells} | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}..{max(ratios):.2f}) |",
            flush=True,
        )
        del runs
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
