"""w2v_jax against gensim's Word2Vec on the same corpus, same hyperparameters, same process tree.

    python bench/vs_gensim.py                       # default corpus, sg-ns, 3 seeds
    python bench/vs_gensim.py --variants sg-ns,sg-hs,cbow-ns --repeats 3
    python bench/vs_gensim.py --corpus zipf:5000000 --no-eval   # pure speed, synthetic Zipf text
    python bench/vs_gensim.py --corpus zipf:5000000:1000000 --min-count 1 --no-eval  # V ~ 1e6
    python bench/vs_gensim.py --corpus /data/text8 --epochs 1

End to end (``--end-to-end``): the whole run as a user waits for it, each in its own subprocess
started cold: ``w2v-jax train`` (read+count+encode with a fresh encoded-corpus cache, XLA
compilation, training, writing vectors.bin; the C++ kernel's one-time build is not counted, its
usual cache is kept; our modules' bytecode is written first, as pip writes gensim's) and gensim
``Word2Vec`` (LineSentence iterator, or ``--gensim-input corpus_file``; build_vocab, train,
save_word2vec_format), same hyperparameters, gensim on every core. Columns per phase and the
child's peak RSS (its ``VmHWM``), medians of ``--repeats``. The final run (about 15 minutes on 2
cores; run it on a quiet machine):

    python bench/vs_gensim.py --end-to-end --variants sg-ns,sg-hs,cbow-ns --repeats 3 --update auto
    python bench/vs_gensim.py --end-to-end --variants sg-ns --repeats 3 --update auto \
        --gensim-input corpus_file
    # smoke test (about 1 minute): --corpus lee --epochs 1 --repeats 1 --variants sg-ns
    # how each of our phases grows with the corpus, the vocabulary held fixed (zipf:TOKENS:TYPES)
    python bench/vs_gensim.py --end-to-end --systems w2v_jax --corpus zipf:10000000:100000 \
        --min-count 1 --epochs 1 --no-eval --repeats 1 --update auto   # then zipf:50000000:100000

w2v_jax's phases come from the summary line the run prints ("prepared in P s, trained ... in
T s") and its output files: prepare (read, count, encode, fingerprint, step, init) = P, the time
``train()`` spent before its training loop (the "count+encode: ... done" line gives that pass
alone); train = T, the training loop (XLA compilation included); startup = the rest until the
checkpoint, written as training ends (Python, imports, arguments); write = checkpoint.w2v's
mtime to metrics.jsonl's (vectors.bin, vocab.txt, config.json).

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
from _common import status_kib

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
        update=args.update,
        deterministic=args.deterministic,
        log_every_s=1e9,
        checkpoint_every_s=0.0,
        **({"batch_size": args.batch_size} if args.batch_size else {}),
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


# ----------------------------------------------------------------------------- end to end

_GENSIM_CHILD = r"""
import json, sys, time
t_import = time.time()
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence
a = json.loads(sys.argv[1])
kw = dict(vector_size=a["dim"], window=a["window"], min_count=a["min_count"], sample=a["sample"],
          sg=int(a["model"] == "sg"), hs=int(a["loss"] == "hs"),
          negative=a["negative"] if a["loss"] == "ns" else 0, workers=a["workers"], seed=a["seed"],
          epochs=a["epochs"], alpha=a["alpha"], min_alpha=1e-4)
m = Word2Vec(**kw)
t0 = time.time()
if a["input"] == "corpus_file":
    m.build_vocab(corpus_file=a["corpus"])
else:
    m.build_vocab(LineSentence(a["corpus"]))
t1 = time.time()
if a["input"] == "corpus_file":
    m.train(corpus_file=a["corpus"], total_examples=m.corpus_count,
            total_words=m.corpus_total_words, epochs=a["epochs"])
else:
    m.train(LineSentence(a["corpus"]), total_examples=m.corpus_count, epochs=a["epochs"])
