"""Full softmax vs negative sampling vs NCE vs hierarchical softmax, for skip-gram and CBOW.

    python experiments/compare_losses.py --quick

Runtime: 3.5 min on 2 shared, busy CPU cores (6 runs: the 2,912 most frequent words of
wiki-sample, 3 epochs, D = 50, 1 seed; the skip-gram full softmax alone takes 2.5 min).
Expected (1 seed, measured with jax 0.10.2; WordSim-353 / SimLex-999 Spearman, words/s):
skip-gram softmax 0.35 / 0.13 at ~10k words/s, SGNS 0.28 / 0.11 at ~120k, HS 0.40 / 0.15 at
~80k; CBOW softmax 0.25 / 0.02 at ~130k, SGNS 0.24 / 0.07 at ~200k, HS 0.35 / 0.15 at ~340k.
NCE (Mikolov et al. 2013b, Table 1 compares it with SGNS) was added later: run ``--losses nce``
to add its rows to an existing results folder (its numbers are in BENCHMARKS.md). So at this
small V the full softmax is 8-12x slower than SGNS for skip-gram (measured while another job
shared the cores) and no better than HS. Read quality gaps under ~0.05 as seed noise (the
sweep's std over seeds is 0.01-0.03), and note that 73% of the WordSim pairs, 84% of the SimLex
pairs and 96% of the analogies are out of vocabulary at V = 2,912 (``*_oov`` fields).

Every variant sees the same corpus, vocabulary, D, epochs, window and seed, with word2vec.c's
learning rates (0.025 skip-gram, 0.05 CBOW). The full softmax is V-wide per example ([B, V]
logits, a dense [V, D] gradient), so it runs only where V <= w2v_jax.config.MAX_SOFTMAX_VOCAB
(50,000); otherwise its rows say "skipped" in the table. It is also by far the slowest on CPU,
which is why ``--quick`` keeps the most frequent words (``max_final_vocab=3000``, so
WordSim/SimLex cover fewer pairs). Without ``--quick``: the whole wiki-sample vocabulary
(V = 9,002), 5 epochs, D = 100, 3 seeds; the skip-gram softmax runs take hours on 2 cores.

Outputs in ``<out>``: ``results.jsonl`` (one line per run, resumable), ``table.md`` (mean ± std)
and ``losses.png`` (bars per loss, one colour per model, one panel per metric).
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

from w2v_jax import config as config_lib
from w2v_jax import experiment as ex

NAME = "compare_losses"
# The pure-JAX step for every row: the default (auto) would run SGNS and HS on the fused per-pair
# kernel and the softmax and NCE on the batch-synchronous step, so the table would compare update
# rules along with losses. ``--set update=auto`` gives the faster, mixed table.
QUICK = dict(epochs=3, dim=50, max_final_vocab=3000, update="sparse")
FULL = dict(epochs=5, dim=100, update="sparse")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ex.add_common_args(p, default_out=Path(__file__).parent / "results" / NAME)
    p.add_argument(
        "--models",
        nargs="+",
        default=list(config_lib.MODELS),
        choices=config_lib.MODELS,
        help="architectures (default: sg cbow)",
    )
    p.add_argument(
        "--losses",
        nargs="+",
        default=["softmax", "ns", "nce", "hs"],
        choices=config_lib.LOSSES,
        help="losses (default: softmax ns nce hs)",
    )
    args = p.parse_args(argv)
    base = ex.base_config(args, quick=QUICK, full=FULL)
    seeds = ex.seeds_of(args, quick=1, full=3)
    vocab_cache: dict = {}
    v = len(ex.vocab_for(args.corpus, base, vocab_cache).words)
    skip_softmax = v > config_lib.MAX_SOFTMAX_VOCAB
    specs, notes = [], {}
    for model, loss in itertools.product(args.models, args.losses):
        if loss == "softmax" and skip_softmax:
            notes[(model, loss)] = (
                f"skipped: V = {v:,} > MAX_SOFTMAX_VOCAB = {config_lib.MAX_SOFTMAX_VOCAB:,}"
            )
            continue
        for s in seeds:
            cfg = config_lib.override(base, model=model, loss=loss, seed=s)
            specs.append(ex.RunSpec(labels={"model": model, "loss": loss}, config=cfg))
    rows = ex.run_grid(
        specs,
        corpus=args.corpus,
        results_path=args.out / "results.jsonl",
        eval_kwargs=ex.eval_kwargs_of(args),
        log=print,
        vocab_cache=vocab_cache,
    )
    metrics = ex.metric_columns(rows)
    cells = ex.aggregate(rows, by=("model", "loss"), metrics=metrics)
    for model, loss in notes:  # keep the grid's order, with the skipped cells as empty rows
        cells.append(
            {
                "labels": {"model": model, "loss": loss},
                "n": 0,
                "mean": dict.fromkeys(metrics, math.nan),
                "std": dict.fromkeys(metrics, math.nan),
            }
        )
    order = list(itertools.product(args.models, args.losses))
    cells.sort(key=lambda c: order.index((c["labels"]["model"], c["labels"]["loss"])))
    for c in cells:
        if c["labels"]["loss"] == "softmax" and (c["labels"]["model"], "softmax") not in notes:
            notes[(c["labels"]["model"], "softmax")] = (
                f"full softmax: V = {v:,} <= MAX_SOFTMAX_VOCAB = {config_lib.MAX_SOFTMAX_VOCAB:,}"
            )
    c = base
    header = (
        f"Losses on `{args.corpus}` (V = {v:,}): D = {c.model.dim}, {c.train.epochs} epoch(s), "
        f"window {c.data.window}, K = {c.model.negative} for ns and nce, {len(seeds)} seed(s); "
        f"mean ± std over seeds.\n"
        f"Command: `{ex.command_line('experiments/compare_losses.py', argv)}`\n\n"
    )
    ex.write_text(args.out / "table.md", header + ex.markdown_table(cells, metrics, notes=notes))
    ran = [c for c in cells if c["n"] > 0]
    if ran:
        ex.plot_bars(
            ran,
            x="loss",
            hue="model",
            path=args.out / "losses.png",
            metrics=[*ex.metric_columns(rows, speed=False), "words_per_sec"],
            title=f"softmax vs SGNS vs NCE vs HS ({args.corpus}, V = {v:,})",
        )
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
