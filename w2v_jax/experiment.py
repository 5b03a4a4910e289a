r"""Experiments: grids of runs with resumable JSONL results, mean +- std tables, plots, PMI check.

The scripts in ``experiments/`` stay thin; everything they share lives here, where tests import it.

* A run is a :class:`RunSpec`: grid coordinates (``labels``), a full :class:`~w2v_jax.Config`
  (the seed included) and the vector kinds to evaluate (``"in"``, ``"sum"``, ...). One training
  run gives one row per vector kind.
* :func:`run_grid` trains every spec whose rows are not yet in ``results.jsonl`` and appends one
  JSON line per (run, vector kind): the full flat config, the metrics of
  :func:`w2v_jax.evaluate.evaluate_all` plus the final epoch loss, words/s and wall times, and
  the versions of python, jax, numpy and w2v_jax. The row key is (corpus, flat config, vector
  kind), so a rerun skips finished runs, and a spec that repeats another's config (an ablation
  baseline) reuses its row instead of training again.
* :func:`aggregate` groups rows by label values into mean and sample standard deviation
  (``ddof=1``; NaN for a single seed); :func:`markdown_table` prints them as ``mean ± std``.
* :func:`plot_heatmap` (a metric over a 2-D grid) and :func:`plot_bars` (1-D comparisons) write
  PNGs with matplotlib's Agg backend, imported only when a plot is drawn.
* The PMI check (Levy and Goldberg 2014): :func:`cooccurrence_counts`, :func:`pmi_matrix`,
  :func:`sgns_targets` (the exact optimum of the SGNS objective per cell) and
  :func:`fit_sgns_full_batch` (that objective in expectation over all pairs, minimised with
  optax adam), plus :func:`correlations`.

Notation: ``w`` is the center word (row of ``center_vecs``), ``c`` the outside/context word (row
of ``outside_vecs``); w2v_jax models P(c | w), so the SGNS score of a pair is
:math:`v_w \cdot u_c`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from w2v_jax import config as config_lib
from w2v_jax.config import Config

# Metrics every training row carries besides evaluate_all's.
RUN_METRICS = ("final_loss", "words_per_sec", "train_seconds", "eval_seconds", "wall_seconds")
# Short column names for tables and plot titles.
METRIC_NAMES = {
    "wordsim353_spearman": "WS353 ρ",
    "simlex999_spearman": "SimLex999 ρ",
    "analogy_total": "analogy acc",
    "analogy_semantic": "analogy sem",
    "analogy_syntactic": "analogy syn",
    "final_loss": "final loss",
    "words_per_sec": "words/s",
    "train_seconds": "train s",
}
# evaluate_all's default data sets (gensim's bundled copies).
EVAL_PAIRS = ("wordsim353.tsv", "simlex999.txt")
EVAL_ANALOGIES = "questions-words.txt"
# Fields that decide the vocabulary: runs that agree on them share one counting pass.
_VOCAB_FIELDS = ("min_count", "max_vocab_size", "max_final_vocab", "lowercase", "max_sentence_len")


# ------------------------------------------------------------------------------ runs
@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of a grid.

    Attributes:
      labels: grid coordinates shown in tables and plots, e.g. ``{"window": 5, "negative": 15}``;
        not part of the row key.
      config: the full run configuration (``config.train.seed`` is the seed).
      vectors: vector kinds evaluated from this one run (``"in"``, ``"out"``, ``"sum"``).
    """

    labels: dict[str, Any]
    config: Config
    vectors: tuple[str, ...] = ("in",)


def versions() -> dict[str, str]:
    """Versions of python, jax, numpy and w2v_jax, for every result row."""
    import jax

    import w2v_jax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "w2v_jax": w2v_jax.__version__,
    }


