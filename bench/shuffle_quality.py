"""Quality and training time against the span of the shuffle (``shuffle_tokens``, ``chunk_tokens``).

    python bench/shuffle_quality.py --corpus wiki-sample --variant sg-ns --seeds 1,2,3 --span 0,16
    python bench/shuffle_quality.py --corpus ~/.cache/w2v_jax/bench/docstrings.txt --seeds 1,2
    python bench/shuffle_quality.py --chunk 16,20 --span 0     # whole chunks of 2^16, 2^20 tokens

Examples are shuffled within spans of ``shuffle_tokens`` corpus tokens (``--span``, powers of
two; 0: each whole chunk of ``chunk_tokens``, ``--chunk``), spans in corpus order, so the span is
how far the training order strays from corpus order (word2vec.c's and gensim's). One JSON row per
(chunk, span, seed): training seconds and WordSim-353 / SimLex-999 / analogy, measured as
``bench/vs_gensim.py`` measures them. The default command (``--update auto``) otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vs_gensim import VARIANTS, evaluate

from w2v_jax import trainer
from w2v_jax.config import Config, override


def _powers(text: str) -> list[int]:
    """``"0,16"`` -> [0, 65536]: 0 stays 0, any other k is 2^k."""
    return [0 if int(k) == 0 else 1 << int(k) for k in text.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="wiki-sample")
    ap.add_argument("--variant", default="sg-ns", choices=sorted(VARIANTS))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--span", default="0,16", help="shuffle_tokens as log2 (0: whole chunks)")
    ap.add_argument("--chunk", default="20", help="chunk_tokens as log2")
    a = ap.parse_args(argv)
    model, loss = VARIANTS[a.variant]
    corpus = str(Path(a.corpus).expanduser()) if "/" in a.corpus else a.corpus
    for chunk in _powers(a.chunk):
        for span in _powers(a.span):
            for seed in (int(x) for x in a.seeds.split(",")):
                cfg = override(Config(), chunk_tokens=chunk, shuffle_tokens=span, seed=seed)
                cfg = override(cfg, model=model, loss=loss)
                result = trainer.train(corpus, cfg, progress=False)
                quality = evaluate(result.vectors(), True)
                row = {"corpus": Path(corpus).name, "variant": a.variant}
                row.update(chunk_tokens=chunk, shuffle_tokens=span, seed=seed)
                row.update(train_s=round(result.train_seconds, 2))
                row.update({name: round(v, 4) for name, v in quality.items()})
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
