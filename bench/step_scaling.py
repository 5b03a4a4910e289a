"""Cost of one training step as the vocabulary grows: V = 10^4 vs 10^6 at the same batch.

    python bench/step_scaling.py                    # sg-ns and sg-hs, sparse and fused updates
    python bench/step_scaling.py --vocab 10000,1000000 --batch 4096 --repeats 7

A row-sparse step touches B(K+2) rows for SGNS and about B(log2 V + 1) for HS, whatever V is;
only the tables themselves are V-sized (updated in place, donated). The script builds random
Zipf-distributed batches, jits ``make_train_steps`` (``steps_per_call`` steps per call), and
reports the median milliseconds per step and pairs/s over repeats, with the ratio of the
largest to the smallest V. HS paths get longer with V (log2 V), so its ratio is expected to grow
by about that factor; SGNS's should stay near 1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def zipf_counts(v: int) -> np.ndarray:
    return np.maximum(1, (1e7 / np.arange(1, v + 1)).astype(np.int64))


def measure(model: str, loss: str, update: str, v: int, b: int, s: int, repeats: int) -> float:
    from w2v_jax import huffman, sampling
    from w2v_jax.config import Config, override
    from w2v_jax.train import Tables, init_params, init_state, make_train_steps

    cfg = override(Config(), model=model, loss=loss, update=update, batch_size=b, steps_per_call=s)
    counts = zipf_counts(v)
    if loss == "ns":
        tables = Tables(noise=jax.device_put(sampling.build_noise_table(counts, 0.75)))
    else:
        hf = huffman.build_huffman(counts)
        tables = Tables(
            points=jnp.asarray(hf.points),
            codes=jnp.asarray(hf.codes),
            lengths=jnp.asarray(hf.lengths),
        )
    state = init_state(cfg, init_params(cfg, v, jax.random.key(0)), tables)
    rng = np.random.default_rng(0)
    p = counts / counts.sum()
    ids = lambda *shape: rng.choice(v, size=shape, p=p).astype(np.int32)  # noqa: E731
    batch = {
        "center": ids(s, b),
        "context": ids(s, b),
        "mask": np.ones((s, b), np.float32),
        "progress": np.full((s,), 0.1, np.float32),
    }
    batch = jax.device_put(batch)
    steps = make_train_steps(cfg)
    key = jax.random.key(1)
    state, m = steps(state, batch, key)  # compile
    jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, m = steps(state, batch, key)
        jax.block_until_ready(m)
        times.append((time.perf_counter() - t0) / s)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", default="10000,1000000")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps-per-call", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--variants", default="sg-ns-sparse,sg-hs-sparse,sg-ns-fused,sg-hs-fused")
    a = ap.parse_args(argv)
    sizes = [int(float(x)) for x in a.vocab.split(",")]
    print(
        f"B={a.batch}, {a.steps_per_call} steps per call, median of {a.repeats}; "
        f"{jax.devices()[0].device_kind}"
    )
    print("| variant | update | " + " | ".join(f"V={v:.0e} ms/step" for v in sizes) + " | ratio |")
    print("|" + " --- |" * (len(sizes) + 3))
    for variant in a.variants.split(","):
        model, loss, update = variant.split("-")
        ms = [
            1e3 * measure(model, loss, update, v, a.batch, a.steps_per_call, a.repeats)
            for v in sizes
        ]
        cells = " | ".join(f"{x:.2f} ({a.batch / x / 1e3:.2f}M pairs/s)" for x in ms)
        print(f"| {model}-{loss} | {update} | {cells} | {ms[-1] / ms[0]:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
