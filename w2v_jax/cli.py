"""The ``w2v-jax`` command: ``train`` and ``eval``.

``w2v-jax train`` takes the flags word2vec.c and gensim users know (``--model --loss --dim
--window --negative --min-count --sample --epochs --alpha --min-alpha``) and writes a run folder:

    OUT/vectors.bin (or .txt)   word2vec format, loadable by gensim's KeyedVectors
    OUT/vocab.txt               "word count" per line, in row order
    OUT/checkpoint.w2v          everything --resume needs (atomic, checksummed)
    OUT/config.json, OUT/metrics.jsonl

Errors in the input (a missing corpus, window < 1, an unknown loss, ...) print one line naming
the flag and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from w2v_jax import config as config_lib

NEIGHBOUR_PROBES = ("france", "king", "war", "music", "water", "computer", "city", "two")


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help="train word vectors", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    d, m, t = config_lib.DataConfig(), config_lib.ModelConfig(), config_lib.TrainConfig()
    p.add_argument(
        "--corpus",
        default="wiki-sample",
        help="text file, folder, or a named corpus: wiki-sample, lee, head500, text8",
    )
    p.add_argument("--out", default="runs/default", help="run folder")
    p.add_argument("--format", choices=("binary", "text"), default="binary")
    p.add_argument(
        "--vectors",
        choices=("in", "out", "sum"),
        default="in",
        help="input vectors, output vectors or their sum (w + c)",
    )
    p.add_argument("--model", choices=config_lib.MODELS, default=m.model)
    p.add_argument("--loss", choices=config_lib.LOSSES, default=m.loss)
    p.add_argument("--dim", type=int, default=m.dim)
    p.add_argument("--window", type=int, default=d.window)
    p.add_argument("--fixed-window", action="store_true", help="no dynamic window shrinking")
    p.add_argument("--negative", type=int, default=m.negative)
    p.add_argument("--ns-exponent", type=float, default=d.ns_exponent)
    p.add_argument("--min-count", type=int, default=d.min_count)
    p.add_argument("--max-vocab-size", type=int, default=None)
    p.add_argument("--max-final-vocab", type=int, default=None)
    p.add_argument("--sample", type=float, default=d.sample)
    p.add_argument("--subsample-rule", choices=config_lib.SUBSAMPLE_RULES, default=d.subsample_rule)
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--cbow-sum", action="store_true", help="CBOW sums context vectors (no mean)")
    p.add_argument("--cbow-grad", choices=config_lib.CBOW_GRADS, default=m.cbow_grad)
    p.add_argument("--epochs", type=int, default=t.epochs)
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="starting learning rate (default 0.025 sg, 0.05 cbow)",
    )
    p.add_argument("--min-alpha", type=float, default=t.min_alpha)
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--steps-per-call", type=int, default=t.steps_per_call)
    p.add_argument("--optimizer", choices=config_lib.OPTIMIZERS, default=t.optimizer)
    p.add_argument("--update", choices=config_lib.UPDATE_MODES, default=t.update)
    p.add_argument("--grad", choices=config_lib.GRAD_MODES, default=t.grad)
    p.add_argument(
        "--dup-cap",
        type=float,
        default=t.dup_cap,
        help="rows named more than this many times per batch step by cap/n x the sum",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=t.threads,
        help="fused-kernel threads (--update fused); 0: all cores",
    )
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=t.checkpoint_every_s,
        help="seconds between checkpoints (0: only at the end)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.w2v")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--neighbours",
        default=",".join(NEIGHBOUR_PROBES),
        help="comma-separated words whose nearest neighbours are printed at the end",
    )
    return p


def config_from_args(a: argparse.Namespace) -> config_lib.Config:
    """Maps parsed ``train`` flags onto a validated :class:`~w2v_jax.config.Config`."""
    cfg = config_lib.Config(
        data=config_lib.DataConfig(
            min_count=a.min_count,
            max_vocab_size=a.max_vocab_size,
            max_final_vocab=a.max_final_vocab,
            sample=a.sample,
            subsample_rule=a.subsample_rule,
            window=a.window,
            dynamic_window=not a.fixed_window,
            ns_exponent=a.ns_exponent,
            lowercase=a.lowercase,
        ),
        model=config_lib.ModelConfig(
            model=a.model,
            loss=a.loss,
            dim=a.dim,
            negative=a.negative,
            cbow_mean=not a.cbow_sum,
            cbow_grad=a.cbow_grad,
        ),
        train=config_lib.TrainConfig(
            epochs=a.epochs,
            alpha=a.alpha,
            min_alpha=a.min_alpha,
            optimizer=a.optimizer,
            batch_size=a.batch_size,
            steps_per_call=a.steps_per_call,
            update=a.update,
            grad=a.grad,
            dup_cap=a.dup_cap,
            threads=a.threads,
            seed=a.seed,
            checkpoint_every_s=a.checkpoint_every,
        ),
    )
    return config_lib.validate(cfg)


def run_train(a: argparse.Namespace) -> int:
    from w2v_jax.train import train
    from w2v_jax.vocab import save_vocab

    cfg = config_from_args(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    result = train(
        a.corpus, cfg, out=out, resume=a.resume, progress=not a.quiet, callbacks=[rows.append]
    )
    vectors = result.vectors(a.vectors)
    suffix = "bin" if a.format == "binary" else "txt"
    vectors.save_word2vec_format(out / f"vectors.{suffix}", binary=a.format == "binary")
    save_vocab(result.vocab, out / "vocab.txt")
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    with open(out / "metrics.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(
        f"trained V={len(result.vocab.words)} D={cfg.model.dim} in {result.train_seconds:.1f}s "
        f"({result.words_per_sec / 1e3:,.0f}k words/s); epoch losses "
        + ", ".join(f"{x:.4f}" for x in result.epoch_loss)
    )
    print(f"wrote {out / f'vectors.{suffix}'}")
    probes = [w for w in a.neighbours.split(",") if w and w in vectors]
    for w in probes[:6]:
        near = ", ".join(f"{n} {s:.2f}" for n, s in vectors.most_similar(w, topn=6))
        print(f"  {w:>10}: {near}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="w2v-jax", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    sub.add_parser("eval", help="evaluate vectors (see w2v-jax eval --help)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        from w2v_jax.evaluate import eval_main

        return _guard(lambda: eval_main(argv[1:]))
    args = parser.parse_args(argv)
    return _guard(lambda: run_train(args))


def _guard(fn) -> int:
    """Runs ``fn``; bad input becomes one line on stderr and exit status 2."""
    from w2v_jax.checkpoint import CheckpointError

    try:
        return fn()
    except (ValueError, FileNotFoundError, KeyError, CheckpointError) as e:
        msg = str(e) if isinstance(e, FileNotFoundError) else (e.args[0] if e.args else str(e))
        print(f"w2v-jax: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
