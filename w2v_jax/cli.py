"""The ``w2v-jax`` command: ``train`` and ``eval``.

``w2v-jax train`` takes the flags word2vec.c and gensim users know (``--model --loss --dim
--window --negative --min-count --sample --epochs --alpha --min-alpha``) and writes a run folder:

    OUT/vectors.bin (or .txt)   word2vec format, loadable by gensim's KeyedVectors
    OUT/vocab.txt               "word count" per line, in row order
    OUT/checkpoint.w2v          everything --resume needs (atomic, checksummed)
    OUT/config.json, OUT/metrics.jsonl

Only one run at a time may use a run folder (``OUT/.lock``, released by the OS when the run
exits or dies); a second one stops at once and names the first one's pid, host and start time.

Exit status and errors: every expected failure prints ONE line, ``w2v-jax: error: ...``, on
stderr and no traceback (``--debug`` shows the traceback instead):

    0    success
    1    the run failed: a disk or permission problem (the line names the path and the problem,
         e.g. "no space left on device while writing runs/x/vectors.bin"; outputs are written
         atomically, so the previous file of that name is untouched), the loss became NaN/inf,
         the folder is in use by another run
    2    bad input: a flag, a missing corpus, a corrupt checkpoint or vectors file, a --resume
         whose corpus or settings differ from the checkpoint's (each difference is named),
         nothing to train (a finished run resumed, a corpus without one training example);
         then nothing in OUT is written
    130  interrupted (Ctrl-C), 143 terminated (SIGTERM): training stops after the current
         device call, writes OUT/checkpoint.w2v and prints the --resume command; a second
         signal stops at once and keeps the previous checkpoint
    141  stdout was closed early (``w2v-jax ... | head -1``): the rest of the output is dropped
         quietly, with the status a shell reports for SIGPIPE, as ``cat`` or ``grep`` would
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import gc
import json
import os
import re
import shlex
import sys
from pathlib import Path

from w2v_jax import config as config_lib
from w2v_jax import fileio

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_PIPE = 1, 2, 130, 141
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it

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
    p.add_argument(
        "--shuffle-tokens",
        type=int,
        default=d.shuffle_tokens,
        help="shuffle training examples within spans of N corpus tokens, spans in corpus order "
        "(0: over each whole chunk of 2^20 tokens)",
    )
    p.add_argument("--cbow-sum", action="store_true", help="CBOW sums context vectors (no mean)")
    p.add_argument("--cbow-grad", choices=config_lib.CBOW_GRADS, default=m.cbow_grad)
    p.add_argument("--epochs", type=int, default=t.epochs)
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="starting learning rate (default 0.025 sg, 0.05 cbow; 4x that for adagrad)",
    )
    p.add_argument("--min-alpha", type=float, default=t.min_alpha)
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--steps-per-call", type=int, default=t.steps_per_call)
    p.add_argument("--optimizer", choices=config_lib.OPTIMIZERS, default=t.optimizer)
    p.add_argument(
        "--update",
        choices=config_lib.UPDATE_MODES,
        default=t.update,
        help="auto: the fused C++ kernel where it applies on CPU, else sparse (pure JAX); "
        "the first progress line says which",
    )
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
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="bit-reproducible vectors and resume: the fused kernel's deterministic schedule "
        "(the same bits for the same --threads, which the run records), else the pure-JAX step",
    )
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="multi-host run: process 0's address (with --num-processes and --process-id)",
    )
    p.add_argument("--num-processes", type=int, help="multi-host run: how many processes")
    p.add_argument("--process-id", type=int, help="multi-host run: this process's rank")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host run configured by the cluster (Slurm, Open MPI, TPU pods): JAX "
        "detects the coordinator, process count and rank",
    )
    p.add_argument(
        "--connect-timeout",
        type=int,
        default=300,
        help="multi-host: seconds to wait for every process to join, and for a lost one",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=t.devices,
        help="split the tables over this many local devices (on CPU, simulated devices over "
        "the cores); in a multi-host run, devices per process",
    )
    p.add_argument(
        "--shard-by",
        choices=config_lib.SHARD_LAYOUTS,
        default=t.shard_by,
        help="how the tables split over devices: dims (every device holds every row at D/n "
        "columns; a step moves only the [B, K+1] scores) or rows (V/n rows each; a step moves "
        "the batch's rows); docs/scaling.md",
    )
    p.add_argument(
        "--corpus-slices",
        type=int,
        default=t.corpus_slices,
        help="read the corpus in this many slices, B/slices rows of every step from each "
        "(default: one per process, so each host reads only its own; resume keeps the "
        "checkpoint's); pass a multi-host run's count to reproduce it on one host",
    )
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=t.checkpoint_every_s,
        help="seconds between checkpoints (0: only at the end)",
    )
    p.add_argument(
        "--log-every", type=float, default=t.log_every_s, help="seconds between progress lines"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.w2v")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--neighbours",
        default=",".join(NEIGHBOUR_PROBES),
        help="comma-separated words whose nearest neighbours are printed at the end",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
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
            shuffle_tokens=a.shuffle_tokens,
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
            deterministic=a.deterministic,
            devices=a.devices,
            shard_by=a.shard_by,
            corpus_slices=a.corpus_slices,
            seed=a.seed,
            checkpoint_every_s=a.checkpoint_every,
            log_every_s=a.log_every,
        ),
    )
    return config_lib.validate(cfg)


def _check_out(out: Path) -> None:
    """``--out`` must be a folder or not exist yet (checked before anything is trained)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; pass a folder for the run")