def run_key(
    corpus: Any, cfg: Config, vectors: str, eval_kwargs: dict[str, Any] | None = None
) -> str:
    """The identity of a row: corpus, every flat config field (seed included), vector kind, and
    the evaluation settings where they are not :func:`w2v_jax.evaluate.evaluate_all`'s defaults."""
    payload: dict[str, Any] = {
        "corpus": str(corpus),
        "config": config_lib.flat(cfg),
        "vectors": vectors,
    }
    if eval_kwargs:
        payload["eval"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in eval_kwargs.items()
        }
    return json.dumps(payload, sort_keys=True)


def _clean(x: Any) -> Any:
    """JSON-ready: NaN becomes None, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a JSONL file ([] if it does not exist); a torn last line is ignored."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    lines = p.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # interrupted while appending: that run reruns
                continue
            raise ValueError(f"{p}: line {i + 1} is not JSON") from None
    return rows


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Appends one JSON line and flushes it to disk."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        f.write(json.dumps(_clean(row), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def vocab_for(corpus: Any, cfg: Config, cache: dict | None = None) -> Any:
    """The vocabulary of ``corpus`` under ``cfg.data``, counted once per vocabulary setting
    (``cache`` maps vocabulary settings to vocabularies; pass the same dict to reuse counts)."""
    cache = {} if cache is None else cache
    from w2v_jax import corpus as corpus_lib
    from w2v_jax.vocab import build_vocab

    key = (str(corpus),) + tuple(getattr(cfg.data, f) for f in _VOCAB_FIELDS)
    if key not in cache:
        source = corpus_lib.resolve_corpus(
            corpus, lowercase=cfg.data.lowercase, max_sentence_len=cfg.data.max_sentence_len
        )
        cache[key] = build_vocab(source.sentences(), cfg.data)
    return cache[key]


def evaluate_run(result: Any, which: str, eval_kwargs: dict[str, Any]) -> dict[str, float]:
    """``evaluate_all`` on one vector kind of a :class:`~w2v_jax.TrainResult`."""
    from w2v_jax.evaluate import evaluate_all

    return evaluate_all(result.vectors(which), **eval_kwargs)


def train_and_evaluate(
    corpus: Any,
    spec: RunSpec,
    *,
    eval_kwargs: dict[str, Any] | None = None,
    vocab: Any = None,
) -> list[dict[str, Any]]:
    """Trains ``spec.config`` once and returns one result row per vector kind (not written)."""
    import w2v_jax

    t0 = time.perf_counter()
    result = w2v_jax.train(corpus, spec.config, progress=False, vocab=vocab)
    rows = []
    vers = versions()
    for which in spec.vectors:
        t1 = time.perf_counter()
        metrics = evaluate_run(result, which, eval_kwargs or {})
        t_eval = time.perf_counter() - t1
        metrics.update(
            final_loss=result.epoch_loss[-1] if result.epoch_loss else math.nan,
            words_per_sec=result.words_per_sec,
            train_seconds=result.train_seconds,
            eval_seconds=t_eval,
            wall_seconds=time.perf_counter() - t0,
        )
        rows.append(
            {
                "key": run_key(corpus, spec.config, which, eval_kwargs),
                "corpus": str(corpus),
                "vectors": which,
                "seed": spec.config.train.seed,
                "labels": dict(spec.labels),
                "config": config_lib.flat(spec.config),
                "metrics": metrics,
                "epoch_loss": list(result.epoch_loss),
                "vocab_size": len(result.vocab.words),
                "versions": vers,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
            }
        )
    return rows


def run_grid(
    specs: Sequence[RunSpec],
    *,
    corpus: Any,
    results_path: str | os.PathLike,
    eval_kwargs: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    vocab_cache: dict | None = None,
) -> list[dict[str, Any]]:
    """Runs every spec not yet in ``results_path``, appending its rows as it finishes.

    Args:
      specs: the grid (e.g. ``itertools.product`` over window x K x seed).
      corpus: a named corpus or a path, as :func:`w2v_jax.train` takes it.
      results_path: the JSONL file; created if missing, only ever appended to.
      eval_kwargs: passed to :func:`w2v_jax.evaluate.evaluate_all`.
      log: called with one line per run (e.g. ``print``); None is silent.
      vocab_cache: shared with :func:`vocab_for` to count the corpus only once.

    Returns:
      For each spec in order and each of its vector kinds, its row (read back or new) with
      ``labels`` set to that spec's labels.
    """
    say = log or (lambda _msg: None)
    done = {r["key"]: r for r in read_jsonl(results_path) if "key" in r}
    vocab_cache = {} if vocab_cache is None else vocab_cache
    out = []
    for i, spec in enumerate(specs):
        keys = [run_key(corpus, spec.config, w, eval_kwargs) for w in spec.vectors]
        tag = ", ".join(f"{k}={v}" for k, v in spec.labels.items() if not k.startswith("_"))
        if all(k in done for k in keys):
            say(f"[{i + 1}/{len(specs)}] {tag} seed={spec.config.train.seed}: done, skipped")
        else:
            vocab = vocab_for(corpus, spec.config, vocab_cache)
            for row in train_and_evaluate(corpus, spec, eval_kwargs=eval_kwargs, vocab=vocab):
                if row["key"] not in done:
                    append_jsonl(results_path, row)
                    done[row["key"]] = json.loads(json.dumps(_clean(row)))
            m = done[keys[0]]["metrics"]
            say(
                f"[{i + 1}/{len(specs)}] {tag} seed={spec.config.train.seed}: "
                + "  ".join(
                    f"{METRIC_NAMES.get(k, k)} {_fmt(m.get(k))}"
                    for k in metric_columns([done[keys[0]]])
                )
                + f"  ({m['wall_seconds']:.0f}s)"
            )
        for k in keys:
            out.append({**done[k], "labels": dict(spec.labels)})
    return out


def metric_columns(rows: Sequence[dict[str, Any]], *, speed: bool = True) -> list[str]:
    """Table columns from the first row: every ``*_spearman``, ``analogy_total`` if evaluated,
    then ``words_per_sec`` and ``final_loss`` (``speed=False`` leaves those two out)."""
    if not rows:
        return []
    names = list(rows[0]["metrics"])
    cols = [k for k in names if k.endswith("_spearman")]
    cols += [k for k in ("analogy_total",) if k in names]
    if speed:
        cols += ["words_per_sec", "final_loss"]
    return cols


# ------------------------------------------------------------------------- aggregation
def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def aggregate(
    rows: Iterable[dict[str, Any]],
    by: Sequence[str],
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    r"""Mean and sample standard deviation of each metric per distinct value of the labels ``by``.

    .. math:: \bar x = \frac{1}{n}\sum_i x_i,\qquad
              s = \sqrt{\frac{1}{n-1}\sum_i (x_i - \bar x)^2}\ (\mathrm{NaN\ if}\ n = 1).

    NaN (or None) values are left out of a metric's mean; ``n`` counts the rows of the group.

    Args:
      rows: result rows with ``labels`` and ``metrics`` dicts.
      by: label names that define a cell, e.g. ``("window", "negative")``.
      metrics: metric names; None takes every metric of the first row.

    Returns:
      One dict per cell in first-seen order: ``labels`` (the ``by`` values), ``n``, ``mean``
      and ``std`` (dicts by metric).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["labels"].get(b) for b in by), []).append(r)
    if metrics is None:
        first = next(iter(groups.values()), [{"metrics": {}}])[0]
        metrics = list(first["metrics"])
    out = []
    for key, members in groups.items():
        mean, std = {}, {}
        for m in metrics:
            vals = np.array([_num(r["metrics"].get(m)) for r in members], dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            mean[m] = float(vals.mean()) if vals.size else math.nan
            std[m] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
        out.append(
            {"labels": dict(zip(by, key, strict=True)), "n": len(members), "mean": mean, "std": std}
        )
    return out


def _fmt(x: Any, digits: int = 3, *, whole: bool | None = None) -> str:
    """``digits`` decimals; whole numbers with thousands separators from 100 up (or if told)."""
    v = _num(x)
    if math.isnan(v):
        return "n/a"
    if whole if whole is not None else abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``"0.123 ± 0.004"`` (std in the mean's format), or the mean alone when the std is NaN."""
    mean, std = _num(mean), _num(std)
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return _fmt(mean, digits)
    whole = abs(mean) >= 100
    return f"{_fmt(mean, digits, whole=whole)} ± {_fmt(std, digits, whole=whole)}"


def markdown_table(
    cells: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    *,
    digits: int = 3,
    notes: dict[tuple, str] | None = None,
) -> str:
    """A markdown table: one row per cell, its labels, ``n`` and ``mean ± std`` per metric.

    Args:
      cells: from :func:`aggregate`.
      metrics: columns, in order.
      digits: decimals.
      notes: optional text per cell (keyed by the tuple of label values) in a last column.
    """
    by = list(cells[0]["labels"]) if cells else []
    head = by + ["n"] + [METRIC_NAMES.get(m, m) for m in metrics]
    if notes:
        head.append("note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        vals = [str(c["labels"][b]) for b in by] + [str(c["n"])]
        vals += [format_mean_std(c["mean"][m], c["std"][m], digits) for m in metrics]
        if notes:
            vals.append(notes.get(tuple(c["labels"][b] for b in by), ""))
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- plots
def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | os.PathLike) -> Path:
    """Writes ``fig`` as a PNG at ``path`` (folders created) and closes it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out


def plot_heatmap(
    cells: Sequence[dict[str, Any]],
    *,
    x: str,
    y: str,
    metric: str,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """A PNG heatmap of ``metric``'s mean over the grid ``x`` by ``y``, cells annotated mean ± std.

    Missing cells are blank. Returns the path written.
    """
    plt = _pyplot()
    xs = sorted({c["labels"][x] for c in cells})
    ys = sorted({c["labels"][y] for c in cells})
    mean_YxX = np.full((len(ys), len(xs)), np.nan)
    std_YxX = np.full((len(ys), len(xs)), np.nan)
    for c in cells:
        i, j = ys.index(c["labels"][y]), xs.index(c["labels"][x])
        mean_YxX[i, j], std_YxX[i, j] = c["mean"][metric], c["std"][metric]
    fig, ax = plt.subplots(figsize=(1.6 * len(xs) + 2.2, 1.0 * len(ys) + 1.8))
    masked = np.ma.masked_invalid(mean_YxX)
    im = ax.imshow(masked, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    finite = mean_YxX[np.isfinite(mean_YxX)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(mean_YxX[i, j]):
                ax.text(
                    j,
                    i,
                    format_mean_std(mean_YxX[i, j], std_YxX[i, j]).replace(" ± ", "\n± "),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if mean_YxX[i, j] > mid else "white",
                )
    fig.colorbar(im, ax=ax, label=METRIC_NAMES.get(metric, metric))
    ax.set_title(title or METRIC_NAMES.get(metric, metric))
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_bars(
    cells: Sequence[dict[str, Any]],
    *,
    x: str,
    metrics: Sequence[str],
    path: str | os.PathLike,
    hue: str | None = None,
    title: str | None = None,
) -> Path:
    """A PNG of bar charts (one panel per metric): mean with std error bars per ``x`` value,
    grouped by ``hue`` when given. Returns the path written."""
    plt = _pyplot()
    xs = list(dict.fromkeys(c["labels"][x] for c in cells))
    hues = list(dict.fromkeys(c["labels"][hue] for c in cells)) if hue else [None]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(3.2, 0.9 * len(xs)) * len(metrics), 3.6), squeeze=False
    )
    width = 0.8 / len(hues)
    for ax, m in zip(axes[0], metrics, strict=True):
        for k, h in enumerate(hues):
            mean, err = [], []
            for xv in xs:
                hit = [
                    c
                    for c in cells
                    if c["labels"][x] == xv and (h is None or c["labels"][hue] == h)
                ]
                mean.append(hit[0]["mean"][m] if hit else np.nan)
                s = hit[0]["std"][m] if hit else np.nan
                err.append(0.0 if np.isnan(s) else s)
            pos = np.arange(len(xs)) + (k - (len(hues) - 1) / 2) * width
            ax.bar(
                pos,
                np.nan_to_num(mean),
                width,
                yerr=err,
                capsize=2,
                label=None if h is None else f"{hue}={h}",
            )
        ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=30, ha="right", fontsize=8)
        ax.set_title(METRIC_NAMES.get(m, m))
        if hue:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path)


# ------------------------------------------------------------------------ script helpers
def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """``["min_count=1", "sample=0"]`` -> ``{"min_count": 1, "sample": 0}`` (JSON values, else
    strings). Unknown fields fail in :func:`w2v_jax.config.override`."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out


def add_common_args(p: argparse.ArgumentParser, *, default_out: Path) -> None:
    """The flags every experiment script shares."""
    p.add_argument(
        "--corpus",
        default="wiki-sample",
        help="named corpus (wiki-sample, lee, head500, text8) or a path",
    )
    p.add_argument(
        "--out", type=Path, default=default_out, help=f"results folder (default: {default_out})"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer epochs, smaller dim: the whole script in minutes on 2 cores",
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (1, 2, ...)")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs")
    p.add_argument("--dim", type=int, default=None, help="override D")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any config field, e.g. --set min_count=1 (repeatable)",
    )
    p.add_argument(
        "--pairs",
        nargs="+",
        default=list(EVAL_PAIRS),
        metavar="FILE_OR_NAME",
        help="word-pair sets for Spearman (default: wordsim353.tsv simlex999.txt)",
    )
    p.add_argument(
        "--analogies",
        default=EVAL_ANALOGIES,
        metavar="FILE_OR_NAME",
        help=f"analogy set (default: {EVAL_ANALOGIES}); 'none' skips analogies",
    )


def eval_kwargs_of(args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate_all`` keyword arguments from --pairs/--analogies; {} for the defaults."""
    out: dict[str, Any] = {}
    analogies = None if args.analogies.lower() == "none" else args.analogies
    if analogies != EVAL_ANALOGIES:
        out["analogies"] = analogies
    if tuple(args.pairs) != EVAL_PAIRS:
        out["pairs"] = tuple(args.pairs)
    return out


def base_config(args: argparse.Namespace, *, quick: dict[str, Any], full: dict[str, Any]) -> Config:
    """word2vec.c defaults, then the quick or full preset, then --epochs/--dim/--set."""
    fields = dict(quick if args.quick else full)
    fields.update(log_every_s=1e9, checkpoint_every_s=0.0)
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    if args.dim is not None:
        fields["dim"] = args.dim
    fields.update(parse_set(args.set))
    return config_lib.override(Config(), **fields)


def seeds_of(args: argparse.Namespace, *, quick: int, full: int) -> list[int]:
    """Seeds 1..n (word2vec.c starts at 1)."""
    n = args.seeds if args.seeds is not None else (quick if args.quick else full)
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    return list(range(1, n + 1))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (creating folders) and returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this invocation, for table headers."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", script, *args])


# -------------------------------------------------------------------------- PMI check
def cooccurrence_counts(
    ids: np.ndarray,
    sentence_starts: np.ndarray,
    vocab_size: int,
    window: int,
    *,
    dynamic: bool = False,
) -> np.ndarray:
    r"""``#(w, c)``: how often word c is within ``window`` tokens of center w, same sentence.

    Counts both directions, so the matrix is symmetric. With ``dynamic=True`` a context at
    distance d counts with word2vec.c's probability of being inside the sampled window
    :math:`b \sim U\{1..W\}`: :math:`P(d \le b) = (W - d + 1) / W` (expected counts).

    Args:
      ids: [T] int token ids (unknown words already dropped, as the trainer sees them).
      sentence_starts: [S+1] int offsets of the sentences into ``ids``.
      vocab_size: V.
      window: W >= 1.
      dynamic: weight by the dynamic-window probability.

    Returns:
      [V, V] float64 counts, rows = center w, columns = context c.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    ids = np.asarray(ids, dtype=np.int64)
    starts = np.asarray(sentence_starts, dtype=np.int64)
    sent_T = np.repeat(np.arange(starts.shape[0] - 1), np.diff(starts))
    cooc_V2 = np.zeros(vocab_size * vocab_size, dtype=np.float64)
    for d in range(1, window + 1):
        same = sent_T[:-d] == sent_T[d:]
        a, b = ids[:-d][same], ids[d:][same]
        weight = (window - d + 1) / window if dynamic else 1.0
        cooc_V2 += weight * np.bincount(a * vocab_size + b, minlength=vocab_size**2)
        cooc_V2 += weight * np.bincount(b * vocab_size + a, minlength=vocab_size**2)
    return cooc_V2.reshape(vocab_size, vocab_size)


def pmi_matrix(cooc_VxV: np.ndarray) -> np.ndarray:
    r"""Pointwise mutual information from co-occurrence counts (-inf where ``#(w, c) = 0``).

    .. math:: \mathrm{PMI}(w, c) = \log \frac{\#(w, c)\, |D|}{\#(w)\, \#(c)},\quad
              \#(w) = \sum_c \#(w, c),\ \#(c) = \sum_w \#(w, c),\ |D| = \sum_{w,c} \#(w, c).

    Args:
      cooc_VxV: [V, V] counts, rows = center w, columns = context c.

    Returns:
      [V, V] float64.
    """
    cooc = np.asarray(cooc_VxV, dtype=np.float64)
    total = cooc.sum()
    row_Vx1 = cooc.sum(axis=1, keepdims=True)
    col_1xV = cooc.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(cooc) + np.log(total) - np.log(row_Vx1) - np.log(col_1xV)
    return np.where(cooc > 0, pmi, -np.inf)


def sgns_targets(cooc_VxV: np.ndarray, noise_V: np.ndarray, negative: int) -> np.ndarray:
    r"""The per-cell optimum of the SGNS objective: :math:`\log\frac{\#(w,c)}{K\,\#(w)\,P_n(c)}`.

    Levy and Goldberg (2014), section 3.1: with K negatives per pair drawn from :math:`P_n`, the
    expected objective is
    :math:`\sum_{w,c} \#(w,c)\log\sigma(x_{wc}) + K\,\#(w)\,P_n(c)\log\sigma(-x_{wc})`, which is
    separable in :math:`x_{wc} = v_w \cdot u_c` when D is large enough to realise any [V, V]
    matrix; setting its derivative to zero gives :math:`\sigma(x) = a / (a + b)`, i.e.
    :math:`x = \log(a / b)` with :math:`a = \#(w,c)`, :math:`b = K\#(w)P_n(c)`. When
    :math:`P_n(c) = \#(c)/|D|` (unigram noise, ``ns_exponent = 1``) this is exactly
    :math:`\mathrm{PMI}(w, c) - \log K`.

    Args:
      cooc_VxV: [V, V] counts.
      noise_V: [V] noise probabilities (sum 1).
      negative: K.

    Returns:
      [V, V] float64, -inf where ``#(w, c) = 0``.
    """
    cooc = np.asarray(cooc_VxV, dtype=np.float64)
    noise = np.asarray(noise_V, dtype=np.float64)
    row_Vx1 = cooc.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(cooc) - np.log(row_Vx1) - np.log(negative * noise)[None, :]
    return np.where(cooc > 0, x, -np.inf)


def sgns_expected_loss(center_VxD, outside_VxD, cooc_VxV, noise_V, negative: int):
    r"""The SGNS loss in expectation over all pairs and negatives, per positive pair.

    .. math:: J = -\frac{1}{|D|}\sum_{w,c}\Big[\#(w,c)\log\sigma(v_w\cdot u_c)
              + K\,\#(w)\,P_n(c)\log\sigma(-v_w\cdot u_c)\Big].

    Args:
      center_VxD: [V, D] v_w. outside_VxD: [V, D] u_c. cooc_VxV: [V, V] #(w, c).
      noise_V: [V] P_n. negative: K.

    Returns:
      [] scalar.
    """
    import jax
    import jax.numpy as jnp

    x_VxV = center_VxD @ outside_VxD.T
    row_Vx1 = jnp.sum(cooc_VxV, axis=1, keepdims=True)
    neg_VxV = negative * row_Vx1 * noise_V[None, :]
    total = jnp.sum(cooc_VxV)
    return (
        -jnp.sum(cooc_VxV * jax.nn.log_sigmoid(x_VxV) + neg_VxV * jax.nn.log_sigmoid(-x_VxV))
        / total
    )


def fit_sgns_full_batch(
    cooc_VxV: np.ndarray,
    noise_V: np.ndarray,
    negative: int,
    *,
    dim: int,
    steps: int = 500,
    learning_rate: float = 0.05,
    seed: int = 0,
    init_scale: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimises :func:`sgns_expected_loss` with optax adam, full batch, under one ``jit``.

    Args:
      cooc_VxV: [V, V] exact co-occurrence counts. noise_V: [V] P_n. negative: K.
      dim: D (>= V makes every :func:`sgns_targets` matrix attainable).
      steps: adam steps (one ``lax.scan``).
      learning_rate: adam's.
      seed: for the N(0, init_scale^2) initialisation of both tables.
      init_scale: std of the initial entries.

    Returns:
      ``center_vecs`` [V, D], ``outside_vecs`` [V, D] (numpy) and the loss per step [steps].
    """
    import jax
    import jax.numpy as jnp
    import optax

    cooc = jnp.asarray(cooc_VxV)
    dtype = cooc.dtype if jnp.issubdtype(cooc.dtype, jnp.floating) else jnp.float32
    cooc = cooc.astype(dtype)
    noise = jnp.asarray(noise_V, dtype=dtype)
    v = cooc.shape[0]
    kc, ko = jax.random.split(jax.random.key(seed))
    params = {
        "center_vecs": init_scale * jax.random.normal(kc, (v, dim), dtype),
        "outside_vecs": init_scale * jax.random.normal(ko, (v, dim), dtype),
    }
    tx = optax.adam(learning_rate)

    def loss_fn(p):
        return sgns_expected_loss(p["center_vecs"], p["outside_vecs"], cooc, noise, negative)

    @jax.jit
    def fit(p):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            upd, s = tx.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss

        (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
        return p, losses

    p, losses = fit(params)
    return np.asarray(p["center_vecs"]), np.asarray(p["outside_vecs"]), np.asarray(losses)


def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson r and Spearman rho of two equal-length samples, and their size ``n``."""
    from w2v_jax.evaluate import spearman

    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same size, got {x.shape} and {y.shape}")
    if x.size < 2:
        return {"pearson": math.nan, "spearman": math.nan, "n": int(x.size)}
    return {
        "pearson": float(np.corrcoef(x, y)[0, 1]),
        "spearman": float(spearman(x, y)),
        "n": int(x.size),
    }


def plot_scatter(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
) -> Path:
    """A PNG with one scatter panel per ``(title, x, y)`` and the line y = x."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.2), squeeze=False)
    for ax, (title, x, y) in zip(axes[0], panels, strict=True):
        ax.scatter(x, y, s=4, alpha=0.4)
        if len(x):
            lo, hi = float(min(np.min(x), np.min(y))), float(max(np.max(x), np.max(y)))
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    return _save_figure(fig, path)
