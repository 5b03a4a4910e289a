"""w2v_jax against gensim's Word2Vec on the same corpus, same hyperparameters, same process tree.

    python bench/vs_gensim.py                       # default corpus, sg-ns, 3 seeds
    python bench/vs_gensim.py --variants sg-ns,sg-hs,cbow-ns --repeats 3
    python bench/vs_gensim.py --corpus zipf:5000000 --no-eval   # pure speed, synthetic Zipf text
    python bench/vs_gensim.py --corpus zipf:5000000:1000000 --min-count 1 --no-eval  # V ~ 1e6
    python bench/vs_gensim.py --corpus /data/text8 --epochs 1

Both sides share one vocabulary pass (ours; gensim builds its own from the same sentences with
the same min_count) and are timed on training alone: gensim's ``model.train`` call, our training
loop (``TrainResult.train_seconds``, which includes XLA compilation; the steady-state rate without
it is printed too). words/s = raw corpus tokens x epochs / seconds, as both tools count them.
Quality is measured with the same evaluation code for both (``w2v_jax.evaluate``): WordSim-353
and SimLex-999 Spearman, and 3CosAdd accuracy on the Google analogies restricted to the 30k most
frequent words. Each row is the median over repeats (different seeds) with min..max spread.

Expected on a 2-core CPU (see BENCHMARKS.md for the measured figures and the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = {  # name -> (model, loss)
    "sg-ns": ("sg", "ns"),
    "sg-hs": ("sg", "hs"),
    "cbow-ns": ("cbow", "ns"),
    "cbow-hs": ("cbow", "hs"),
    "sg-softmax": ("sg", "softmax"),
    "cbow-softmax": ("cbow", "softmax"),
}


def zipf_corpus(path: Path, tokens: int, vocab: int = 50_000, seed: int = 0) -> Path:
    """Writes ``tokens`` Zipf(1.0)-distributed words over ``vocab`` types, 1000 per line."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    ids = rng.choice(vocab, size=tokens, p=p)
    words = np.array([f"w{i}" for i in range(vocab)])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for s in range(0, tokens, 1000):
            f.write(" ".join(words[ids[s : s + 1000]]) + "\n")
    os.replace(tmp, path)
    return path


def evaluate(vectors, do_eval: bool) -> dict[str, float]:
    if not do_eval:
        return {}
    from w2v_jax.evaluate import evaluate_analogies, evaluate_word_pairs

    ws = evaluate_word_pairs(vectors, "wordsim353.tsv")
    sl = evaluate_word_pairs(vectors, "simlex999.txt")
    an = evaluate_analogies(vectors, "questions-words.txt", restrict_vocab=30_000)
    return {"wordsim353": ws.spearman, "simlex999": sl.spearman, "analogy": an.total_accuracy}


def run_gensim(sentences, raw_words, model, loss, args, seed):
    from gensim.models import Word2Vec

    from w2v_jax.vectors import Vectors

    w2v = Word2Vec(
        vector_size=args.dim,
        window=args.window,
        min_count=args.min_count,
        sample=args.sample,
        sg=int(model == "sg"),
        hs=int(loss == "hs"),
        negative=args.negative if loss == "ns" else 0,
        workers=args.workers,
        seed=seed,
        epochs=args.epochs,
        alpha=0.025 if model == "sg" else 0.05,
        min_alpha=1e-4,
    )
    w2v.build_vocab(sentences)
    t0 = time.perf_counter()
    w2v.train(sentences, total_examples=w2v.corpus_count, epochs=args.epochs)
    seconds = time.perf_counter() - t0
    kv = w2v.wv
    vecs = Vectors(tuple(kv.index_to_key), np.asarray(kv.vectors, np.float32))
    return {"seconds": seconds, "words_per_sec": raw_words * args.epochs / seconds, "vectors": vecs}


