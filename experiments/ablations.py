"""Ablations of the knobs Levy, Goldberg and Dagan (2015) found to matter, one at a time.

    python experiments/ablations.py --quick

Runtime: 4 min on 2 shared, busy CPU cores (7 trainings: 3 epochs, D = 50, 1 seed,
wiki-sample, V = 9,002).
Expected (1 seed, measured with jax 0.10.2; WordSim-353 / SimLex-999 Spearman): baseline
0.158 / 0.078. Subsampling off: about the same (0.160 / 0.058) at 1.7x the time. Fixed window:
0.249 / 0.132 (more context per center within the same epochs). Noise exponent 0: worse
(0.115 / 0.037); 1: same as 0.75. w + c: 0.254 / 0.152 from the same run. Adagrad (0.1) and
Adam (0.01): 0.406 / 0.237 and 0.423 / 0.268, the largest effect in this short budget, at
~1/3 of SGD's words/s. Analogy accuracy is 0.3-3% everywhere (81% of the questions are out of
vocabulary on this corpus).

Every variant changes one knob of the baseline (skip-gram SGNS, word2vec.c defaults: sample
1e-3, dynamic window 5, K = 5, noise exponent 0.75, input vectors, SGD with linear decay):

| knob | settings | config |
|---|---|---|
| subsampling | on (t = 1e-3) / off | ``sample=0`` |
| window | dynamic / fixed | ``dynamic_window=False`` |
| noise exponent | 0 (uniform) / 0.75 / 1 (unigram) | ``ns_exponent`` |
| vectors | w / w + c | ``TrainResult.vectors("sum")`` of the same run |
| optimizer | SGD / row-sparse Adagrad / row-sparse Adam | ``optimizer=...``, own ``alpha`` |

Adagrad and Adam scale each coordinate's step by its gradient history, so word2vec's
alpha = 0.025 is not their scale: they start at ``--adagrad-alpha 0.1`` and ``--adam-alpha
0.01`` (both decayed linearly like SGD), chosen once by rule of thumb (Adagrad's usual 0.1;
10x Adam's 1e-3 default, since each row is updated only when it is in a batch) and not tuned
further. The baseline is trained once and shown in every group. Without ``--quick``: 5 epochs,
D = 100, 3 seeds.

Outputs in ``<out>``: ``results.jsonl`` (resumable), ``table.md`` (mean ± std) and one bar
chart per knob, ``ablation_<knob>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from w2v_jax import config as config_lib
from w2v_jax import experiment as ex

NAME = "ablations"
# The pure-JAX step for every row: the default (auto) would run the SGD rows on the fused kernel
# and the Adagrad and Adam rows on the JAX step, so the optimizer group would compare update rules
# too. ``--set update=auto`` runs the SGD rows faster.
QUICK = dict(epochs=3, dim=50, update="sparse")
FULL = dict(epochs=5, dim=100, update="sparse")
KNOBS = ("subsampling", "window", "noise_exponent", "vectors", "optimizer")


def variants(
    sample: float, adagrad_alpha: float, adam_alpha: float
) -> list[tuple[str, str, dict, str]]:
    """``(knob, setting, config overrides, vector kind)``; ``{}`` and ``"in"`` is the baseline."""
    return [
        ("subsampling", f"on (t={sample:g})", {}, "in"),
        ("subsampling", "off", {"sample": 0.0}, "in"),
        ("window", "dynamic", {}, "in"),
        ("window", "fixed", {"dynamic_window": False}, "in"),
        ("noise_exponent", "0", {"ns_exponent": 0.0}, "in"),
        ("noise_exponent", "0.75", {}, "in"),
        ("noise_exponent", "1", {"ns_exponent": 1.0}, "in"),
        ("vectors", "w", {}, "in"),
        ("vectors", "w+c", {}, "sum"),
        ("optimizer", "sgd", {}, "in"),
        (
            "optimizer",
            f"adagrad (alpha={adagrad_alpha:g})",
            {"optimizer": "adagrad", "alpha": adagrad_alpha},
            "in",
        ),
        (
            "optimizer",
            f"adam (alpha={adam_alpha:g})",
            {"optimizer": "adam", "alpha": adam_alpha},
            "in",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ex.add_common_args(p, default_out=Path(__file__).parent / "results" / NAME)
    p.add_argument(
        "--knobs",
        nargs="+",
        default=list(KNOBS),
        choices=KNOBS,
        help="which knobs to ablate (default: all)",
    )
    p.add_argument("--adagrad-alpha", type=float, default=0.1, help="Adagrad's starting lr")
    p.add_argument("--adam-alpha", type=float, default=0.01, help="Adam's starting lr")
    args = p.parse_args(argv)
    base = ex.base_config(args, quick=QUICK, full=FULL)
    seeds = ex.seeds_of(args, quick=1, full=3)
    chosen = [
        v
        for v in variants(base.data.sample, args.adagrad_alpha, args.adam_alpha)
        if v[0] in args.knobs
    ]
    # One training per distinct config: the "w" and "w+c" rows come from the baseline run.
    specs = []
    for s in seeds:
        for knob, setting, fields, which in chosen:
            cfg = config_lib.override(base, seed=s, **fields)
            vectors = ("in", "sum") if not fields else (which,)
            specs.append(
                ex.RunSpec(
                    labels={"knob": knob, "setting": setting, "_which": which},
                    config=cfg,
                    vectors=vectors,
                )
            )
    rows = ex.run_grid(
        specs,
        corpus=args.corpus,
        results_path=args.out / "results.jsonl",
        eval_kwargs=ex.eval_kwargs_of(args),
        log=print,
    )
    rows = [r for r in rows if r["vectors"] == r["labels"]["_which"]]
    metrics = ex.metric_columns(rows)
    cells = ex.aggregate(rows, by=("knob", "setting"), metrics=metrics)
    c = base
    header = (
        f"Ablations on `{args.corpus}` (V = {rows[0]['vocab_size']:,}): skip-gram SGNS, "
        f"D = {c.model.dim}, {c.train.epochs} epoch(s), window {c.data.window}, "
        f"K = {c.model.negative}, {len(seeds)} seed(s); each row changes one knob of the "
        f"baseline (subsampling on, dynamic window, exponent 0.75, w, sgd: one shared run); "
        f"mean ± std over seeds.\n"
        f"Command: `{ex.command_line('experiments/ablations.py', argv)}`\n\n"
    )
    ex.write_text(args.out / "table.md", header + ex.markdown_table(cells, metrics))
    for knob in args.knobs:
        ex.plot_bars(
            [cl for cl in cells if cl["labels"]["knob"] == knob],
            x="setting",
            metrics=ex.metric_columns(rows, speed=False),
            path=args.out / f"ablation_{knob}.png",
            title=f"{knob} ({args.corpus})",
        )
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
