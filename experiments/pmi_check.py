"""Does SGNS factorise shifted PMI? Dot products v_w . u_c against PMI(w, c) - log K.

    python experiments/pmi_check.py --quick

Runtime: 40 s on 2 shared, busy CPU cores (top 300 words of wiki-sample, 5 epochs, D = 100).
Expected (measured with jax 0.10.2 and the pure-JAX step, which ``--set update=sparse`` selects;
the default ``auto`` now takes the fused kernel on CPU, not re-measured here): on the 3,078
pairs seen >= 50 times, w2v_jax's minibatch SGNS reaches Pearson 0.980 / Spearman 0.974 with
PMI - log K (mean |error| 0.08); the full-batch fit of the expected objective reaches 1.000
(mean |error| 0.001).

Levy and Goldberg (2014) show that the SGNS objective, in expectation over pairs and
negatives, is minimised cell by cell at v_w . u_c = log(#(w,c) / (K #(w) P_n(c))), which is
PMI(w, c) - log K for unigram noise (P_n(c) = #(c) / |D|), provided D is large enough to realise
any [V, V] matrix. This script checks that on a real corpus, two ways:

1. ``w2v_jax.train``: ordinary minibatch SGNS (skip-gram, K = 5) with the settings the
   derivation assumes: no subsampling (``sample=0``), a fixed window (``dynamic_window=False``)
   and unigram noise (``ns_exponent=1``), on the ``--vocab`` most frequent words. The score of a
   pair is ``center_vecs[w] . outside_vecs[c]`` (w2v_jax models P(c | w)).
2. :func:`w2v_jax.experiment.fit_sgns_full_batch`: the expected objective itself over the exact
   co-occurrence counts of the same encoded corpus, full batch, optax Adam, D = V, a reference
   for what the optimum looks like.

For pairs seen at least ``--min-pair-count`` times it reports the Pearson and Spearman
correlation of the dot products with PMI - log K, and with the exact optimum for the noise
actually used (the two differ only by sentence-edge effects in the marginals), in
``<out>/table.md`` and ``<out>/results.jsonl``, and draws ``<out>/pmi_scatter.png``.
Without ``--quick``: the top 1,000 words, 20 epochs, D = 200.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from w2v_jax import config as config_lib
from w2v_jax import experiment as ex

NAME = "pmi_check"
QUICK = dict(epochs=5, dim=100, max_final_vocab=300)
FULL = dict(epochs=20, dim=200, max_final_vocab=1000)
FIXED = dict(
    sample=0.0,
    dynamic_window=False,
    ns_exponent=1.0,
    window=2,
    negative=5,
    min_count=1,
    loss="ns",
    model="sg",
)


def main(argv: list[str] | None = None) -> int:
    import w2v_jax
    from w2v_jax import corpus as corpus_lib
    from w2v_jax.sampling import noise_distribution

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ex.add_common_args(p, default_out=Path(__file__).parent / "results" / NAME)
    p.add_argument(
        "--vocab",
        type=int,
        default=None,
        help="keep the N most frequent words (default: 300 quick, 1000 full)",
    )
    p.add_argument(
        "--min-pair-count",
        type=float,
        default=50.0,
        help="pairs seen at least this often count as frequent (default: 50)",
    )
    p.add_argument("--fit-steps", type=int, default=500, help="Adam steps of the full-batch fit")
    args = p.parse_args(argv)
    args.set = [f"{k}={json.dumps(v)}" for k, v in FIXED.items()] + list(args.set)
    if args.vocab is not None:
        args.set.append(f"max_final_vocab={args.vocab}")
    cfg = ex.base_config(args, quick=QUICK, full=FULL)
    if args.seeds is not None:
        cfg = config_lib.override(cfg, seed=args.seeds)
    if cfg.model.loss != "ns":
        raise ValueError("--set loss=... : the PMI check is about negative sampling (loss=ns)")

    t0 = __import__("time").perf_counter()
    vocab = ex.vocab_for(args.corpus, cfg)
    source = corpus_lib.resolve_corpus(
        args.corpus, lowercase=cfg.data.lowercase, max_sentence_len=cfg.data.max_sentence_len
    )
    enc = corpus_lib.encode_corpus(source, vocab)
    v, k = len(vocab.words), cfg.model.negative
    cooc = ex.cooccurrence_counts(
        np.asarray(enc.ids),
        enc.sentence_starts,
        v,
        cfg.data.window,
        dynamic=cfg.data.dynamic_window,
    )
    noise = noise_distribution(vocab.counts, cfg.data.ns_exponent)
    shifted_pmi = ex.pmi_matrix(cooc) - np.log(k)
    optimum = ex.sgns_targets(cooc, noise, k)
    frequent = cooc >= args.min_pair_count

    result = w2v_jax.train(args.corpus, cfg, progress=False, vocab=vocab)
    dots_sgd = (
        result.params["center_vecs"].astype(np.float64)
        @ result.params["outside_vecs"].astype(np.float64).T
    )
    center, outside, losses = ex.fit_sgns_full_batch(
        cooc, noise, k, dim=max(v, cfg.model.dim), steps=args.fit_steps
    )
    dots_fit = center.astype(np.float64) @ outside.astype(np.float64).T

    rows = {}
    for method, dots in (
        ("w2v_jax.train (minibatch SGD)", dots_sgd),
        ("full-batch expected loss (Adam)", dots_fit),
    ):
        vs_pmi = ex.correlations(dots[frequent], shifted_pmi[frequent])
        vs_opt = ex.correlations(dots[frequent], optimum[frequent])
        rows[method] = {
            "pearson_vs_pmi_minus_logk": vs_pmi["pearson"],
            "spearman_vs_pmi_minus_logk": vs_pmi["spearman"],
            "pearson_vs_optimum": vs_opt["pearson"],
            "spearman_vs_optimum": vs_opt["spearman"],
            "mean_abs_error_vs_pmi_minus_logk": float(
                np.mean(np.abs(dots[frequent] - shifted_pmi[frequent]))
            ),
            "pairs": vs_pmi["n"],
        }
    seconds = __import__("time").perf_counter() - t0
    ex.append_jsonl(
        args.out / "results.jsonl",
        {
            "corpus": str(args.corpus),
            "config": config_lib.flat(cfg),
            "vocab_size": v,
            "min_pair_count": args.min_pair_count,
            "fit_steps": args.fit_steps,
            "fit_final_loss": float(losses[-1]),
            "epoch_loss": list(result.epoch_loss),
            "metrics": rows,
            "wall_seconds": seconds,
            "versions": ex.versions(),
        },
    )
    lines = [
        f"SGNS dot products vs PMI - log K on `{args.corpus}` (top V = {v:,} words, fixed window "
        f"{cfg.data.window}, K = {k}, unigram noise, no subsampling; w2v_jax D = {cfg.model.dim},"
        f" {cfg.train.epochs} epochs); {rows[next(iter(rows))]['pairs']:,} pairs seen >= "
        f"{args.min_pair_count:g} times; {seconds:.0f} s.",
        f"Command: `{ex.command_line('experiments/pmi_check.py', argv)}`",
        "",
        "| method | Pearson vs PMI - log K | Spearman vs PMI - log K | Pearson vs exact optimum "
        "| mean abs error |",
        "|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        lines.append(
            f"| {method} | {r['pearson_vs_pmi_minus_logk']:.3f} | "
            f"{r['spearman_vs_pmi_minus_logk']:.3f} | {r['pearson_vs_optimum']:.3f} | "
            f"{r['mean_abs_error_vs_pmi_minus_logk']:.3f} |"
        )
    ex.write_text(args.out / "table.md", "\n".join(lines) + "\n")
    ex.plot_scatter(
        [
            (
                f"{m}\nPearson {r['pearson_vs_pmi_minus_logk']:.3f}",
                shifted_pmi[frequent],
                d[frequent],
            )
            for (m, r), d in zip(rows.items(), (dots_sgd, dots_fit), strict=True)
        ],
        path=args.out / "pmi_scatter.png",
        xlabel="PMI(w, c) - log K",
        ylabel="v_w . u_c",
    )
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
