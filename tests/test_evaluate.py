"""Tests `../w2v_jax/evaluate.py`: analogies and word pairs agree with gensim, planted answers,
exclusion of question words, OOV counting, case handling, batching, the CLI."""

import json
import math
import sys
import time
import zlib

import numpy as np
import pytest

from w2v_jax import evaluate as ev
from w2v_jax.vectors import Vectors

gensim = pytest.importorskip("gensim")
from gensim.models import KeyedVectors, Word2Vec  # noqa: E402
from gensim.test.utils import datapath  # noqa: E402
from gensim.utils import simple_preprocess  # noqa: E402

GOOGLE = datapath("questions-words.txt")


def _gensim(vec: Vectors) -> KeyedVectors:
    kv = KeyedVectors(vec.dim)
    kv.add_vectors(list(vec.words), np.array(vec.matrix))
    return kv


def _gensim_sections(kv, path, restrict_vocab, case_insensitive=True):
    _, sections = kv.evaluate_word_analogies(
        path, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive
    )
    return [
        (s["section"], len(s["correct"]), len(s["correct"]) + len(s["incorrect"]))
        for s in sections[:-1]  # the last one is gensim's "Total accuracy"
    ]


def _subset(tmp_path, every: int) -> str:
    """Every ``every``-th question of the Google set (all section headers kept): gensim's own
    evaluation loop is slow, the comparison needs variety, not volume."""
    out, k = [], 0
    with open(GOOGLE, encoding="utf-8") as f:
        lines = f.readlines()
    for line in lines:
        if line.startswith(": "):
            out.append(line)
        else:
            k += 1
            if k % every == 0:
                out.append(line)
    path = tmp_path / f"google_every{every}.txt"
    path.write_text("".join(out), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def planted() -> Vectors:
    """Vectors over the Google-set vocabulary where about half the analogies hold.

    Each section s gets a random relation r_s; the word vectors E solve the least-squares problem
    sum over the section pairs (x, y) of |e_y - e_x - r_s|^2 + 0.3^2 |E - E0|^2 (E0 random), then
    get 60% relative noise: 3CosAdd answers ~51% of the questions, so both right and wrong answers
    and near misses are compared. 800 random filler words are shuffled in, and 60 question words
    get a case variant (the vector plus 5% noise), some before and some after the original, so
    case folding and variant exclusion are exercised.
    """
    rng = np.random.default_rng(0)
    d, fillers, variants = 32, 800, 60
    names, questions = ev.parse_analogies(GOOGLE)
    words = sorted({w.lower() for q in questions for w in q[1:]})
    idx = {w: i for i, w in enumerate(words)}
    pairs = sorted(
        {(q[0], q[1].lower(), q[2].lower()) for q in questions}
        | {(q[0], q[3].lower(), q[4].lower()) for q in questions}
    )
    n_w = len(words)
    a = np.zeros((len(pairs) + n_w, n_w))
    b = np.zeros((len(pairs) + n_w, d))
    rel = rng.standard_normal((len(names), d))
    for k, (s, x, y) in enumerate(pairs):
        a[k, idx[y]] += 1.0
        a[k, idx[x]] -= 1.0
        b[k] = rel[s]
    a[len(pairs) :] = 0.3 * np.eye(n_w)
    b[len(pairs) :] = 0.3 * rng.standard_normal((n_w, d))
    e = np.linalg.solve(a.T @ a, a.T @ b)
    scale = np.linalg.norm(e, axis=1, keepdims=True) / np.sqrt(d)
    e += 0.6 * rng.standard_normal(e.shape) * scale
    f = rng.standard_normal((fillers, d)) * np.median(scale)
    all_words = words + [f"filler{i}" for i in range(fillers)]
    m = np.vstack([e, f])
    order = rng.permutation(len(all_words))
    all_words, m = [all_words[i] for i in order], m[order]
    chosen = rng.choice(n_w, variants, replace=False)
    var_words = [words[i].capitalize() for i in chosen]
    var_vecs = e[chosen] + 0.05 * rng.standard_normal((variants, d)) * scale[chosen]
    positions = rng.integers(0, len(all_words), variants)
    for w, v, p in sorted(zip(var_words, var_vecs, positions, strict=True), key=lambda t: -t[2]):
        all_words.insert(p, w)
        m = np.insert(m, p, v, axis=0)
    return Vectors(tuple(all_words), m.astype(np.float32))


@pytest.fixture(scope="module")
def lee() -> Vectors:
    """gensim Word2Vec on lee_background.cor: D = 50, 5 epochs, one worker, fixed seed and a
    fixed string hash (gensim seeds each word's initial vector with ``hash``, which Python
    salts per process), so the vectors are the same on every run."""
    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        sentences = [simple_preprocess(line) for line in f]
    model = Word2Vec(
        sentences,
        vector_size=50,
        epochs=5,
        workers=1,
        seed=1,
        min_count=2,
        hashfxn=lambda s: zlib.crc32(s.encode()),
    )
    return Vectors(tuple(model.wv.index_to_key), model.wv.vectors)


# ----------------------------------------------------------------- agreement with gensim
@pytest.mark.parametrize("restrict_vocab", [30000, 900])
def test_3cosadd_equals_gensim_per_section(planted, tmp_path, restrict_vocab):
    path = _subset(tmp_path, every=4)
    ours = ev.evaluate_analogies(planted, path, restrict_vocab=restrict_vocab)
    theirs = _gensim_sections(_gensim(planted), path, restrict_vocab)
    assert [tuple(s) for s in ours.sections] == theirs
    assert ours.total == sum(t for _, _, t in theirs)
    assert ours.skipped_oov == ours.questions - ours.total
    assert 0.3 < ours.total_accuracy < 0.8  # a real mix of right and wrong answers
    if restrict_vocab == 900:
        assert ours.skipped_oov > 0


def test_3cosadd_equals_gensim_case_sensitive(planted, tmp_path):
    path = _subset(tmp_path, every=8)
    ours = ev.evaluate_analogies(planted, path, restrict_vocab=None, case_insensitive=False)
    theirs = _gensim_sections(_gensim(planted), path, len(planted), case_insensitive=False)
    assert [tuple(s) for s in ours.sections] == theirs
    folded = ev.evaluate_analogies(planted, path, restrict_vocab=None)
    assert 0 < ours.total < folded.total  # capitalised words (Athens, Greece) now miss


def test_lee_vectors_equal_gensim(lee):
    kv = _gensim(lee)
    for restrict_vocab in (30000, 1000):
        ours = ev.evaluate_analogies(lee, "questions-words.txt", restrict_vocab=restrict_vocab)
        assert [tuple(s) for s in ours.sections] == _gensim_sections(kv, GOOGLE, restrict_vocab)
        assert ours.total > 0
    for name in ("wordsim353.tsv", "simlex999.txt"):
        for restrict_vocab in (300000, 500):
            pearson, spearman, oov_pct = kv.evaluate_word_pairs(
                datapath(name), restrict_vocab=restrict_vocab
            )
            ours = ev.evaluate_word_pairs(lee, name, restrict_vocab=restrict_vocab)
            assert ours.spearman == pytest.approx(spearman[0], abs=1e-6)
            assert ours.pearson == pytest.approx(pearson[0], abs=1e-4)  # float32 vs float64 cosines
            assert 100 * ours.oov_ratio == pytest.approx(oov_pct, abs=1e-9)


@pytest.mark.parametrize("case_insensitive", [True, False])
@pytest.mark.parametrize("restrict_vocab", [300000, 400])
def test_pairs_equal_gensim_on_random_vectors(case_insensitive, restrict_vocab):
    """Every word of both sets in the vocabulary (plus case variants), random vectors."""
    words: list[str] = []
    for name in ("wordsim353.tsv", "simlex999.txt"):
        with open(datapath(name), encoding="utf-8") as f:
            lines = f.readlines()
        for line in lines:
            if not line.startswith("#"):
                words += line.split("\t")[:2]
    words = list(dict.fromkeys(words))
    words[5:5] = [w.upper() for w in words[::17]]  # upper-case variants, some more frequent
    words = list(dict.fromkeys(words))
    vec = Vectors(
        tuple(words),
        np.random.default_rng(1).standard_normal((len(words), 20)).astype(np.float32),
    )
    kv = _gensim(vec)
    for name in ("wordsim353.tsv", "simlex999.txt"):
        _, spearman, oov_pct = kv.evaluate_word_pairs(
            datapath(name), restrict_vocab=restrict_vocab, case_insensitive=case_insensitive
        )
        ours = ev.evaluate_word_pairs(
            vec, name, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive
        )
        assert ours.spearman == pytest.approx(spearman[0], abs=1e-6)
        assert 100 * ours.oov_ratio == pytest.approx(oov_pct, abs=1e-9)


# ------------------------------------------------------------- reference implementation
def _reference(vec: Vectors, path: str, restrict_vocab: int, method: str) -> list[bool]:
    """One question at a time in float64 numpy: the textbook definitions."""
    n = min(restrict_vocab, len(vec))
    u = vec.matrix[:n].astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    first: dict[str, int] = {}
    for i, w in enumerate(vec.words[:n]):
        first.setdefault(w.upper(), i)
    canon = np.array([first[w.upper()] for w in vec.words[:n]])
    out = []
    for _, *qs in ev.parse_analogies(path)[1]:
        if any(w.upper() not in first for w in qs):
            continue
        a, b, c, d = (first[w.upper()] for w in qs)
        cos = u @ u[[a, b, c]].T
        if method == "3cosadd":
            score = cos[:, 1] - cos[:, 0] + cos[:, 2]
        else:
            s = (cos + 1) / 2
            score = s[:, 1] * s[:, 2] / (s[:, 0] + 1e-3)
        score[np.isin(canon, [a, b, c])] = -np.inf
        out.append(canon[np.argmax(score)] == d)
    return out


@pytest.mark.parametrize("method", ev.METHODS)
def test_matches_float64_reference(planted, tmp_path, method):
    path = _subset(tmp_path, every=10)
    ours = ev.evaluate_analogies(planted, path, restrict_vocab=1500, method=method)
    ref = _reference(planted, path, 1500, method)
    assert ours.total == len(ref)
    # float32 vs float64 scores may swap a near-tie; allow at most 0.5% of the questions.
    assert abs(ours.correct - sum(ref)) <= max(1, len(ref) // 200)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_batching_and_column_chunks_do_not_change_answers(
    planted, tmp_path, batch_size, monkeypatch
):
    path = _subset(tmp_path, every=29)
    base = ev.evaluate_analogies(planted, path, method="3cosmul")
    # A tiny table budget forces 1024-column chunks with a padded last chunk.
    monkeypatch.setattr(ev, "_TABLE_ELEMENTS", 1)
    chunked = ev.evaluate_analogies(planted, path, method="3cosmul", batch_size=batch_size)
    assert chunked.sections == base.sections


# --------------------------------------------------------------------- planted and edge
def _tiny() -> Vectors:
    # king = man + royal, queen = woman + royal + an extra component. The closest word to
    # king - man + woman is "woman" (cosine 0.79, queen 0.66), so the planted answer comes out
    # only if the question words are excluded; 3CosMul scores queen 0.995 and the
    # other non-question words at most 0.57.
    rows = {
        "man": [1.0, 0.0, 0.0, 0.0],
        "woman": [0.0, 1.0, 0.0, 0.0],
        "king": [1.0, 0.0, 1.0, 0.0],
        "queen": [0.0, 1.0, 1.0, 1.5],
        "apple": [0.0, 0.0, -1.0, 1.0],
        "river": [0.0, 0.0, 0.2, -1.0],
        "prince": [1.0, 0.0, 0.8, 0.5],
    }
    return Vectors(tuple(rows), np.array(list(rows.values()), dtype=np.float32))


@pytest.mark.parametrize("method", ev.METHODS)
def test_planted_king_queen(tmp_path, method):
    vec = _tiny()
    path = tmp_path / "q.txt"
    path.write_text(": royal\nman king woman queen\n: gram-royal\nMAN King Woman QUEEN\n")
    r = ev.evaluate_analogies(vec, path, method=method)
    assert [tuple(s) for s in r.sections] == [("royal", 1, 1), ("gram-royal", 1, 1)]
    assert (r.semantic_accuracy, r.syntactic_accuracy, r.total_accuracy) == (1.0, 1.0, 1.0)
    # Without the exclusion the best word would be a question word:
    u = vec.normalized()
    assert vec.words[int(np.argmax(u @ (u[2] - u[0] + u[1])))] == "woman"


def test_question_words_and_their_case_variants_are_excluded(tmp_path):
    base = _tiny()
    words = (*base.words, "KING")
    m = np.vstack([base.matrix, base["king"] * 1.01])  # a variant right on the target
    vec = Vectors(words, m)
    path = tmp_path / "q.txt"
    path.write_text(": x\nman man king king\nman king woman queen\n")
    r = ev.evaluate_analogies(vec, path)
    # man:man :: king:? has target = king; king and KING are both excluded, so never correct.
    assert [tuple(s) for s in r.sections] == [("x", 1, 2)]
    assert _gensim_sections(_gensim(vec), str(path), 30000) == [("x", 1, 2)]


def test_oov_counting_and_sections(tmp_path):
    vec = _tiny()
    path = tmp_path / "q.txt"
    path.write_text(
        ": capital-common-countries\n"
        "man king woman queen\n"
        "man king woman unicorn\n"  # OOV
        "bad line\n"  # invalid: not counted at all
        ": gram1-adjective-to-adverb\n"
        "man king woman queen\n"
        "man king prince queen\n"  # prince is OOV once restricted to the first 6 words
        ": empty\n"
    )
    r = ev.evaluate_analogies(vec, path, restrict_vocab=6)
    assert r.questions == 4 and r.skipped_oov == 2 and r.total == 2
    assert [tuple(s) for s in r.sections] == [
        ("capital-common-countries", 1, 1),
        ("gram1-adjective-to-adverb", 1, 1),
        ("empty", 0, 0),
    ]
    assert (r.semantic_total, r.syntactic_total) == (1, 1)
    assert r.oov_ratio == 0.5
    assert math.isnan(r.sections[2].accuracy)
    d = r.as_dict()
    assert d["sections"][2]["accuracy"] is None and json.dumps(d)
    r_all = ev.evaluate_analogies(vec, path, restrict_vocab=None)
    assert r_all.skipped_oov == 1


def test_case_insensitivity(tmp_path):
    vec = _tiny()
    path = tmp_path / "q.txt"
    path.write_text(": royal\nMAN KING WOMAN QUEEN\n")
    assert ev.evaluate_analogies(vec, path).correct == 1
    r = ev.evaluate_analogies(vec, path, case_insensitive=False)
    assert (r.total, r.skipped_oov) == (0, 1) and math.isnan(r.total_accuracy)


def test_google_sections_split_semantic_syntactic(lee):
    r = ev.evaluate_analogies(lee, "google")
    names = [s.name for s in r.sections]
    assert len(names) == 14 and r.questions == 19544
    assert [s.name for s in r.sections if s.semantic] == [
        "capital-common-countries",
        "capital-world",
        "currency",
        "city-in-state",
        "family",
    ]
    assert r.semantic_total + r.syntactic_total == r.total


def test_missing_header_and_bad_method(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("\nman king woman queen\n")
    with pytest.raises(ValueError, match="before any ': section' header"):
        ev.evaluate_analogies(_tiny(), path)
    with pytest.raises(ValueError, match="method must be one of"):
        ev.evaluate_analogies(_tiny(), path, method="3cosavg")


def test_google_set_over_30k_words_in_seconds():
    """The whole Google set against 30,000 x 100 vectors, 3CosMul (3CosAdd costs the same: both
    read one shared cosine table): about 2 CPU-seconds. The bound is loose so that a busy CI
    machine does not fail it; a matmul per question batch took 10-30 s here."""
    names, questions = ev.parse_analogies(GOOGLE)
    words = sorted({w.lower() for q in questions for w in q[1:]})
    words += [f"filler{i}" for i in range(30000 - len(words))]
    rng = np.random.default_rng(2)
    vec = Vectors(tuple(words), rng.standard_normal((30000, 100)).astype(np.float32))
    t0 = time.perf_counter()
    r = ev.evaluate_analogies(vec, method="3cosmul")
    assert time.perf_counter() - t0 < 60.0
    assert (r.total, r.skipped_oov) == (19544, 0)


# ------------------------------------------------------------------------- word pairs
def test_pairs_parsing_like_gensim(tmp_path):
    vec = _tiny()
    path = tmp_path / "p.tsv"
    path.write_text(
        "# comment\nman\twoman\t3.0\nking\tqueen\t8.5\nking\tprince\t9\n"
        "apple\triver\t0.5\nman\tunicorn\t1.0\nnot a pair\nman\tking\tnan?\n"
        "Queen\tWOMAN\t4\n"
    )
    r = ev.evaluate_word_pairs(vec, path)
    assert (r.pairs_used, r.oov_pairs) == (5, 1)
    assert r.oov_ratio == pytest.approx(1 / 6)
    _, spearman, oov_pct = _gensim(vec).evaluate_word_pairs(str(path))
    assert r.spearman == pytest.approx(spearman[0], abs=1e-6)
    ws = tmp_path / "p.txt"
    ws.write_text("man woman 3.0\nking  queen 8.5\napple river 0.5\n")
    assert ev.evaluate_word_pairs(vec, ws, delimiter=None).pairs_used == 3
    assert ev.evaluate_word_pairs(vec, ws).pairs_used == 0  # gensim's tab split
    none = ev.evaluate_word_pairs(vec, ws)
    assert math.isnan(none.spearman) and none.as_dict()["spearman"] is None


def test_spearman_with_ties_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 40).astype(float)
    y = x + rng.integers(0, 3, 40)
    assert ev.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


# --------------------------------------------------------------------- data sets, CLI
def test_resolve_dataset(tmp_path, monkeypatch):
    for name in ev.BUNDLED:
        assert ev.resolve_dataset(name) == datapath(name)
    assert ev.resolve_dataset("simlex") == datapath("simlex999.txt")
    own = tmp_path / "mine.txt"
    own.write_text(": a\n")
    assert ev.resolve_dataset(own) == str(own)
    with pytest.raises(FileNotFoundError, match="not a bundled data set name"):
        ev.resolve_dataset("men3000.txt")
    monkeypatch.setitem(sys.modules, "gensim", None)  # as if gensim were not installed
    with pytest.raises(ImportError, match="comes with gensim"):
        ev.resolve_dataset("wordsim353.tsv")


def test_evaluate_all_keys(lee):
    out = ev.evaluate_all(lee, restrict_vocab=2000)
    assert set(out) == {
        "analogy_total",
        "analogy_semantic",
        "analogy_syntactic",
        "analogy_oov",
        "wordsim353_spearman",
        "wordsim353_oov",
        "simlex999_spearman",
        "simlex999_oov",
    }


def test_cli_report(tmp_path, capsys, lee):
    vec_path = tmp_path / "vectors.bin"
    lee.save_word2vec_format(vec_path, binary=True)
    js = tmp_path / "r.json"
    rc = ev.eval_main(
        [
            "--vectors",
            str(vec_path),
            "--analogies",
            "questions-words.txt",
            "--pairs",
            "wordsim353.tsv",
            "simlex999.txt",
            "--method",
            "both",
            "--restrict-vocab",
            "2000",
            "--json",
            str(js),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    for text in (
        "capital-world",
        "gram8-plural",
        "semantic",
        "syntactic",
        "total",
        "skipped (OOV)",
        "3cosadd",
        "3cosmul",
        "Spearman",
        "wordsim353.tsv",
    ):
        assert text in out
    report = json.loads(js.read_text())
    assert len(report["analogies"]) == 2 and len(report["pairs"]) == 2
    ours = ev.evaluate_word_pairs(lee, "simlex999.txt")
    assert report["pairs"][1]["spearman"] == pytest.approx(ours.spearman, abs=1e-12)


def test_cli_errors(tmp_path, capsys):
    assert ev.eval_main(["--vectors", str(tmp_path / "missing.bin")]) == 2
    assert "error" in capsys.readouterr().err
    vec_path = tmp_path / "v.txt"
    _tiny().save_word2vec_format(vec_path, binary=False)
    assert ev.eval_main(["--vectors", str(vec_path), "--text", "--pairs", "nope.tsv"]) == 2
    assert "not a bundled data set name" in capsys.readouterr().err


# ------------------------------------------------------------------- defensive reading
def test_undecodable_data_files_name_file_and_line(tmp_path):
    pairs = tmp_path / "p.tsv"
    pairs.write_bytes(b"man\tking\t3.5\nwoman\tqu\xffeen\t2.0\n")
    with pytest.raises(ValueError, match=r"p.tsv:2: cannot decode as utf-8"):
        ev.evaluate_word_pairs(_tiny(), pairs)
    questions = tmp_path / "q.txt"
    questions.write_bytes(b": family\nman king woman queen\n\xe9 king woman queen\n")
    with pytest.raises(ValueError, match=r"q.txt:3: cannot decode as utf-8"):
        ev.evaluate_analogies(_tiny(), questions)


def test_non_finite_pair_score_is_an_error(tmp_path):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("man\tking\t3.5\nwoman\tqueen\tnan\n")
    with pytest.raises(ValueError, match=r"p.tsv:2: the score nan is not a finite number"):
        ev.evaluate_word_pairs(_tiny(), pairs)


def test_cli_bad_vectors_file_is_one_line_or_a_traceback_with_debug(tmp_path, capsys):
    path = tmp_path / "v.txt"  # header D=5, rows of 4: used to load as binary garbage
    path.write_bytes(b"2 5\na 1.5 2.5 3.5 4.5\nb 5.5 6.5 7.5 8.5\n")
    assert ev.eval_main(["--vectors", str(path), "--pairs", "x.tsv"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:2: 4 values after the word 'a'" in err
    with pytest.raises(ValueError, match="4 values after"):
        ev.eval_main(["--vectors", str(path), "--pairs", "x.tsv", "--debug"])
