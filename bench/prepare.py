"""Counting plus encoding at scale: the old two-pass code, prepare_corpus, and gensim's scan.

Generates (once, into ``--data-dir``, not the repo) a deterministic Zipf corpus: ``--tokens``
tokens drawn from ``--words`` distinct ranks with P(rank r) ~ (r + 2.7)^-zipf, each rank spelled
as a unique lowercase word (bijective base 26: frequent words are short), lines of 1..40 tokens.
At 50M tokens that is V = 836k words at min_count 5 among about 5.6M distinct ones.

Each kind then runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own; kinds are
interleaved within each repeat and the medians of ``--repeats`` are compared in one table:

* ``old``: ``build_vocab(source.sentences())`` + ``encode_corpus``, as of ``--old-rev`` (the
  code before the one-pass reader, loaded from git into temp modules), fresh cache folder.
* ``new``: ``prepare_corpus(source, cfg)`` (one pass), fresh cache folder.
* ``gensim-file`` / ``gensim-iter``: ``Word2Vec(workers=2).scan_vocab(corpus_file=...)`` /
  ``scan_vocab(corpus_iterable=LineSentence(...))`` then ``prepare_vocab()`` (min_count, sorting;
  no weights are allocated). gensim's vocabulary scan is single-threaded either way.

The old and new children print a hash of the vocabulary and ids; the table says whether they
are equal. Command and expected output (cpu2-intel, 50M tokens: about 10 minutes, mostly the old
code and gensim)::

    python bench/prepare.py --tokens 50e6 --repeats 3
    python bench/prepare.py --tokens 10e6 --repeats 3   # linear in size: compare per-token cost

Numbers and the machine that gave them are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OLD_REV = "7565610^"  # the commit before prepare_corpus
KINDS = ("old", "new", "gensim-file", "gensim-iter")


# ----------------------------------------------------------------------------- the corpus


def _word_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, 5+] uint8 letters (bijective base 26 of rank 1..n, left-aligned) and [n] lengths."""
    x = np.arange(1, n + 1, dtype=np.int64)
    lengths = np.zeros(n, np.int64)
    digits = []
    while (x > 0).any():
        alive = x > 0
        digits.append(((x - 1) % 26, alive))
        lengths += alive
        x = np.where(alive, (x - 1) // 26, 0)
    table = np.zeros((n, len(digits)), np.uint8)
    rows = np.arange(n)
    for k, (d, alive) in enumerate(digits):  # digit k (least significant first) sits at len-1-k
        table[rows[alive], lengths[alive] - 1 - k] = d[alive] + ord("a")
    return table, lengths


def generate(path: Path, tokens: int, words: int, zipf: float, seed: int) -> None:
    """Writes the Zipf corpus (see the module docstring) to ``path``, 2M tokens at a time."""
    rng = np.random.default_rng(seed)
    table, lengths = _word_table(words)
    cdf = np.cumsum((np.arange(1, words + 1) + 2.7) ** -zipf)
    cdf /= cdf[-1]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        done = 0
        while done < tokens:
            n = min(2_000_000, tokens - done)
            ranks = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), words - 1)
            ends = np.cumsum(rng.integers(1, 41, size=n // 10 + 2))  # line lengths 1..40
            is_end = np.zeros(n, bool)
            is_end[ends[ends <= n] - 1] = True
            is_end[-1] = True
            size = lengths[ranks] + 1  # the word and a separator
            first = np.cumsum(size) - size
            token = np.repeat(np.arange(n), size)
            pos = np.arange(int(size.sum())) - first[token]
            out = table[ranks[token], np.minimum(pos, table.shape[1] - 1)]
            out[pos == size[token] - 1] = ord(" ")
            out[first[is_end] + size[is_end] - 1] = ord("\n")
            f.write(out.tobytes())
            done += n
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- children


def _load_old(rev: str):
    """corpus.py and vocab.py as of ``rev``, as temp modules (old corpus -> old vocab)."""
    root = Path(__file__).resolve().parent.parent
    mods = {}
    folder = Path(tempfile.mkdtemp(prefix="w2v_old_"))
    for name in ("vocab", "corpus"):
        src = subprocess.run(
            ["git", "-C", str(root), "show", f"{rev}:w2v_jax/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (folder / f"old_{name}.py").write_text(src)
        spec = importlib.util.spec_from_file_location(f"old_{name}", folder / f"old_{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{name}"] = mods[name]  # dataclasses look their module up there
        spec.loader.exec_module(mods[name])
    return mods["vocab"], mods["corpus"]


def _digest(vocab, enc) -> str:
    h = hashlib.sha256()
    h.update("\n".join(vocab.words).encode())
    h.update(np.asarray(vocab.counts, "<i8").tobytes())
    h.update(str(vocab.total_words).encode())
    for a in (enc.ids, enc.sentence_starts, enc.raw_starts):
        h.update(np.asarray(a).tobytes())
    return h.hexdigest()[:16]


def child(args: argparse.Namespace) -> None:
    """Runs one kind and prints one JSON line: seconds, peak RSS, RSS after imports, V."""
    from w2v_jax.config import DataConfig

    cfg = dataclasses.replace(DataConfig(), min_count=args.min_count)
    kind = args.child
    if kind.startswith("gensim"):
        from gensim.models import Word2Vec
        from gensim.models.word2vec import LineSentence
    else:
        from w2v_jax import corpus

        source = corpus.resolve_corpus(args.corpus)
        if kind == "old":
            old_vocab, old_corpus = _load_old(args.old_rev)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    digest = ""
    scan = float("nan")
    with tempfile.TemporaryDirectory(dir=args.data_dir) as cache:
        t = time.perf_counter()
        if kind == "new":

            def progress(p) -> None:
                nonlocal scan
                if p.done:  # the pass over the text ends; counting, choosing, writing follow
                    scan = time.perf_counter() - t

            vocab, enc = corpus.prepare_corpus(source, cfg, cache_dir=cache, progress=progress)
            v = len(vocab)
        elif kind == "old":
            vocab = old_vocab.build_vocab(source.sentences(), cfg)
            enc = old_corpus.encode_corpus(source, vocab, cache_dir=cache)
            v = len(vocab)
        else:
            model = Word2Vec(vector_size=100, min_count=args.min_count, workers=2)
            if kind == "gensim-file":
                model.scan_vocab(corpus_file=args.corpus)
            else:
                model.scan_vocab(corpus_iterable=LineSentence(args.corpus))
            model.prepare_vocab()
            v = len(model.wv)
        seconds = time.perf_counter() - t
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if kind in ("old", "new"):
            digest = _digest(vocab, enc)
    out = dict(kind=kind, seconds=seconds, peak_mb=peak_kb / 1024, base_mb=base_kb / 1024, V=v)
    out["scan"] = scan
    print(json.dumps(dict(out, digest=digest)))


# ----------------------------------------------------------------------------- parent


def _run_child(args: argparse.Namespace, kind: str, corpus: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--corpus", str(corpus)]
    cmd += ["--min-count", str(args.min_count), "--old-rev", args.old_rev]
    cmd += ["--data-dir", str(args.data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tokens", type=float, default=10e6)
    p.add_argument("--words", type=float, default=10e6, help="distinct ranks to draw from")
    p.add_argument("--zipf", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--old-rev", default=OLD_REV)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "w2v_jax_bench",
        help="where the corpus and the children's caches go",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args)
        return
    if args.generate:
        generate(args.generate, int(args.tokens), int(args.words), args.zipf, args.seed)
        return

    tokens, words = int(args.tokens), int(args.words)
    corpus = args.data_dir / f"zipf-T{tokens}-N{words}-s{args.zipf}-seed{args.seed}.txt"
    if not corpus.is_file():  # in a child: a child's ru_maxrss starts from its parent's
        t = time.perf_counter()
        cmd = [sys.executable, __file__, "--generate", str(corpus), "--tokens", str(tokens)]
        cmd += ["--words", str(words), "--zipf", str(args.zipf), "--seed", str(args.seed)]
        subprocess.run(cmd, check=True)
        print(f"generated {corpus} in {time.perf_counter() - t:.1f}s")
    kinds = args.kinds.split(",")
    print(
        f"corpus {corpus.name}: {tokens:,} tokens, {corpus.stat().st_size / 1e6:.0f} MB; "
        f"min_count {args.min_count}; {args.repeats} repeats, kinds interleaved; "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in kinds:
            out = _run_child(args, kind, corpus)
            runs[kind].append(out)
            print(
                f"  repeat {r} {kind:<12} {out['seconds']:7.2f}s  peak {out['peak_mb']:6.0f} MB "
                f"(after imports {out['base_mb']:4.0f} MB)  V={out['V']:,}",
                flush=True,
            )
    med = {
        k: {f: statistics.median(o[f] for o in v) for f in ("seconds", "peak_mb", "base_mb")}
        for k, v in runs.items()
    }
    print(f"\nmedians of {args.repeats} ({tokens / 1e6:g}M tokens):")
    print("| kind | seconds | M tokens/s | peak RSS MB | peak - after imports MB | V |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, m in med.items():
        print(
            f"| {k} | {m['seconds']:.2f} | {tokens / m['seconds'] / 1e6:.2f} | "
            f"{m['peak_mb']:.0f} | {m['peak_mb'] - m['base_mb']:.0f} | {runs[k][0]['V']:,} |"
        )

    def ratio(a: str, b: str, field: str) -> str:
        if a in med and b in med:
            return f"{med[a][field] / med[b][field]:.2f}x"
        return "n/a"

    print(
        f"time old/new {ratio('old', 'new', 'seconds')}, "
        f"gensim-file/new {ratio('gensim-file', 'new', 'seconds')}, "
        f"gensim-iter/new {ratio('gensim-iter', 'new', 'seconds')}; "
        f"peak new/gensim-file {ratio('new', 'gensim-file', 'peak_mb')}, "
        f"new/gensim-iter {ratio('new', 'gensim-iter', 'peak_mb')}, "
        f"new/old {ratio('new', 'old', 'peak_mb')}"
    )
    if "new" in runs:
        scan = statistics.median(o["scan"] for o in runs["new"])
        rest = statistics.median(o["seconds"] - o["scan"] for o in runs["new"])
        print(
            f"new by phase (medians): the pass over the text {scan:.2f}s "
            f"({tokens / scan / 1e6:.2f}M tokens/s); counting, choosing the vocabulary and "
            f"writing the ids {rest:.2f}s"
        )
    if "old" in runs and "new" in runs:
        digests = {o["digest"] for o in runs["old"] + runs["new"]}
        print(f"old and new outputs identical: {len(digests) == 1} ({', '.join(sorted(digests))})")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