def _vectors_path(a: argparse.Namespace, out: Path) -> Path:
    return out / ("vectors.bin" if a.format == "binary" else "vectors.txt")


def _write_vocab(vocab, path: Path) -> None:
    """``word count`` per line, word2vec.c's -save-vocab format, written atomically."""
    lines = "".join(f"{w} {c}\n" for w, c in zip(vocab.words, vocab.counts.tolist(), strict=True))
    fileio.atomic_write(path, lambda f: f.write(lines.encode("utf-8")))


def run_train(a: argparse.Namespace, argv: list[str] | None = None) -> int:
    cfg = config_from_args(a)
    out = Path(a.out)
    _check_out(out)
    if _multi_host(a):
        return _run_multi_host(a, cfg, out, argv)
    return _train_in_folder(a, cfg, out, argv)


def _train_in_folder(a: argparse.Namespace, cfg, out: Path, argv, mesh=None) -> int:
    """Trains under the run folder's lock and writes the outputs (the single-host run, and
    process 0 of a multi-host one)."""
    # The lock spans the whole run, so two runs cannot interleave checkpoints, vectors and
    # metrics.jsonl rows. Temp files are only removed under it: then no live writer owns them.
    with fileio.lock_run_folder(out):
        stale = fileio.remove_stale_temps(out)
        if stale and not a.quiet:
            print(
                f"removed {len(stale)} temp file(s) an interrupted run left in {out}",
                file=sys.stderr,
            )
        fileio.check_writable(out)
        _ask_for_cpu_devices(cfg.train.devices)
        # Imported only now: bad flags, a busy folder or a full disk fail without loading JAX.
        with _collection_paused():
            _use_compilation_cache()
            from w2v_jax.trainer import TrainingInterrupted, train

        rows = []
        try:
            result = train(
                a.corpus,
                cfg,
                out=out,
                resume=a.resume,
                progress=not a.quiet,
                callbacks=[rows.append],
                mesh=mesh,
            )
        except TrainingInterrupted as e:
            if a.debug:
                raise
            if e.path is not None:  # the checkpoint holds these rows' steps
                _append_metrics(out / "metrics.jsonl", rows)
            print(f"w2v-jax: {_interrupted(e, out, argv)}", file=sys.stderr)
            return 128 + e.signum
        if result.steps == 0:  # before any output is written: the folder stays as it was
            raise ValueError(result.nothing_trained or "nothing to train")
        vectors = result.vectors(a.vectors)
        result.params.clear()  # the vectors are all that is used from here: free the rest
        _write_outputs(a, cfg, result, vectors, out, rows)
        _report(a, cfg, result, vectors, out)
    return 0


class MultiHostError(RuntimeError):
    """A multi-host run that could not start or lost a process."""