def run_ours(source, vocab, model, loss, args, seed):
    import w2v_jax
    from w2v_jax.config import override

    cfg = override(
        w2v_jax.Config(),
        model=model,
        loss=loss,
        dim=args.dim,
        window=args.window,
        negative=args.negative,
        min_count=args.min_count,
        sample=args.sample,
        epochs=args.epochs,
        seed=seed,
        batch_size=args.batch_size,
        update=args.update,
        log_every_s=1e9,
        checkpoint_every_s=0.0,
        **({"steps_per_call": args.steps_per_call} if args.steps_per_call else {}),
    )
    res = w2v_jax.train(source, cfg, vocab=vocab, progress=False)
    hist = [h for h in res.history if h["elapsed"] > 0]
    return {
        "seconds": res.train_seconds,
        "words_per_sec": res.words_per_sec,
        "vectors": res.vectors("in"),
        "history": hist,
    }


def summarize(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    fmt = (lambda x: f"{x / 1e3:,.0f}k") if med > 100 else (lambda x: f"{x:.3f}")
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}..{fmt(max(values))})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--corpus", default="wiki-sample", help="name, path, or zipf:TOKENS[:TYPES] (50k types)"
    )
    p.add_argument("--variants", default="sg-ns")
    p.add_argument("--repeats", type=int, default=3, help="seeds per system and variant")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps-per-call", type=int, default=0, help="0: the library default")
    p.add_argument("--update", default="sparse", choices=("sparse", "fused", "dense"))
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--json", help="append one JSON line per run to this file")
    args = p.parse_args(argv)

    from w2v_jax import corpus as corpus_lib
    from w2v_jax.config import DataConfig
    from w2v_jax.vocab import build_vocab

    name = args.corpus
    if name.startswith("zipf:"):
        tokens, types = (int(float(x)) for x in (name.split(":") + ["50000"])[1:3])
        cache = corpus_lib.cache_root() / "bench"
        cache.mkdir(parents=True, exist_ok=True)
        stem = f"zipf_{tokens}" if types == 50_000 else f"zipf_{tokens}_{types}"
        name = str(zipf_corpus(cache / f"{stem}.txt", tokens, types))
    source = corpus_lib.resolve_corpus(name)
    sentences = list(source.sentences())
    raw_words = sum(len(s) for s in sentences)
    vocab = build_vocab(sentences, DataConfig(min_count=args.min_count))
    print(
        f"corpus {args.corpus}: {raw_words:,} tokens, {len(sentences):,} sentences, "
        f"V={len(vocab):,} at min_count={args.min_count}; {os.cpu_count()} cores; "
        f"gensim workers={args.workers}",
        flush=True,
    )

    rows = []
    for variant in args.variants.split(","):
        model, loss = VARIANTS[variant]
        per = {"gensim": [], "w2v_jax": []}
        for r in range(args.repeats):
            seed = r + 1
            for system in ("gensim", "w2v_jax"):
                if system == "gensim":
                    out = run_gensim(sentences, raw_words, model, loss, args, seed)
                else:
                    out = run_ours(source, vocab, model, loss, args, seed)
                out.update(evaluate(out.pop("vectors"), not args.no_eval))
                out.pop("history", None)
                per[system].append(out)
                print(
                    f"  {variant} {system:8s} seed {seed}: "
                    + ", ".join(
                        f"{k} {v:,.3f}" if v < 100 else f"{k} {v:,.0f}" for k, v in out.items()
                    ),
                    flush=True,
                )
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(
                            json.dumps(
                                {
                                    "variant": variant,
                                    "system": system,
                                    "seed": seed,
                                    "corpus": args.corpus,
                                    **vars(args),
                                    **out,
                                }
                            )
                            + "\n"
                        )
        rows.append((variant, per))

    keys = ["words_per_sec", "seconds"] + (
        [] if args.no_eval else ["wordsim353", "simlex999", "analogy"]
    )
    print()
    print("| variant | system | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 2))
    for variant, per in rows:
        for system in ("gensim", "w2v_jax"):
            cells = [summarize([o[k] for o in per[system]]) for k in keys]
            print(f"| {variant} | {system} | " + " | ".join(cells) + " |")
        ratio = statistics.median(o["words_per_sec"] for o in per["w2v_jax"]) / statistics.median(
            o["words_per_sec"] for o in per["gensim"]
        )
        print(f"| {variant} | ratio w2v_jax/gensim | {ratio:.2f}x |" + " |" * (len(keys) - 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
