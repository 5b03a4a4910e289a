"""Fixed-shape training batches for skip-gram and CBOW, built with vectorised numpy.

The encoded corpus is processed in chunks of whole sentences of about ``cfg.chunk_tokens``
tokens each (a sentence longer than that is a chunk of its own), in corpus order, every epoch.
For chunk ``c`` of epoch ``e`` a numpy Generator seeded with ``[seed, e, c]`` draws, in order:

1. the subsampling mask, one uniform per token against :func:`~w2v_jax.sampling.keep_probs`
   (fresh every epoch); dropped tokens are removed *before* windowing, as in word2vec.c, so the
   window reaches past them;
2. the effective radius ``b ~ U{1..W}`` per kept center (word2vec.c ``b = next_random % window``
   gives radius ``W - b``), or ``b = W`` with ``dynamic_window=False``;
3. the shuffle of the chunk's examples within each span of ``cfg.shuffle_tokens`` corpus
   tokens (below), one span after the other.

Skip-gram: every (center, context) with ``1 <= |j| <= b(center)`` inside one sentence, built with
one vectorised pass per offset ``j`` (never a loop over tokens). Under the dynamic window an
offset ``|j|`` is used with probability ``(W - |j| + 1) / W``. CBOW: one example per kept center
with its up to ``2W`` context ids (slots ``-W..-1, +1..+W``) and a mask; centers without any
context are dropped (word2vec.c skips ``cw == 0``).

Each chunk's examples are shuffled and cut into batches of ``batch_size``; the last batch *of
each chunk* is padded with ``mask = 0`` rows whose ids are 0. Padding per chunk keeps chunks
independent, so :class:`Position` ``(epoch, chunk, batch)`` is a complete resume point: the
chunk is regenerated from its seed and ``batch`` batches are skipped. The waste is under one batch
per chunk (<0.2% at the default 1M-token chunk and B = 4096).

The shuffle stays near corpus order, the order word2vec.c reads its file in: the examples of the
centers in each span of ``shuffle_tokens`` corpus tokens (counted before subsampling) are
shuffled together, spans follow each other in corpus order, and a batch may join the end of one
span to the start of the next. A span of 65536 tokens matched word2vec's quality both on text
whose topics come in blocks and on an encyclopedia sample, where shuffling whole chunks fell
behind on the first (BENCHMARKS.md). ``shuffle_tokens = 0`` (or a span as long as the chunk)
shuffles each whole chunk as one span, as follows.

A whole chunk's shuffle is uniform over the chunk but cache-friendly. Skip-gram pairs are packed as
``center << bits | context`` into uint64 and built per block of 32768 kept centers; each block is
shuffled by one in-place sort on random bits placed above the pair; batch ``b`` then takes from
each block's shuffled stream a count drawn from the multivariate hypergeometric distribution of
what is left, which is exactly how consecutive batches of a uniform shuffle of all the chunk's
pairs split between the blocks (rows inside a batch come grouped by block; a batch is a set).
CBOW permutes the kept centers and gathers each batch's windows on demand.

Progress counts raw corpus tokens (before unknown-word dropping and subsampling), as gensim does
(word2vec.c counts in-vocabulary tokens in ``word_count_actual``; the fraction is the same up to
the OOV rate's variation along the corpus): after batch ``b`` of ``n`` in chunk ``c``,
``words_done = e * raw_words + raw(chunks < c) + raw(chunk c) * (b + 1) // n``. A chunk that
yields no batch (everything subsampled away) adds its words to the next batch's count; if the
run's last chunks yield none, the last ``progress`` stays below 1.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from w2v_jax.config import DataConfig
from w2v_jax.corpus import CorpusSlices, EncodedCorpus, chunk_bounds, cut_encoded, slice_bounds
from w2v_jax.sampling import keep_probs
from w2v_jax.vocab import Vocab

__all__ = [
    "BatchInfo",
    "CBOWBatch",
    "EncodedCorpus",
    "Position",
    "SkipGramBatch",
    "START",
    "SliceStep",
    "cbow_windows",
    "chunk_bounds",
    "iterate_batches",
    "iterate_slices",
    "prefetch",
    "skipgram_pairs",
    "slice_bounds",
]

MODELS = ("sg", "cbow")


class SkipGramBatch(NamedTuple):
    """``center`` [B] int32 (input word c), ``context`` [B] int32 (outside word o), ``mask`` [B]."""

    center: np.ndarray
    context: np.ndarray
    mask: np.ndarray


class CBOWBatch(NamedTuple):
    """``center`` [B] int32 (word predicted), ``context`` [B, 2W] int32, masks float32."""

    center: np.ndarray
    context: np.ndarray
    context_mask: np.ndarray
    mask: np.ndarray


class Position(NamedTuple):
    """Where a stream (re)starts: batch ``batch`` of chunk ``chunk`` of epoch ``epoch``."""

    epoch: int
    chunk: int
    batch: int


class BatchInfo(NamedTuple):
    """``position``: where a stream resumed after this batch starts; ``words_done``: raw tokens
    consumed so far over all epochs; ``progress`` = words_done / (epochs * raw_words)."""

    position: Position
    words_done: int
    progress: float


START = Position(0, 0, 0)


def _sentence_ids(starts: np.ndarray) -> np.ndarray:
    lens = np.diff(starts)
    return np.repeat(np.arange(lens.shape[0], dtype=np.int32), lens)


def _chunk_tokens(corpus, keep, s0, s1, cfg, rng, vocab_size):
    """Kept tokens [n] int32, how far each reaches forward/backward (steps 1 and 2), and the
    shuffle's spans.

    ``reach_fwd[i]`` = min(radius of center i, tokens after i in its sentence), likewise
    ``reach_bwd`` towards the sentence start, so offset +j is used iff ``reach_fwd[i] >= j``.
    ``cuts`` [k + 1]: kept tokens ``cuts[s] .. cuts[s + 1]`` are those of the chunk's tokens
    ``s * shuffle_tokens ..`` before subsampling (one span, ``[0, n]``, if it is the whole chunk).
    """
    starts = corpus.sentence_starts[s0 : s1 + 1]
    tokens = np.asarray(corpus.ids[starts[0] : starts[-1]], dtype=np.int32)
    sid = _sentence_ids(starts - starts[0])
    if tokens.shape[0] and (int(tokens.max()) >= vocab_size or int(tokens.min()) < 0):
        raise ValueError(
            f"corpus ids outside [0, {vocab_size}): encode the corpus with this vocabulary"
        )
    raw, span = tokens.shape[0], cfg.shuffle_tokens
    starts_S = np.arange(0, raw, span) if 0 < span < raw else np.zeros(1, np.int64)
    if keep is not None:
        m = rng.random(tokens.shape[0], dtype=np.float32) < keep[tokens]
        tokens, sid = tokens[m], sid[m]
        kept_S = np.add.reduceat(m, starts_S, dtype=np.int64) if raw else np.zeros(1, np.int64)
    else:
        kept_S = np.diff(np.append(starts_S, raw))
    cuts = np.concatenate([[0], np.cumsum(kept_S)]).astype(np.int64)
    radius = None
    if cfg.dynamic_window:
        radius = rng.integers(1, cfg.window + 1, size=tokens.shape[0], dtype=_rtype(cfg.window))
    reach_fwd, reach_bwd = _reach(sid, radius, cfg.window)
    return tokens, reach_fwd, reach_bwd, cuts


def _rtype(window: int):
    return np.int16 if window < np.iinfo(np.int16).max else np.int32


def _reach(sid: np.ndarray, radius: np.ndarray | None, window: int):
    """Per token: how many offsets it uses forward and backward (radius clipped by sentence)."""
    n = sid.shape[0]
    new = np.flatnonzero(sid[1:] != sid[:-1]) + 1  # first token of each sentence but the first
    seg = np.zeros(n, dtype=np.int64)
    seg[new] = 1
    np.cumsum(seg, out=seg)
    pos = np.arange(n, dtype=np.int64)
    to_end = np.concatenate([new, [n]])[seg] - 1 - pos
    from_start = pos - np.concatenate([[0], new])[seg]
    rt = _rtype(window)
    fwd = np.minimum(to_end, window).astype(rt)
    bwd = np.minimum(from_start, window).astype(rt)
    if radius is not None:
        np.minimum(fwd, radius, out=fwd)
        np.minimum(bwd, radius, out=bwd)
    return fwd, bwd


def _id_bits(vocab_size: int) -> int:
    return max(1, int(vocab_size - 1).bit_length())


def _skipgram_packed(
    tokens: np.ndarray, reach_fwd, reach_bwd, window: int, bits: int, lo: int, hi: int
) -> np.ndarray:
    """Pairs of the centers in ``[lo, hi)`` packed as ``center << bits | context``: [P] uint64.

    Order: offset +1, -1, +2, -2, ... (unshuffled). One vectorised pass per offset.
    """
    n = tokens.shape[0]
    tok = tokens.astype(np.uint64)
    parts = []
    for j in range(1, window + 1):
        end = min(hi, n - j)  # center i, context i + j
        if end > lo:
            parts.append((lo, end, tok[lo + j : end + j], reach_fwd[lo:end] >= j))
        start = max(lo, j)  # center i, context i - j
        if hi > start:
            parts.append((start, hi, tok[start - j : hi - j], reach_bwd[start:hi] >= j))
    counts = [int(np.count_nonzero(m)) for *_, m in parts]
    packed = np.empty(sum(counts), dtype=np.uint64)
    cpart = tok[lo:hi] << np.uint64(bits)
    o = 0
    for (a, b, ctx, m), k in zip(parts, counts, strict=True):
        out = packed[o : o + k]
        np.compress(m, cpart[a - lo : b - lo], out=out)
        out |= np.compress(m, ctx)
        o += k
    return packed


def _unpack(packed: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.uint64((1 << bits) - 1)
    center = ((packed >> np.uint64(bits)) & mask).astype(np.int32)
    context = (packed & mask).astype(np.int32)
    return center, context


def skipgram_pairs(
    tokens: np.ndarray, sid: np.ndarray, radius: np.ndarray | None, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """All (center, context) pairs, unshuffled: center [P] int32, context [P] int32.

    Args:
      tokens: [n] int32 ids (after subsampling).
      sid: [n] non-decreasing sentence id of each token; pairs never join two sentences.
      radius: [n] effective radius per center, or None for the fixed window W.
      window: W.
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    reach_fwd, reach_bwd = _reach(np.asarray(sid), radius, window)
    bits = _id_bits(int(tokens.max(initial=0)) + 1)
    packed = _skipgram_packed(tokens, reach_fwd, reach_bwd, window, bits, 0, tokens.shape[0])
    return _unpack(packed, bits)