def _multi_host(a: argparse.Namespace) -> bool:
    """Whether the flags ask for a multi-host run (and are complete)."""
    given = [f for f in ("coordinator", "num_processes", "process_id") if getattr(a, f) is not None]
    if given and len(given) < 3:
        raise ValueError(
            "a multi-host run needs --coordinator, --num-processes and --process-id together "
            "(or --distributed to let JAX read them from the cluster)"
        )
    if given and a.num_processes < 1:
        raise ValueError(f"--num-processes must be at least 1, got {a.num_processes}")
    if given and not 0 <= a.process_id < a.num_processes:
        raise ValueError(f"--process-id must be in [0, {a.num_processes}), got {a.process_id}")
    return bool(given) or a.distributed


_WORKER_ENV = "W2V_JAX_MULTI_HOST_WORKER"
# What JAX's distributed runtime prints when a process is lost or cannot join: error log lines,
# then a fatal one and a C++ stack trace, and the process aborts (it cannot be caught in Python).
_RUNTIME_LOG = re.compile(r"^[EF]\d{4} |^Barrier result|Check failure stack trace")
_FATAL = re.compile(r"F\d{4} ")  # the runtime's fatal line: the process aborts after it


def _run_multi_host(a: argparse.Namespace, cfg, out: Path, argv) -> int:
    """One process of a multi-host run, supervised.

    JAX's distributed runtime aborts the process (SIGABRT and a C++ stack trace) when it cannot
    reach the coordinator or loses another process, so the work runs in a child process
    (:func:`_multi_host_worker`) and this one turns such an end into one line. The child dies
    with this process (PR_SET_PDEATHSIG), so ``kill -9`` of a process ends its worker too.
    """
    if os.environ.get(_WORKER_ENV):
        return _multi_host_worker(a, cfg, out, argv)
    import signal
    import subprocess

    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ, **{_WORKER_ENV: "1"})
    child = subprocess.Popen(
        [sys.executable, "-m", "w2v_jax.cli", *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
        # Its own session: a Ctrl-C at the terminal reaches this process only, which forwards it
        # once (a second signal would mean "stop now, without a checkpoint").
        start_new_session=True,
    )
    for s in (signal.SIGINT, signal.SIGTERM):  # the child saves its work and says how to resume
        signal.signal(s, lambda signum, frame: child.send_signal(signum))
    held: list[str] = []  # the runtime's log lines, shown only if no abort follows
    fatal = False
    assert child.stderr is not None
    for line in child.stderr:
        if fatal or _RUNTIME_LOG.search(line):
            held.append(line)
            fatal = fatal or _FATAL.match(line) is not None
            continue
        sys.stderr.write("".join(held) + line)  # the run went on: its log was not an abort
        sys.stderr.flush()
        held.clear()
    rc = child.wait()
    text = "".join(held)
    if not fatal:  # no abort: the child's own ending
        sys.stderr.write(text)
        return rc if rc >= 0 else 128 - rc
    where = a.coordinator or "the cluster's coordinator"
    if "RegisterTask" in text or "Connect" in text and "DEADLINE_EXCEEDED" in text:
        raise MultiHostError(
            f"could not join the multi-host run at {where} within {a.connect_timeout} s: not "
            "every process connected; start all --num-processes processes with the same "
            "--coordinator (process 0 first)"
        )
    raise MultiHostError(
        f"lost another process of the multi-host run (it stopped, or no heartbeat within "
        f"{a.connect_timeout} s); the last checkpoint is in {out}: restart every process with "
        "--resume"
    )


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the parent dies (Linux prctl), so a worker
    never outlives a killed launcher and keeps the other processes waiting."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _multi_host_worker(a: argparse.Namespace, cfg, out: Path, argv) -> int:
    """Join the others and train on the mesh of all their devices: each process reads its own
    slices of the corpus and feeds its own devices' rows; process 0 alone locks the run folder and
    writes checkpoints and outputs (a folder every host can read, for --resume)."""
    _ask_for_cpu_devices(cfg.train.devices)
    from w2v_jax import sharding

    sharding.init_distributed(
        a.coordinator,
        a.num_processes,
        a.process_id,
        initialization_timeout=a.connect_timeout,
        heartbeat_timeout=a.connect_timeout,
    )
    import jax

    mesh = sharding.make_mesh()
    if jax.process_index() != 0:
        from w2v_jax.trainer import train

        train(a.corpus, cfg, out=out, resume=a.resume, progress=False, mesh=mesh)
        return 0
    return _train_in_folder(a, cfg, out, argv, mesh=mesh)


@contextlib.contextmanager
def _collection_paused():
    """Python's cyclic garbage collector paused within ``with``, and what was made there left out
    of later collections, the first time JAX is imported in the process (later, as when a program
    calls :func:`main` again, it changes nothing). Importing JAX and the modules that use it (the
    trainer, the evaluation) creates some 100k objects that live as long as the process: the
    collections their allocations trigger (some 250, two of them full) freed about a thousand
    objects and took 0.11 s of each start, and without the freeze the first collection after the
    imports would still walk all of them."""
    if "jax" in sys.modules or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _ask_for_cpu_devices(n: int) -> None:
    """Lets XLA split the CPU into ``n`` devices, for ``--devices n`` on a machine without
    accelerators. Only possible before JAX starts its CPU backend, hence before the import; a
    flag the user set in XLA_FLAGS is left alone. On GPU/TPU machines it changes nothing."""
    flag = "--xla_force_host_platform_device_count"
    flags = os.environ.get("XLA_FLAGS", "")
    if n > 1 and flag not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}={n}".strip()


