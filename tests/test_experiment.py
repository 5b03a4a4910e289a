"""Tests `../w2v_jax/experiment.py` and the scripts in `../experiments/` on a tiny corpus.

Every script's ``main(argv)`` runs on a synthetic topic corpus (24 words, 1 seed, D = 8), with a
small word-pair file in WordSim format instead of the bundled sets, so the metrics are numbers
and not all "n/a". The PMI test checks the Levy and Goldberg (2014) optimum with full-batch
training on exact counts.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from w2v_jax import config as config_lib
from w2v_jax import experiment as ex

ROOT = Path(__file__).resolve().parent.parent
TOPICS, WORDS_PER_TOPIC = 3, 8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Small and fast: no subsampling (it would drop most of a 24-word corpus), few big batches.
TINY = [
    "--seeds", "1", "--epochs", "2", "--dim", "8",
    "--set", "min_count=1", "--set", "sample=0", "--set", "batch_size=512",
    "--set", "steps_per_call=4", "--analogies", "none",
]  # fmt: skip


def _script(name):
    """Imports ``experiments/<name>.py`` as a module (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A topic corpus (same-topic words share contexts) and a word-pair file that rates
    same-topic pairs 9 and cross-topic pairs 1."""
    d = tmp_path_factory.mktemp("exp_data")
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(300):
        t = rng.integers(TOPICS)
        lines.append(" ".join(f"t{t}w{w}" for w in rng.integers(WORDS_PER_TOPIC, size=10)))
    (d / "corpus.txt").write_text("\n".join(lines) + "\n")
    pairs = []
    for t in range(TOPICS):
        for w in range(0, WORDS_PER_TOPIC, 2):
            pairs.append(f"t{t}w{w}\tt{t}w{w + 1}\t9")
            pairs.append(f"t{t}w{w}\tt{(t + 1) % TOPICS}w{w}\t1")
    pairs.append("t0w0\tnot_a_word\t5")  # OOV pair
    (d / "topics.tsv").write_text("\n".join(pairs) + "\n")
    return d


def _common(data, out):
    return ["--corpus", str(data / "corpus.txt"), "--out", str(out),
            "--pairs", str(data / "topics.tsv"), *TINY]  # fmt: skip


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _assert_png(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, path
    import matplotlib.image

    assert matplotlib.image.imread(path).ndim == 3  # decodes to [H, W, channels]


# ------------------------------------------------------------------------- aggregation


def _row(labels, **metrics):
    return {"labels": labels, "metrics": metrics}


def test_aggregate_mean_and_sample_std():
    rows = [
        _row({"w": 2, "k": 5}, a=1.0, b=10.0),
        _row({"w": 2, "k": 5}, a=2.0, b=None),  # None (NaN in JSON) is left out of b
        _row({"w": 2, "k": 5}, a=3.0, b=14.0),
        _row({"w": 5, "k": 5}, a=7.0, b=1.0),
    ]
    cells = ex.aggregate(rows, by=("w", "k"), metrics=("a", "b"))
    assert [c["labels"] for c in cells] == [{"w": 2, "k": 5}, {"w": 5, "k": 5}]
    first, second = cells
    assert first["n"] == 3 and second["n"] == 1
    assert first["mean"]["a"] == pytest.approx(2.0)
    assert first["std"]["a"] == pytest.approx(1.0)  # ddof=1: sqrt((1 + 0 + 1) / 2)
    assert first["mean"]["b"] == pytest.approx(12.0)
    assert first["std"]["b"] == pytest.approx(np.std([10.0, 14.0], ddof=1))
    assert second["mean"]["a"] == 7.0 and math.isnan(second["std"]["a"])
    table = ex.markdown_table(cells, ["a", "b"])
    assert "| 2 | 5 | 3 | 2.000 ± 1.000 | 12.000 ± 2.828 |" in table
    assert "| 5 | 5 | 1 | 7.000 | 1.000 |" in table  # one seed: no ± std


def test_format_mean_std_large_values_share_format():
    assert ex.format_mean_std(123456.7, 2345.6) == "123,457 ± 2,346"
    assert ex.format_mean_std(float("nan"), 1.0) == "n/a"


def test_bad_flags_raise_one_line_value_errors():
    with pytest.raises(ValueError, match="--set expects FIELD=VALUE"):
        ex.parse_set(["min_count"])
    assert ex.parse_set(["sample=0", "model=cbow", "dynamic_window=false"]) == {
        "sample": 0, "model": "cbow", "dynamic_window": False,
    }  # fmt: skip
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        _script("sweep_window_negatives").main(["--seeds", "0", "--corpus", "x"])
    with pytest.raises(ValueError, match="unknown config field 'windoww'"):
        _script("sweep_window_negatives").main(["--set", "windoww=3", "--corpus", "x"])


# ----------------------------------------------------------------------------- scripts


def test_sweep_writes_rows_table_heatmaps_and_rerun_skips(data, tmp_path, capsys):
    sweep = _script("sweep_window_negatives")
    out = tmp_path / "sweep"
    argv = [*_common(data, out), "--windows", "2", "4", "--negatives", "3"]
    assert sweep.main(argv) == 0
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 2
    assert [(r["config"]["window"], r["config"]["negative"]) for r in rows] == [(2, 3), (4, 3)]
    for r in rows:
        assert r["config"]["dim"] == 8 and r["config"]["epochs"] == 2 and r["seed"] == 1
        assert set(r["versions"]) == {"python", "jax", "numpy", "w2v_jax"}
        m = r["metrics"]
        assert m["topics_oov"] == pytest.approx(1 / 25)  # 1 of 25 pairs has an unknown word
        assert m["topics_spearman"] > 0.5  # topic structure is learned
        assert m["words_per_sec"] > 0 and np.isfinite(m["final_loss"])
        assert len(r["epoch_loss"]) == 2
    table = (out / "table.md").read_text()
    assert "| window | negative | n | topics_spearman |" in table
    assert "| 2 | 3 | 1 |" in table and "| 4 | 3 | 1 |" in table
    for m in ("topics_spearman", "words_per_sec", "final_loss"):
        _assert_png(out / f"heatmap_{m}.png")
    capsys.readouterr()

    assert sweep.main(argv) == 0  # rerun: nothing trains, the file does not grow
    assert len(_rows(out / "results.jsonl")) == 2
    assert capsys.readouterr().out.count("done, skipped") == 2


def test_compare_losses_runs_and_marks_softmax_skipped_past_max_vocab(data, tmp_path, monkeypatch):
    compare = _script("compare_losses")
    out = tmp_path / "losses"
    argv = [*_common(data, out), "--models", "sg", "--losses", "softmax", "hs"]
    assert compare.main(argv) == 0
    rows = _rows(out / "results.jsonl")
    assert [(r["config"]["model"], r["config"]["loss"]) for r in rows] == [
        ("sg", "softmax"), ("sg", "hs"),
    ]  # fmt: skip
    table = (out / "table.md").read_text()
    assert "| sg | softmax | 1 |" in table and "full softmax: V = 24 <= MAX_SOFTMAX_VOCAB" in table
    _assert_png(out / "losses.png")

    monkeypatch.setattr(config_lib, "MAX_SOFTMAX_VOCAB", 10)  # now V = 24 is too large
    assert compare.main(argv) == 0
    assert len(_rows(out / "results.jsonl")) == 2  # softmax not rerun, hs skipped as done
    table = (out / "table.md").read_text()
    assert "| sg | softmax | 0 | n/a |" in table
    assert "skipped: V = 24 > MAX_SOFTMAX_VOCAB = 10" in table


def test_ablations_share_the_baseline_run_for_w_and_w_plus_c(data, tmp_path):
    ablations = _script("ablations")
    out = tmp_path / "abl"
    # The baseline subsamples (t = 0.01 keeps ~73% of this corpus); "off" sets sample=0.
    argv = [*_common(data, out), "--set", "sample=0.01", "--knobs", "vectors", "subsampling"]
    assert ablations.main(argv) == 0
    rows = _rows(out / "results.jsonl")
    # Two trainings (baseline, sample=0); the baseline is evaluated as w and as w + c.
    assert sorted((r["config"]["sample"], r["vectors"]) for r in rows) == [
        (0.0, "in"), (0.01, "in"), (0.01, "sum"),
    ]  # fmt: skip
    base_in = [r for r in rows if r["vectors"] == "in"][0]
    base_sum = [r for r in rows if r["vectors"] == "sum"][0]
    assert base_in["metrics"]["train_seconds"] == base_sum["metrics"]["train_seconds"]
    table = (out / "table.md").read_text()
    for setting in (
        "| vectors | w |",
        "| vectors | w+c |",
        "| subsampling | off |",
        "| subsampling | on (t=0.01) |",
    ):
        assert setting in table
    _assert_png(out / "ablation_vectors.png")
    _assert_png(out / "ablation_subsampling.png")


def test_pmi_check_script_writes_table_scatter_and_row(data, tmp_path):
    pmi = _script("pmi_check")
    out = tmp_path / "pmi"
    argv = ["--corpus", str(data / "corpus.txt"), "--out", str(out), "--epochs", "3",
            "--dim", "16", "--set", "batch_size=512", "--min-pair-count", "20",
            "--fit-steps", "300"]  # fmt: skip
    assert pmi.main(argv) == 0
    (row,) = _rows(out / "results.jsonl")
    assert row["config"]["sample"] == 0.0 and row["config"]["ns_exponent"] == 1.0
    fit = row["metrics"]["full-batch expected loss (Adam)"]
    assert fit["pairs"] > 100 and fit["pearson_vs_optimum"] > 0.99
    assert "| w2v_jax.train (minibatch SGD) |" in (out / "table.md").read_text()
    _assert_png(out / "pmi_scatter.png")


# -------------------------------------------------------------------------------- PMI


def _markov_corpus(v=12, sentences=300, length=20, seed=0):
    """Token ids from a random Markov chain (Dirichlet(0.3) rows: uneven PMI), and offsets."""
    rng = np.random.default_rng(seed)
    trans_VxV = rng.dirichlet(np.full(v, 0.3), size=v)
    ids, starts = [], [0]
    for _ in range(sentences):
        w = rng.integers(v)
        for _ in range(length):
            ids.append(w)
            w = rng.choice(v, p=trans_VxV[w])
        starts.append(len(ids))
    return np.array(ids), np.array(starts)


def test_cooccurrence_counts_match_a_brute_force_loop():
    ids, starts = _markov_corpus(v=5, sentences=6, length=7, seed=1)
    for dynamic in (False, True):
        cooc = ex.cooccurrence_counts(ids, starts, 5, 3, dynamic=dynamic)
        brute = np.zeros((5, 5))
        for s in range(len(starts) - 1):
            sent = ids[starts[s] : starts[s + 1]]
            for i, w in enumerate(sent):
                for j, c in enumerate(sent):
                    d = abs(i - j)
                    if 1 <= d <= 3:
                        brute[w, c] += (3 - d + 1) / 3 if dynamic else 1.0
        np.testing.assert_allclose(cooc, brute)


def test_full_batch_sgns_reaches_shifted_pmi():
    """SGNS's optimum is v_w . u_c = PMI(w, c) - log K (Levy and Goldberg 2014).

    Why the threshold holds: with exact counts and the exact noise expectation the objective
    is sum_{w,c} f_wc(x_wc) with x = C O^T, and D = 16 >= V = 12 lets x be any [V, V] matrix, so
    the minimiser is x_wc = log(#(w,c) / (K #(w) P_n(c))) in every cell. With P_n(c) = #(c)/|D|
    (the column marginals) that target equals PMI - log K to rounding (checked first). Each
    f_wc is strictly convex in x_wc with curvature a b / (a + b) / |D| > 0 (a = #(w,c) >= 10
    here, b = K #(w) P_n(c)), and Adam (lr 0.05, 300 steps, float64) gets every cell within
    0.01 of its target in measurement (max error 0.008); we assert Pearson > 0.999 and a max
    error < 0.05, a 6x margin.
    """
    v, k = 12, 5
    ids, starts = _markov_corpus(v=v)
    cooc = ex.cooccurrence_counts(ids, starts, v, 2)
    assert cooc.min() >= 10  # every pair seen: all targets finite
    noise = cooc.sum(axis=0) / cooc.sum()
    target = ex.sgns_targets(cooc, noise, k)
    np.testing.assert_allclose(target, ex.pmi_matrix(cooc) - np.log(k), atol=1e-12)

    center, outside, losses = ex.fit_sgns_full_batch(
        cooc, noise, k, dim=16, steps=300, learning_rate=0.05
    )
    assert losses[-1] < losses[0]
    dots = center @ outside.T
    r = ex.correlations(dots, target)
    assert r["pearson"] > 0.999 and r["spearman"] > 0.99 and r["n"] == v * v
    assert np.max(np.abs(dots - target)) < 0.05