t2 = time.time()
m.wv.save_word2vec_format(a["out"], binary=True)
t3 = time.time()
print(json.dumps({"t_start": t0, "build_vocab": t1 - t0, "train": t2 - t1, "write": t3 - t2}))
"""


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Runs ``cmd``; returns its wall seconds, peak RSS (MB), stdout, and timestamped stderr."""
    import subprocess
    import threading

    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[tuple[float, str]] = []
    out: list[str] = []

    def read_err():
        for line in proc.stderr:
            lines.append((time.time(), line.rstrip("\n")))

    # The child's own peak: VmHWM of its address space, polled until it exits. Not ru_maxrss:
    # Linux carries the parent's RSS at fork into the child's ru_maxrss across exec, so every
    # child would look at least as big as this (growing) benchmark process.
    hwm_kb = [0]

    def poll_hwm():
        while proc.returncode is None:
            hwm_kb[0] = max(hwm_kb[0], status_kib("VmHWM", proc.pid) or 0)
            time.sleep(0.02)

    threads = [
        threading.Thread(target=read_err),
        threading.Thread(target=lambda: out.append(proc.stdout.read())),
        threading.Thread(target=poll_hwm, daemon=True),
    ]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    t_end = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    if not hwm_kb[0]:  # no /proc (not Linux): ru_maxrss, floored at this process's RSS
        hwm_kb[0] = usage.ru_maxrss
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-20:])
        raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}:\n{tail}")
    return {
        "t0": t0,
        "total": t_end - t0,
        "peak_rss_mb": hwm_kb[0] / 1024,  # KiB
        "stdout": out[0] if out else "",
        "stderr": lines,
    }


def e2e_ours(corpus_path, model, loss, args, seed, work: Path) -> dict:
    """``w2v-jax train`` in a subprocess; phases from its stderr times and output files."""
    import re

    from w2v_jax import fused

    out = work / f"w2v_jax-{model}-{loss}-{seed}"
    cache = work / f"cache-{model}-{loss}-{seed}"  # cold: count and encode again
    env = {**os.environ, "W2V_JAX_CACHE": str(cache)}
    # XLA's compilation cache lives under W2V_JAX_CACHE too, so it is cold as well, unless
    # --xla-cache names one folder that every run shares (warm after the first run)
    env["W2V_JAX_XLA_CACHE"] = args.xla_cache or str(cache / "xla")
    env.setdefault("W2V_JAX_KERNEL_CACHE", str(fused._cache_dir()))  # a one-time build
    cmd = [sys.executable, "-m", "w2v_jax.cli", "train", "--corpus", str(corpus_path)]
    cmd += ["--out", str(out), "--model", model, "--loss", loss, "--dim", str(args.dim)]
    cmd += ["--window", str(args.window), "--negative", str(args.negative)]
    cmd += ["--min-count", str(args.min_count), "--sample", str(args.sample)]
    cmd += ["--epochs", str(args.epochs), "--seed", str(seed), "--update", args.update]
    cmd += ["--checkpoint-every", "0", "--neighbours", ""]
    if args.deterministic:
        cmd += ["--deterministic"]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.steps_per_call:
        cmd += ["--steps-per-call", str(args.steps_per_call)]
    r = run_child(cmd, env)
    m = re.search(r"prepared in ([\d.]+)s, trained .* in ([\d.]+)s \(", r["stdout"])
    if m is None:
        raise RuntimeError(f"no training time in w2v-jax's output:\n{r['stdout']}")
    prepare, train = float(m.group(1)), float(m.group(2))
    t_ckpt = (out / "checkpoint.w2v").stat().st_mtime  # written as training ends
    res = {
        "startup": t_ckpt - train - prepare - r["t0"],
        "prepare": prepare,
        "train": train,
        "write": (out / "metrics.jsonl").stat().st_mtime - t_ckpt,
        "total": r["total"],
        "peak_rss_mb": r["peak_rss_mb"],
    }
    for _, line in r["stderr"]:  # e.g. "count+encode: 0.5M tokens (...), 3.2 s done"
        done = re.match(r"(\S+): .* ([\d.]+) s done$", line)
        if done:
            res[done.group(1)] = float(done.group(2))
    res["vectors"] = out / "vectors.bin"
    return res