_CACHE_ENV = "W2V_JAX_XLA_CACHE"


def _use_compilation_cache() -> None:
    """Keeps compiled steps on disk, so a run with the shapes of an earlier one skips XLA's
    compilation (seconds per run on a CPU; the same program, so the same numbers).

    JAX's persistent compilation cache, in ``$W2V_JAX_XLA_CACHE``, else the w2v_jax cache folder
    under ``xla/`` and a tag of this processor (an executable compiled for one CPU's features
    must not be loaded on another that shares the folder). ``W2V_JAX_XLA_CACHE=off`` turns it
    off; a ``JAX_COMPILATION_CACHE_DIR`` set by the user is left as it is.
    """
    setting = os.environ.get(_CACHE_ENV, "")
    if setting.lower() in ("off", "0", "no", "false") or os.environ.get(
        "JAX_COMPILATION_CACHE_DIR"
    ):
        return
    import jax

    from w2v_jax.corpus import cache_root

    path = Path(setting) if setting else cache_root() / "xla" / _processor_tag()
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every compile of a run is worth keeping: the step (seconds) and the small jits of the
    # initialisation (tenths of a second each) alike.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _processor_tag() -> str:
    """A short digest of the CPU model and feature flags (Linux), else of the platform name."""
    import hashlib
    import platform

    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        text += "".join(sorted(set(lines)))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _write_outputs(a: argparse.Namespace, cfg, result, vectors, out: Path, rows: list) -> None:
    """Vectors, vocab.txt and config.json atomically (a failure keeps the old file); the metric
    rows appended to metrics.jsonl in one write."""
    vectors.save_word2vec_format(_vectors_path(a, out), binary=a.format == "binary")
    _write_vocab(result.vocab, out / "vocab.txt")
    resolved = {"update_resolved": result.update, "update_reason": result.update_reason}
    # result.config: the values the run used (batch size and steps per call resolved for the
    # device), so that config.json reproduces the run on another platform too
    config_text = json.dumps({**dataclasses.asdict(result.config), **resolved}, indent=2) + "\n"
    fileio.atomic_write(out / "config.json", lambda f: f.write(config_text.encode()))
    _append_metrics(out / "metrics.jsonl", rows)


