"""Quality and training time against the span of the shuffle (``chunk_tokens``).

    python bench/chunk_quality.py --corpus wiki-sample --variant sg-ns --seeds 1,2,3 --log2 16,20
    python bench/chunk_quality.py --corpus ~/.cache/w2v_jax/bench/docstrings.txt --seeds 1,2

Each chunk's windows are shuffled together and chunks come in corpus order, so ``chunk_tokens``
is how far from corpus order (word2vec.c's and gensim's) the training order strays. One JSON row
per (chunk size, seed): training seconds and WordSim-353 / SimLex-999 / analogy, measured as
``bench/vs_gensim.py`` measures them. The default command (``--update auto``) otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vs_gensim import VARIANTS, evaluate

from w2v_jax import trainer
from w2v_jax.config import Config, override


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="wiki-sample")
    ap.add_argument("--variant", default="sg-ns", choices=sorted(VARIANTS))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--log2", default="16,20", help="chunk sizes as powers of two, e.g. 16,18,20")
    a = ap.parse_args(argv)
    model, loss = VARIANTS[a.variant]
    corpus = str(Path(a.corpus).expanduser()) if "/" in a.corpus else a.corpus
    for k in (int(x) for x in a.log2.split(",")):
        for seed in (int(x) for x in a.seeds.split(",")):
            cfg = override(Config(), chunk_tokens=1 << k, seed=seed, model=model, loss=loss)
            result = trainer.train(corpus, cfg, progress=False)
            quality = evaluate(result.vectors(), True)
            row = {"corpus": Path(corpus).name, "variant": a.variant, "log2_chunk": k}
            row.update(seed=seed, train_s=round(result.train_seconds, 2))
            row.update({name: round(v, 4) for name, v in quality.items()})
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