def _cbow_gather(tokens, reach_fwd, reach_bwd, pos: np.ndarray, window: int):
    """CBOW rows for centers at ``pos``: center, context [m, 2W] int32, context_mask [m, 2W] f32.

    Slot ``W - j`` holds offset ``-j`` and slot ``W + j - 1`` offset ``+j``.
    """
    n = tokens.shape[0]
    m = pos.shape[0]
    ctx = np.zeros((m, 2 * window), dtype=np.int32)
    cmask = np.zeros((m, 2 * window), dtype=np.float32)
    rf, rb = reach_fwd[pos], reach_bwd[pos]
    for j in range(1, window + 1):
        ok = rb >= j
        ctx[:, window - j] = np.where(ok, tokens[np.maximum(pos - j, 0)], 0)
        cmask[:, window - j] = ok
        ok = rf >= j
        ctx[:, window + j - 1] = np.where(ok, tokens[np.minimum(pos + j, n - 1)], 0)
        cmask[:, window + j - 1] = ok
    return tokens[pos], ctx, cmask


def cbow_windows(
    tokens: np.ndarray, sid: np.ndarray, radius: np.ndarray | None, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CBOW examples in corpus order: center [m], context [m, 2W] int32, context_mask [m, 2W].

    Unused slots are 0 with mask 0. Centers with no context are dropped.
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    reach_fwd, reach_bwd = _reach(np.asarray(sid), radius, window)
    pos = np.flatnonzero((reach_fwd > 0) | (reach_bwd > 0))
    return _cbow_gather(tokens, reach_fwd, reach_bwd, pos, window)


def _random_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) (int64): sort ``random_bits << b | i``.

    Ties of the random part (probability ~ n^2 / 2^(65 - b)) keep index order.
    """
    b = max(1, int(n).bit_length())
    keys = rng.bit_generator.random_raw(n)
    keys <<= np.uint64(b)
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    keys &= np.uint64((1 << b) - 1)
    return keys.view(np.int64)


def _shuffle_packed(rng: np.random.Generator, packed: np.ndarray, bits: int) -> None:
    """Shuffles packed pairs in place: random bits above the 2*bits of the pair, then one sort.

    An in-place uint64 sort of a cache-sized block is several times faster than
    ``Generator.shuffle``. Pairs whose random parts tie (``64 - 2*bits`` bits) come out ordered by
    (center, context). The random bits stay in the high bits; :func:`_unpack` masks them off.
    """
    if 64 - 2 * bits < 20:  # ids too wide to leave a useful random key: plain shuffle
        rng.shuffle(packed)
        return
    keys = rng.bit_generator.random_raw(packed.shape[0])
    keys <<= np.uint64(2 * bits)
    packed |= keys
    packed.sort()


def _compositions(rng: np.random.Generator, sizes: list[int], batch_size: int) -> np.ndarray:
    """[nb, S] rows: how many items batch b takes from each of S shuffled streams.

    Drawn batch after batch from the multivariate hypergeometric distribution of what is left,
    which is exactly the composition of consecutive batches of a uniform shuffle of the union.
    """
    left = np.asarray(sizes, dtype=np.int64)
    total = int(left.sum())
    nb = -(-total // batch_size)
    out = np.zeros((nb, left.shape[0]), dtype=np.int64)
    if nb > 0 and left.shape[0] == 1:
        out[:, 0] = batch_size
        out[-1, 0] = total - batch_size * (nb - 1)
        return out
    for b in range(nb):
        take = min(batch_size, int(left.sum()))
        out[b] = rng.multivariate_hypergeometric(left, take, method="marginals")
        left -= out[b]
    return out


def _check(cfg: DataConfig, batch_size: int, seed: int, model: str, epochs: int) -> None:
    if cfg.window < 1:
        raise ValueError(f"--window must be >= 1, got {cfg.window}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {model!r}")
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if cfg.chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {cfg.chunk_tokens}")


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size,) + a.shape[1:], dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


_BLOCK_CENTERS = 1 << 15  # skip-gram pairs are built and shuffled per block of kept tokens


def _chunk_batches(corpus, keep, s0, s1, cfg, rng, batch_size, model, bits, vocab_size):
    """Number of batches of one chunk and a function building batch b (shuffled).

    Skip-gram: the pairs of each span's kept centers are built and shuffled, and batches take
    the spans' streams one after the other. With the whole chunk as one span the pairs are built
    and shuffled per block of ``_BLOCK_CENTERS`` kept centers (cache-sized), and every batch takes
    a multivariate-hypergeometric share from each block's shuffled stream: the batches are those
    of a uniform shuffle of all the chunk's pairs.
    CBOW: the kept centers with context are permuted span by span and each batch gathers its
    windows.
    """
    tokens, reach_fwd, reach_bwd, cuts = _chunk_tokens(corpus, keep, s0, s1, cfg, rng, vocab_size)
    n = tokens.shape[0]
    w = cfg.window
    if model == "sg":
        spans = cuts.shape[0] > 2
        bounds = cuts.tolist() if spans else [*range(0, n, _BLOCK_CENTERS), n]
        streams = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            packed = _skipgram_packed(tokens, reach_fwd, reach_bwd, w, bits, lo, hi)
            _shuffle_packed(rng, packed, bits)
            streams.append(packed)
        if spans:
            return _consecutive_batches(streams, batch_size, bits)
        comp = _compositions(rng, [s.shape[0] for s in streams], batch_size)
        nb = comp.shape[0]
        # Python lists: a batch slices every block, and numpy scalar indexing would cost more
        # than the slices themselves.
        starts = (np.cumsum(comp, axis=0) - comp).tolist()
        comp = comp.tolist()

        def make(b: int) -> SkipGramBatch:
            lo, take = starts[b], comp[b]
            parts = [streams[s][lo[s] : lo[s] + c] for s, c in enumerate(take) if c]
            return _skipgram_batch(np.concatenate(parts), bits, batch_size)

        return nb, make

    pos = np.flatnonzero((reach_fwd > 0) | (reach_bwd > 0))
    at = np.searchsorted(pos, cuts)  # each span's centers, permuted within the span
    for a, b in zip(at[:-1].tolist(), at[1:].tolist(), strict=True):
        pos[a:b] = pos[a:b][_random_order(rng, b - a)]
    nb = -(-pos.shape[0] // batch_size)

    def make_cbow(b: int) -> CBOWBatch:
        p = pos[b * batch_size : (b + 1) * batch_size]
        center, ctx, cmask = _cbow_gather(tokens, reach_fwd, reach_bwd, p, w)
        mask = np.ones(batch_size, dtype=np.float32)
        if p.shape[0] < batch_size:
            mask[p.shape[0] :] = 0.0
            center, ctx, cmask = (_pad(x, batch_size) for x in (center, ctx, cmask))
        return CBOWBatch(center=center, context=ctx, context_mask=cmask, mask=mask)

    return nb, make_cbow


def _consecutive_batches(streams: list[np.ndarray], batch_size: int, bits: int):
    """Number of batches and a function building batch b, for skip-gram pairs that come in the
    order of ``streams`` (packed, each already shuffled): batch b holds pairs ``b B .. (b+1) B``
    of their concatenation, which is never built (a batch joins at most the streams it spans)."""
    ends = np.cumsum([s.shape[0] for s in streams]).tolist()
    total = ends[-1] if ends else 0
    nb = -(-total // batch_size)

    def make(b: int) -> SkipGramBatch:
        lo, hi = b * batch_size, min(total, (b + 1) * batch_size)
        parts, begin = [], 0
        for s, end in enumerate(ends):
            if end > lo and begin < hi:
                parts.append(streams[s][max(lo, begin) - begin : min(hi, end) - begin])
            begin = end
        return _skipgram_batch(np.concatenate(parts), bits, batch_size)

    return nb, make


def _skipgram_batch(packed: np.ndarray, bits: int, batch_size: int) -> SkipGramBatch:
    """The batch of ``packed`` pairs [P <= B], padded to ``batch_size`` with masked rows."""
    center, context = _unpack(packed, bits)
    mask = np.ones(batch_size, dtype=np.float32)
    if center.shape[0] < batch_size:
        mask[center.shape[0] :] = 0.0
        center, context = _pad(center, batch_size), _pad(context, batch_size)
    return SkipGramBatch(center=center, context=context, mask=mask)


def iterate_batches(
    corpus: EncodedCorpus,
    vocab: Vocab,
    cfg: DataConfig,
    *,
    batch_size: int,
    seed: int,
    model: str,
    epochs: int,
    start: Position = START,
) -> Iterator[tuple[SkipGramBatch | CBOWBatch, BatchInfo]]:
    """Yields ``(batch, info)`` for ``epochs`` passes over ``corpus`` (numpy arrays).

    Args:
      corpus: the encoded corpus (ids must index ``vocab``).
      vocab: gives the counts for subsampling.
      cfg: window, dynamic_window, sample, subsample_rule, chunk_tokens.
      batch_size: B rows per batch (pairs for "sg", windows for "cbow").
      seed: base seed (>= 0); chunk c of epoch e uses ``np.random.default_rng([seed, e, c])``.
      model: "sg" or "cbow".
      epochs: passes over the corpus.
      start: resume point (``BatchInfo.position`` of the last batch consumed).
    """
    _check(cfg, batch_size, seed, model, epochs)
    plan = _Plan.make(cut_encoded(corpus, 1, cfg.chunk_tokens), vocab, cfg, model=model)
    total = max(1, epochs * corpus.raw_words)
    for batch, after, words in plan.stream(0, Position(*start), batch_size, seed, epochs):
        yield batch, BatchInfo(after, words, words / total)


class SliceStep(NamedTuple):
    """One step of :func:`iterate_slices`, per slice it read (in slice order): ``positions``,
    where each resumes after this step, and ``words_done``, the raw tokens of that slice consumed
    over all epochs so far. ``real``: some slice gave a batch (else the step is all padding)."""

    positions: tuple[Position, ...]
    words_done: tuple[int, ...]
    real: bool


def iterate_slices(
    corpus: EncodedCorpus | CorpusSlices,
    vocab: Vocab,
    cfg: DataConfig,
    *,
    batch_size: int,
    seed: int,
    model: str,
    epochs: int,
    slices: int,
    read: range | None = None,
    start: tuple[Position, ...] | None = None,
    pad_forever: bool = False,
) -> Iterator[tuple[SkipGramBatch | CBOWBatch, SliceStep]]:
    """The batch stream of a corpus read in ``slices`` slices at once (multi-host input).

    The corpus comes cut into slices (:class:`~w2v_jax.corpus.CorpusSlices`, e.g. read by byte
    slices with :func:`~w2v_jax.corpus.prepare_slices`), or whole, and is then cut into
    ``slices`` runs of whole sentences of about equal tokens (:func:`slice_bounds`). Each slice
    is cut into chunks exactly as :func:`iterate_batches` cuts a corpus, chunks numbered over the
    whole corpus (chunk c of epoch e still draws from ``default_rng([seed, e, c])``). Each slice
    gives a stream of sub-batches of ``batch_size // slices`` rows through all epochs on its
    own, and step k's batch is the k-th sub-batch of every slice, in slice order: rows
    ``[s*B/S, (s+1)*B/S)`` come from slice s, so a process whose devices hold those rows reads
    only slice s. A slice whose epochs are done gives ``mask = 0`` padding until the others are
    done too. With ``slices=1`` this is the stream of
    :func:`iterate_batches`, batch for batch.

    Args:
      corpus: the slices (those in ``read`` held), or the whole encoded corpus.
      batch_size: B, the whole step's rows over all slices (a multiple of ``slices``).
      slices: S, the number of slices (a multi-host run uses one per process, see the trainer).
      read: the slices this caller reads (default all); the batch holds their rows only.
      start: one resume position per slice read (default: the start of every one).
      pad_forever: keep yielding padding steps (``real=False``) once every slice read is done,
        for a process whose peers still have batches; otherwise the stream ends there.
    Yields:
      ``(batch, SliceStep)``: a batch of ``len(read) * B // S`` rows.
    """
    _check(cfg, batch_size, seed, model, epochs)
    if slices < 1 or batch_size % slices:
        raise ValueError(
            f"--batch-size {batch_size} must be a multiple of --corpus-slices {slices} "
            "(each slice gives B / slices rows of every step)"
        )
    read = range(slices) if read is None else read
    start = tuple(START for _ in read) if start is None else tuple(Position(*p) for p in start)
    if len(start) != len(read):
        raise ValueError(f"{len(start)} resume positions for {len(read)} slices")
    if isinstance(corpus, EncodedCorpus):
        corpus = cut_encoded(corpus, slices, cfg.chunk_tokens)
    if corpus.num_slices != slices:
        raise ValueError(f"a corpus in {corpus.num_slices} slices read as {slices}")
    if any(corpus.parts[s] is None for s in read):
        raise ValueError(f"slices {list(read)} are read, but the corpus holds only some of them")
    plan = _Plan.make(corpus, vocab, cfg, model=model)
    sub = batch_size // slices
    positions = [plan.resume_point(s, p) for s, p in zip(read, start, strict=True)]
    words = [plan.words_at(s, p) for s, p in zip(read, positions, strict=True)]
    streams = [plan.stream(s, p, sub, seed, epochs) for s, p in zip(read, positions, strict=True)]
    padding = plan.empty_batch(sub)  # a slice that is done gives this
    while True:
        parts, real = [], False
        for i, it in enumerate(streams):
            item = next(it, None) if it is not None else None
            if item is None:
                streams[i] = None
                parts.append(padding)
                continue
            batch, positions[i], words[i] = item
            parts.append(batch)
            real = True
        if not real and not pad_forever:
            return
        if len(parts) == 1:
            batch = parts[0]
        else:
            batch = type(padding)(*(np.concatenate(f) for f in zip(*parts, strict=True)))
        yield batch, SliceStep(tuple(positions), tuple(words), real)


class _Plan(NamedTuple):
    """The chunks of a corpus's slices, and what streaming them needs."""

    parts: tuple[EncodedCorpus | None, ...]  # [S]; None: a slice this caller does not read
    cfg: DataConfig
    model: str
    keep: np.ndarray | None
    bits: int
    vocab_size: int
    first: np.ndarray  # [S + 1]: slice s holds chunks [first[s], first[s + 1]) of the whole
    bounds: dict[int, np.ndarray]  # read slice s -> [n_s + 1] its chunks' sentence bounds
    raw_at: dict[int, np.ndarray]  # read slice s -> [n_s + 1] raw tokens before each bound
    raw_span: np.ndarray  # [S]: raw tokens of each slice

    @classmethod
    def make(cls, corpus: CorpusSlices, vocab, cfg, *, model) -> _Plan:
        bounds, raw_at = {}, {}
        for s, part in enumerate(corpus.parts):
            if part is not None:
                bounds[s] = chunk_bounds(part.sentence_starts, cfg.chunk_tokens)
                if bounds[s].size - 1 != corpus.chunks[s]:
                    raise ValueError(
                        f"slice {s} holds {bounds[s].size - 1} chunks of {cfg.chunk_tokens} "
                        f"tokens, but the corpus was cut with {corpus.chunks[s]}: cut it with "
                        "this chunk_tokens"
                    )
                raw_at[s] = np.asarray([part.raw_before(int(e)) for e in bounds[s]], np.int64)
        keep = None
        if cfg.subsample_rule != "off" and cfg.sample > 0:
            keep = keep_probs(vocab.counts, cfg.sample, cfg.subsample_rule).astype(np.float32)
        return cls(
            parts=corpus.parts,
            cfg=cfg,
            model=model,
            keep=keep,
            bits=_id_bits(len(vocab)),
            vocab_size=len(vocab),
            first=np.cumsum([0, *corpus.chunks], dtype=np.int64),
            bounds=bounds,
            raw_at=raw_at,
            raw_span=np.asarray(corpus.raw_words, np.int64),
        )

    def resume_point(self, s: int, p: Position) -> Position:
        """``p`` checked against slice ``s``'s chunks (a fresh start moves to its first chunk)."""
        lo, hi = int(self.first[s]), int(self.first[s + 1])
        if p == START:
            return Position(0, lo, 0)
        if not (p.epoch >= 0 and lo <= p.chunk <= hi and p.batch >= 0):
            raise ValueError(f"resume position {p} is outside the chunks [{lo}, {hi}] of slice {s}")
        return p

    def words_at(self, s: int, p: Position) -> int:
        """Raw tokens of slice ``s`` consumed before position ``p`` (``p.batch`` ignored)."""
        k = p.chunk - int(self.first[s])
        return p.epoch * int(self.raw_span[s]) + int(self.raw_at[s][k])

    def empty_batch(self, size: int):
        """A batch of ``size`` padding rows (``mask = 0``, ids 0) in this model's layout."""
        z = np.zeros(size, np.int32)
        window = self.cfg.window
        if self.model == "sg":
            return SkipGramBatch(center=z, context=z, mask=np.zeros(size, np.float32))
        return CBOWBatch(
            center=z,
            context=np.zeros((size, 2 * window), np.int32),
            context_mask=np.zeros((size, 2 * window), np.float32),
            mask=np.zeros(size, np.float32),
        )

    def stream(self, s: int, start: Position, batch_size: int, seed: int, epochs: int):
        """Slice ``s``'s ``(batch, position after it, words_done of the slice)`` from ``start``."""
        lo, hi = int(self.first[s]), int(self.first[s + 1])
        start = self.resume_point(s, start)
        if start.epoch > epochs:
            raise ValueError(f"resume position {start} is outside {epochs} epochs")
        span = int(self.raw_span[s])
        part, bounds, raw_at = self.parts[s], self.bounds[s], self.raw_at[s]
        for e in range(start.epoch, epochs):
            for c in range(start.chunk if e == start.epoch else lo, hi):
                rng = np.random.default_rng([seed, e, c])  # c counts chunks over the whole
                k = c - lo
                nb, make = _chunk_batches(
                    part, self.keep, int(bounds[k]), int(bounds[k + 1]), self.cfg, rng,
                    batch_size, self.model, self.bits, self.vocab_size,
                )  # fmt: skip
                done_before = e * span + int(raw_at[k])
                raw_chunk = int(raw_at[k + 1] - raw_at[k])
                first = start.batch if (e, c) == (start.epoch, start.chunk) else 0
                for b in range(first, nb):
                    if b + 1 < nb:
                        after = Position(e, c, b + 1)
                    elif c + 1 < hi:
                        after = Position(e, c + 1, 0)
                    else:
                        after = Position(e + 1, lo, 0)
                    yield make(b), after, done_before + (raw_chunk * (b + 1)) // nb


class _Raised(NamedTuple):
    error: BaseException


_DONE = object()


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs ``iterator`` in a background thread, up to ``size`` items ahead.

    The thread starts at the first ``next()``. Exceptions of the producer are re-raised in the
    consumer; closing the returned generator (or exhausting it) stops and joins the thread, then
    closes ``iterator``. numpy releases the GIL in its sorts, ufuncs and random fills, so the host
    can build the next batches while the device runs the current step.
    """
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}")
    return _prefetch(iterator, size)


def _prefetch(iterator: Iterator, size: int) -> Iterator:
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            put(_Raised(e))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="w2v_jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