def e2e_gensim(corpus_path, model, loss, args, seed, work: Path) -> dict:
    out = work / f"gensim-{model}-{loss}-{seed}.bin"
    a = dict(vars(args), model=model, loss=loss, seed=seed, corpus=str(corpus_path), out=str(out))
    a["alpha"], a["input"] = (0.025 if model == "sg" else 0.05), args.gensim_input
    r = run_child([sys.executable, "-c", _GENSIM_CHILD, json.dumps(a, default=str)])
    phases = json.loads(r["stdout"].strip().splitlines()[-1])
    res = {"startup": phases.pop("t_start") - r["t0"], **phases}
    res.update(total=r["total"], peak_rss_mb=r["peak_rss_mb"], vectors=out)
    return res


def _compile_bytecode() -> None:
    """Writes the bytecode of w2v_jax's modules, as ``pip install`` does for gensim's. An
    editable install has none until a first run writes it, and never where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on this project's machines): then every run would
    compile our modules from source again (0.1 s of each run, BENCHMARKS.md) and gensim's not."""
    import compileall

    import w2v_jax

    compileall.compile_dir(Path(w2v_jax.__file__).parent, quiet=1)


def end_to_end(args) -> int:
    """Each system's whole run in a fresh subprocess; a table of phases, memory and quality."""
    import tempfile

    from w2v_jax import corpus as corpus_lib
    from w2v_jax.vectors import load_vectors

    source = corpus_lib.resolve_corpus(args.corpus)
    path = getattr(source, "path", None)
    if path is None or not Path(path).is_file():
        raise SystemExit(f"--end-to-end needs a corpus that is one text file, got {args.corpus}")
    raw_words = sum(len(s) for s in source.sentences())
    print(
        f"end to end, corpus {args.corpus} ({path}): {raw_words:,} tokens; {os.cpu_count()} "
        f"cores; gensim workers={args.workers}, input {args.gensim_input}; "
        f"w2v_jax --update {args.update}{' --deterministic' if args.deterministic else ''}",
        flush=True,
    )
    _compile_bytecode()
    runs = {"gensim": e2e_gensim, "w2v_jax": e2e_ours}
    systems = [x for x in runs if x in args.systems.split(",")]
    if not systems:
        raise SystemExit(f"--systems names none of {', '.join(runs)}: {args.systems!r}")
    runs = {x: runs[x] for x in systems}
    rows = []
    with tempfile.TemporaryDirectory(prefix="w2v_e2e_") as tmp:
        for variant in args.variants.split(","):
            model, loss = VARIANTS[variant]
            per = {system: [] for system in runs}
            for r in range(args.repeats):
                seed = r + 1
                for system, fn in runs.items():
                    res = fn(path, model, loss, args, seed, Path(tmp))
                    res["words_per_sec"] = raw_words * args.epochs / res["train"]
                    res.update(evaluate(load_vectors(res.pop("vectors")), not args.no_eval))
                    per[system].append(res)
                    print(
                        f"  {variant} {system:8s} seed {seed}: "
                        + ", ".join(f"{k} {v:,.3f}" for k, v in res.items()),
                        flush=True,
                    )
                    if args.json:
                        with open(args.json, "a") as f:
                            row = {"variant": variant, "system": system, "seed": seed}
                            f.write(json.dumps({**row, **vars(args), **res}) + "\n")
            rows.append((variant, per))

    quality = [] if args.no_eval else ["wordsim353", "simlex999", "analogy"]
    cols = {
        "gensim": ["startup", "build_vocab", "train", "write"],
        "w2v_jax": ["startup", "prepare", "train", "write"],
    }
    print()
    print("Seconds per phase (w2v_jax: prepare = read+count+encode+init, train includes XLA")
    print("compilation; gensim: build_vocab = read+count), peak RSS of the child, quality.")
    head = ["phases", "total s", "words/s (train)", "peak RSS MB", *quality]
    print("| variant | system | " + " | ".join(head) + " |")
    print("|" + " --- |" * (len(head) + 2))
    for variant, per in rows:
        med = {s: {k: statistics.median(o[k] for o in per[s]) for k in per[s][0]} for s in per}
        for system in runs:
            o = med[system]
            extra = [k for k in o if k.endswith("encode") or k == "count"]  # stderr passes
            phases = ", ".join(f"{k} {o[k]:.2f}" for k in cols[system] + extra)
            cells = [phases, f"{o['total']:.2f}", f"{o['words_per_sec'] / 1e3:,.0f}k"]
            cells += [f"{o['peak_rss_mb']:,.0f}"] + [f"{o[k]:.3f}" for k in quality]
            print(f"| {variant} | {system} | " + " | ".join(cells) + " |")
        if len(runs) < 2:
            continue
        g, w = med["gensim"], med["w2v_jax"]
        ratio = [  # seconds as gensim/w2v_jax (> 1: w2v_jax faster), the rest w2v_jax/gensim
            f"train {g['train'] / w['train']:.2f}x",
            f"{g['total'] / w['total']:.2f}x",
            f"{w['words_per_sec'] / g['words_per_sec']:.2f}x",
            f"{w['peak_rss_mb'] / g['peak_rss_mb']:.2f}x",
        ]
        print(
            f"| {variant} | ratio w2v_jax/gensim | " + " | ".join(ratio) + " |" * (len(quality) + 1)
        )
    print(
        "(ratios: seconds as gensim/w2v_jax, so > 1 means w2v_jax is faster; RSS as w2v_jax/gensim)"
    )
    return 0


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
    p.add_argument("--batch-size", type=int, default=0, help="0: the device's default")
    p.add_argument("--steps-per-call", type=int, default=0, help="0: the device's default")
    p.add_argument("--update", default="sparse", choices=("auto", "sparse", "fused", "dense"))
    p.add_argument(
        "--deterministic", action="store_true", help="w2v_jax --deterministic (bit-reproducible)"
    )
    p.add_argument(
        "--xla-cache",
        help="--end-to-end: one XLA compilation cache folder for every w2v_jax run (warm after "
        "its first run); default: a fresh one per run, like the corpus cache",
    )
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--json", help="append one JSON line per run to this file")
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="whole runs in subprocesses: phases, peak memory, quality (see the docstring)",
    )
    p.add_argument(
        "--systems",
        default="gensim,w2v_jax",
        help="--end-to-end: which systems to run (e.g. w2v_jax alone, to see how each of its "
        "phases grows with the corpus); the ratio row needs both",
    )
    p.add_argument(
        "--gensim-input",
        default="iterator",
        choices=("iterator", "corpus_file"),
        help="--end-to-end: gensim reads LineSentence(path) or Word2Vec(corpus_file=path)",
    )
    args = p.parse_args(argv)
    from w2v_jax import corpus as corpus_lib

    name = args.corpus
    if name.startswith("zipf:"):
        tokens, types = (int(float(x)) for x in (name.split(":") + ["50000"])[1:3])
        cache = corpus_lib.cache_root() / "bench"
        cache.mkdir(parents=True, exist_ok=True)
        stem = f"zipf_{tokens}" if types == 50_000 else f"zipf_{tokens}_{types}"
        name = str(zipf_corpus(cache / f"{stem}.txt", tokens, types))
    if args.end_to_end:
        return end_to_end(argparse.Namespace(**{**vars(args), "corpus": name}))

    from w2v_jax.config import DataConfig
    from w2v_jax.vocab import build_vocab

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
