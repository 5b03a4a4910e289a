"""Training words/s of the six variants (sg/cbow x ns/hs/softmax) on one corpus.

    python bench/variants.py                         # default corpus, sparse update, 1 epoch
    python bench/variants.py --update fused          # the C++ kernels (ns and hs only)

Words/s = raw corpus words processed / wall time of the training loop (XLA compilation
included, vocabulary and encoding excluded). The full softmax is V-wide per pair, so it runs
``--softmax-steps`` steps only and its rate is extrapolated from those words; the table says so.
"""

from __future__ import annotations

import argparse
import itertools

import w2v_jax
from w2v_jax import corpus as corpus_lib
from w2v_jax.config import override
from w2v_jax.vocab import build_vocab


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="wiki-sample")
    ap.add_argument("--update", default="sparse", choices=("sparse", "fused"))
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--softmax-steps", type=int, default=24)
    a = ap.parse_args(argv)
    source = corpus_lib.resolve_corpus(a.corpus)
    base = override(
        w2v_jax.Config(), epochs=1, batch_size=a.batch_size, log_every_s=1e9, checkpoint_every_s=0.0
    )
    vocab = build_vocab(source.sentences(), base.data)
    print(f"{a.corpus}: V={len(vocab):,}, 1 epoch, B={a.batch_size}, update={a.update}")
    print("| model | loss | words/s | final loss | note |")
    print("| --- | --- | --- | --- | --- |")
    for model, loss in itertools.product(("sg", "cbow"), ("ns", "hs", "softmax")):
        if a.update == "fused" and loss == "softmax":
            continue
        cfg = override(base, model=model, loss=loss, update=a.update)
        steps = a.softmax_steps if loss == "softmax" else None
        r = w2v_jax.train(source, cfg, vocab=vocab, progress=False, max_steps=steps)
        note = f"first {steps} steps only" if steps else ""
        print(
            f"| {model} | {loss} | {r.words_per_sec / 1e3:,.0f}k | {r.epoch_loss[-1]:.3f} "
            f"| {note} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