def _append_metrics(metrics_path: Path, rows: list) -> None:
    """The rows appended to ``metrics_path`` in one write."""
    try:
        with open(metrics_path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    except OSError as e:
        raise fileio.WriteError(e.errno, e.strerror, os.fspath(metrics_path)) from e


def _interrupted(e, out: Path, argv: list[str] | None) -> str:
    """What an interrupted run did, and the command that resumes it."""
    args = list(argv) if argv is not None else ["train", "--out", str(out)]
    resume = "w2v-jax " + shlex.join(args + ([] if "--resume" in args else ["--resume"]))
    if e.path is not None:
        return (
            f"interrupted at step {e.step}; checkpoint written to {e.path}; resume with: " + resume
        )
    previous = out / "checkpoint.w2v"
    if previous.is_file():
        return (
            f"interrupted again: stopped without a new checkpoint; {previous} is the previous "
            f"one; resume with: {resume}"
        )
    return "interrupted again: stopped without a checkpoint; the work is lost"


def _report(a: argparse.Namespace, cfg, result, vectors, out: Path) -> None:
    """The summary on stdout: losses, speed, where the vectors went, a few neighbours."""
    print(
        f"prepared in {result.prepare_seconds:.2f}s, trained V={len(result.vocab.words)} "
        f"D={cfg.model.dim} in {result.train_seconds:.2f}s "
        f"({result.words_per_sec / 1e3:,.0f}k words/s); epoch losses "
        + ", ".join(f"{x:.4f}" for x in result.epoch_loss)
    )
    print(f"wrote {_vectors_path(a, out)}")
    probes = [w for w in a.neighbours.split(",") if w and w in vectors]
    for w in probes[:6]:
        near = ", ".join(f"{n} {s:.2f}" for n, s in vectors.most_similar(w, topn=6))
        print(f"  {w:>10}: {near}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="w2v-jax", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    sub.add_parser("eval", help="evaluate vectors (see w2v-jax eval --help)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        with _collection_paused():
            from w2v_jax.evaluate import eval_main

        return _guard(lambda: eval_main(argv[1:]), debug="--debug" in argv)
    args = parser.parse_args(argv)
    return _guard(lambda: run_train(args, argv), debug=args.debug)


def _failure(e: BaseException) -> tuple[int, str] | None:
    """Exit status and one-line message for an expected failure; None for a bug (traceback)."""
    if isinstance(e, FileNotFoundError) and not isinstance(e, fileio.WriteError):
        msg = fileio.describe_os_error(e) if e.filename is not None else str(e)
        return EXIT_BAD_INPUT, msg  # a missing corpus, vectors or data set file
    if isinstance(e, OSError):
        return EXIT_FAILED, fileio.describe_os_error(e)  # ENOSPC, EROFS, EACCES, EDQUOT, ...
    if isinstance(e, (ValueError, KeyError)):  # includes CheckpointError
        return EXIT_BAD_INPUT, e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    if isinstance(e, (FloatingPointError, fileio.RunFolderLocked, MultiHostError)):
        return EXIT_FAILED, str(e)  # the NaN guard, a busy --out, a multi-host run that broke
    if isinstance(e, MemoryError):
        return EXIT_FAILED, f"out of memory {e}".rstrip()
    return None


def _guard(fn, debug: bool = False) -> int:
    """Runs ``fn``; an expected failure becomes one line on stderr and a non-zero status (see
    the module docstring); ``debug`` re-raises it for the traceback instead."""
    try:
        rc = fn()
        sys.stdout.flush()  # output that fit in the buffer meets a closed pipe only here
        return rc
    except BrokenPipeError:
        # The reader is gone (`| head`). Point stdout at /dev/null so that the interpreter's
        # own flush at exit does not raise again (the recipe in Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE
    except KeyboardInterrupt:
        if debug:
            raise
        print("w2v-jax: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        failure = _failure(e)
        if debug or failure is None:
            raise
        code, msg = failure
        print(f"w2v-jax: error: {msg}", file=sys.stderr)
        return code


def console_main() -> None:
    """The ``w2v-jax`` command: :func:`main`, then an exit without the interpreter's teardown.

    Freeing every module and object that JAX and XLA created, and running their C++ static
    destructors, takes a few tenths of a second after the work is done (as long as training
    the default CBOW run takes). Nothing is lost by skipping it: every file the command writes
    is closed, fsynced and renamed into place before :func:`main` returns. The exit handlers
    still run first (JAX's wait for pending effects and shutdown of a multi-host client), then
    stdout and stderr are flushed. An exception that escapes :func:`main` (a bug, with its
    traceback) leaves through the normal exit.
    """
    code = main()
    atexit._run_exitfuncs()  # what the interpreter's exit would run first; os._exit does not
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone since _guard's flush, a closed stream
            pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
