// Fused word2vec CPU kernels for w2v_jax, exposed to JAX through the XLA FFI.
//
// Each update kernel does, for every (input, target) pair of a batch, the gather, the exact
// gradient and the scatter of word2vec.c's per-pair SGD in one pass over memory, in place on
// the two tables (the Python side aliases them to the outputs, so a jitted step with donated
// tables copies nothing). Compiled lazily by w2v_jax/fused.py with
//   g++ -O3 -march=native -std=c++17 -shared -fPIC -pthread -I<jax.ffi.include_dir()>
//
// Names (docs/design.md): center_vecs = word2vec.c syn0 (input vectors), outside_vecs = syn1neg,
// node_vecs = syn1. Skip-gram uses P(o|c): h = center_vecs[center] predicts o = context (word2vec.c
// looks syn0 up for the context word and predicts the center word; the pairs are the same set).
// CBOW: h = sum or mean of center_vecs[context window] predicts `center`.
//
// Per pair, exactly word2vec.c's update order, with the exact sigmoid instead of EXP_TABLE and no
// MAX_EXP clipping or skipping:
//   neu1e = 0
//   for each target t with label l (SGNS: context l=1, then each negative l=0;
//                                   HS: each node on o's Huffman path, l = 1 - code):
//     f = h . u_t ;  g = (l - sigma(f)) * lr * mask
//     neu1e += g * u_t ;  u_t += g * h
//   input row(s) += neu1e          (CBOW: every context row, scaled by 1/n with exact_grad + mean)
// Negatives equal to the positive (or repeated negatives) are NOT skipped: word2vec.c skips
// `target == word`, our library keeps them so the update is the gradient of the sampled loss.
// A repeated target row sees the values already updated by its earlier occurrence in the same
// pair (sequential, as word2vec.c).
//
// Implementation: the loop above is evaluated in closed form so that each row is read and
// written once per pair: all dots h.u_t on the old rows first (several rows per pass over h),
// then one pass over the dimensions that updates every target row and accumulates neu1e in
// registers, writing the skip-gram input row in the same pass. For a target row that already
// occurred in the pair with summed step G, u = u_old + G h, hence f = f_old + G |h|^2 and its
// neu1e term is g u_old + g G h; the result equals the sequential loop up to float rounding.
//
// Loss output: loss_i = -sum_t [l log sigma(f_t) + (1-l) log sigma(-f_t)] with f_t = h . u_t
// evaluated on the values before pair i's update (a repeated target row uses its first value),
// computed with a stable log-sigmoid; 0 where mask_i == 0 (those pairs are skipped entirely).
// The loss is not multiplied by mask_i.
//
// Threads: T threads (the caller and T - 1 of the process's persistent workers, see WorkerPool)
// take contiguous chunks of ~B/(8T) pairs from a shared counter and update the tables Hogwild style
// like word2vec.c and gensim: when two threads touch the same row the updates race (lost or mixed
// float updates are accepted), so T > 1 is not deterministic. The exception for HS are the 64
// Huffman nodes nearest the root, which each thread updates in a private copy that is averaged back
// at the end of the call (see "Hot output rows" below). T = 1 is sequential and bit-deterministic.
// With the `deterministic` attribute, T > 1 runs the deterministic schedule instead (see
// "Deterministic multi-thread schedule" below): fixed ranges per thread, shared rows merged in
// thread order.
// Ids are checked before any write: out-of-range ids return an error and leave the tables
// untouched.
//
// Sampled variants draw the K negatives inside the kernel from a Walker alias table with a
// counter-based generator: draw n = i*K + k of a call is splitmix64(key(seed) + (n+1)*gamma), so
// the negatives depend only on (seed, pair index, k), never on the thread split. An alias
// table entry out of range is only seen when drawn: the call then fails after its updates.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "xla/ffi/api/ffi.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define W2V_AVX2 1
#endif

namespace ffi = xla::ffi;

namespace {

// ---------------------------------------------------------------------------------------------
// Vector primitives (D is small, ~100-300: keep everything in registers / L1).

inline float dot(const float* __restrict a, const float* __restrict b, int64_t d) {
  int64_t j = 0;
  float s = 0.0f;
#ifdef W2V_AVX2
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (; j + 16 <= d; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
  }
  if (j + 8 <= d) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    j += 8;
  }
  s0 = _mm256_add_ps(s0, s1);
  __m128 lo = _mm256_castps256_ps128(s0), hi = _mm256_extractf128_ps(s0, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  s = _mm_cvtss_f32(lo);
#else
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; j + 8 <= d; j += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[j + k] * b[j + k];
  s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
#endif
  for (; j < d; ++j) s += a[j] * b[j];
  return s;
}

inline void axpy(float a, const float* __restrict x, float* __restrict y, int64_t d) {
  for (int64_t j = 0; j < d; ++j) y[j] += a * x[j];
}

// h = rows[0] + rows[1] + ... (in that order), times 1/n if `mean`: one pass over the dims with
// h in registers, the same additions per element as copying rows[0] and adding each further
// row with axpy(1, ., h) (an FMA by 1 rounds as the plain addition does), so the same bits.
inline void sum_rows(const float* const* rows, int n, int64_t d, bool mean, float* h) {
  const float inv = 1.0f / static_cast<float>(n);
  int64_t j = 0;
#ifdef W2V_AVX2
  const __m256 iv = _mm256_set1_ps(inv);
  for (; j + 8 <= d; j += 8) {
    __m256 s = _mm256_loadu_ps(rows[0] + j);
    for (int t = 1; t < n; ++t) s = _mm256_add_ps(s, _mm256_loadu_ps(rows[t] + j));
    _mm256_storeu_ps(h + j, mean ? _mm256_mul_ps(s, iv) : s);
  }
#endif
  for (; j < d; ++j) {
    float s = rows[0][j];
    for (int t = 1; t < n; ++t) s += rows[t][j];
    h[j] = mean ? s * inv : s;
  }
}

#ifndef W2V_PREFETCH_PAIRS
#define W2V_PREFETCH_PAIRS 4
#endif
constexpr int64_t kPrefetchPairs = W2V_PREFETCH_PAIRS;

inline void prefetch_row(const float* row, int64_t d) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < d * 4; b += 64) __builtin_prefetch(p + b, 1, 3);
}

// ---------------------------------------------------------------------------------------------
// Counter-based random numbers and Walker alias draws.

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;

inline uint64_t fmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline uint64_t key_from_seed(const uint32_t* seed) {
  const uint64_t s = (static_cast<uint64_t>(seed[0]) << 32) | seed[1];
  return fmix64(s + kGamma);
}

// Output n of the splitmix64 stream whose state starts at `key`.
inline uint64_t draw_bits(uint64_t key, uint64_t n) { return fmix64(key + (n + 1) * kGamma); }

// One draw from the alias table: column j uniform (Lemire multiply-shift on the high 32 bits),
// keep j with probability prob[j] (24 low bits as a uniform in [0,1)), else alias[j].
// Returns -1 if the table's alias entry is out of range.
inline int32_t alias_draw(uint64_t bits, const float* prob, const int32_t* alias, int64_t v) {
  const int64_t j = static_cast<int64_t>(((bits >> 32) * static_cast<uint64_t>(v)) >> 32);
  const float u = static_cast<float>(bits & 0xFFFFFFULL) * (1.0f / 16777216.0f);
  // Branch-free select (the accept test is a coin flip the predictor cannot learn).
  const int32_t a = alias[j];
  const int32_t t = (u < prob[j]) ? static_cast<int32_t>(j) : a;
  return static_cast<uint32_t>(t) < static_cast<uint64_t>(v) ? t : -1;
}

// ---------------------------------------------------------------------------------------------
// Stable sigmoid and loss.

inline float sigmoid_from(float f, float e /* = exp(-|f|) */) {
  return f >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

// ---------------------------------------------------------------------------------------------
// Hot output rows. With T > 1 threads, the Huffman nodes that nearly every pair touches (the
// root and the nodes below it) would bounce between the cores' caches on every write:
// measured, 2 threads ran skip-gram HS at half the speed of 1 (BENCHMARKS.md). So for HS each
// thread updates a private copy of those kHotRows rows during a call, and when all threads are
// done each hot row becomes its old value plus the mean of the changes of the threads that
// touched it (parameter averaging, as in local SGD; the sum of the changes would overshoot
// once a row has converged, as the root soon does). A row touched by a single thread simply
// takes that thread's value. Every other row is shared Hogwild style. T = 1 uses the table
// directly (exact sequential). SGNS keeps plain Hogwild on every row: its hot rows are the most
// frequent words, whose output vectors carry meaning, and averaging them (which halves their
// step while they still move linearly) cost quality on the default corpus (cbow-ns
// WordSim-353 0.25 -> 0.21, median of 3 seeds) for a small speed gain.

#ifndef W2V_HOT_ROWS
#define W2V_HOT_ROWS 64
#endif
constexpr int64_t kHotRows = W2V_HOT_ROWS;

struct HotRange {
  int64_t lo = 0, hi = 0;  // output-table rows [lo, hi)
};

// Where row `id` of the output table lives for this thread.
struct OutRows {
  float* table;
  float* hot;             // this thread's copy of rows [r.lo, r.hi), or nullptr
  unsigned char* touched;  // [r.hi - r.lo]: which hot rows this thread has updated
  HotRange r;
  int64_t d;
  bool is_hot(int64_t i) const { return hot != nullptr && i >= r.lo && i < r.hi; }
  float* row(int32_t id) const { return is_hot(id) ? hot + (id - r.lo) * d : table + id * d; }
  // The row this pair will update (a hot one is marked as touched by this thread).
  float* update_row(int32_t id) const {
    if (is_hot(id)) touched[id - r.lo] = 1;
    return row(id);
  }
};

// ---------------------------------------------------------------------------------------------
// Huge pages for the tables. The rows of rare words lie scattered over tables that reach
// gigabytes, and with 4 KiB pages nearly every such row costs a TLB miss (a page walk) on top of
// its cache miss; 2 MiB pages made the kernel faster per pair at V = 800k (BENCHMARKS.md). XLA
// allocates the tables, so the second call that sees a table at the same address asks Linux to
// back it with huge pages: MADV_HUGEPAGE for pages faulted later, MADV_COLLAPSE (Linux 6.1+) for
// the ones it already has, a one-off copy. Both are advice: an older kernel, THP turned off or
// no free huge page leaves the table as it was, slower but the same. Only whole 2 MiB pages
// inside the buffer are advised, never a neighbour's memory, and the contents do not change.
// -DW2V_NO_HUGE_PAGES turns it off (bench/kernel_native.cc's baseline).
constexpr uintptr_t kHugePage = uintptr_t{1} << 21;
#ifdef MADV_COLLAPSE
constexpr int kMadvCollapse = MADV_COLLAPSE;
#else
constexpr int kMadvCollapse = 25;  // linux/mman.h; glibc headers before 2.37 lack the name
#endif

void advise_huge_pages(const void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(W2V_NO_HUGE_PAGES)
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) &
                       ~(kHugePage - 1);
  if (bytes <= 0 || hi <= lo) return;
  // A table updated in place keeps its address from call to call: advise it the second time it
  // is seen, so that a table passed once (a copy, a test) never pays for the collapse.
  struct Seen {
    uintptr_t lo, hi;
    bool advised;
  };
  static std::mutex mu;
  static std::vector<Seen> seen;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = std::find_if(seen.begin(), seen.end(),
                           [&](const Seen& r) { return r.lo == lo && r.hi == hi; });
    if (it == seen.end()) {
      if (seen.size() >= 64) seen.erase(seen.begin());
      seen.push_back({lo, hi, false});
      return;
    }
    if (it->advised) return;
    it->advised = true;
  }
  void* start = reinterpret_cast<void*>(lo);
  if (madvise(start, hi - lo, MADV_HUGEPAGE) == 0) madvise(start, hi - lo, kMadvCollapse);
#else
  (void)p;
  (void)bytes;
#endif
}

// ---------------------------------------------------------------------------------------------
// Per-pair work description, filled by the "input" and "target" policies below.

struct PairBuf {
  std::vector<int32_t> in_ids;   // input rows (1 for skip-gram, up to C for CBOW)
  std::vector<int32_t> tgt_ids;  // target rows (K+1 for SGNS, up to L for HS)
  std::vector<float> labels;
  int n_in = 0;
  int n_tgt = 0;
  void reserve(int64_t max_in, int64_t max_tgt) {
    const int64_t t8 = (std::max<int64_t>(max_tgt, 1) + 7) / 8 * 8;  // room for 8-wide loads
    in_ids.resize(std::max<int64_t>(max_in, 1));
    tgt_ids.resize(t8);
    labels.assign(t8, 0.0f);
  }
};

// Skip-gram input: the single row center[i].
struct InSG {
  const int32_t* center;
  int64_t max_in() const { return 1; }
  void fill(int64_t i, PairBuf& p) const {
    p.in_ids[0] = center[i];
    p.n_in = 1;
  }
  bool valid(int64_t b, int64_t v, std::string& err) const {
    for (int64_t i = 0; i < b; ++i)
      if (center[i] < 0 || center[i] >= v) {
        err = "center id " + std::to_string(center[i]) + " at " + std::to_string(i) +
              " outside [0, " + std::to_string(v) + ")";
        return false;
      }
    return true;
  }
};

// CBOW input: the context window rows with context_mask > 0.
struct InCBOW {
  const int32_t* context;  // [B, C]
  const float* cmask;      // [B, C]
  int64_t c;
  int64_t max_in() const { return c; }
  void fill(int64_t i, PairBuf& p) const {
    int n = 0;
    for (int64_t j = 0; j < c; ++j)
      if (cmask[i * c + j] > 0.0f) p.in_ids[n++] = context[i * c + j];
    p.n_in = n;
  }
  bool valid(int64_t b, int64_t v, std::string& err) const {
    for (int64_t i = 0; i < b * c; ++i)
      if (cmask[i] > 0.0f && (context[i] < 0 || context[i] >= v)) {
        err = "context id " + std::to_string(context[i]) + " at flat index " + std::to_string(i) +
              " outside [0, " + std::to_string(v) + ")";
        return false;
      }
    return true;
  }
};

// SGNS targets with given negatives: pos[i] (label 1), then negatives[i, :] (label 0).
struct TgtNS {
  const int32_t* pos;
  const int32_t* negs;  // [B, K]
  int64_t k;
  bool check_dups() const { return true; }
  int64_t max_tgt() const { return k + 1; }
  HotRange hot_range(int64_t) const { return {}; }  // see "Hot output rows"
  void prefetch_meta(int64_t) const {}
  void fill(int64_t i, PairBuf& p) const {
    p.tgt_ids[0] = pos[i];
    p.labels[0] = 1.0f;
    for (int64_t j = 0; j < k; ++j) {
      p.tgt_ids[1 + j] = negs[i * k + j];
      p.labels[1 + j] = 0.0f;
    }
    p.n_tgt = static_cast<int>(k + 1);
  }
  bool valid(int64_t b, int64_t v, std::string& err) const {
    for (int64_t i = 0; i < b; ++i)
      if (pos[i] < 0 || pos[i] >= v) {
        err = "positive id " + std::to_string(pos[i]) + " at " + std::to_string(i) +
              " outside [0, " + std::to_string(v) + ")";
        return false;
      }
    for (int64_t i = 0; i < b * k; ++i)
      if (negs[i] < 0 || negs[i] >= v) {
        err = "negative id " + std::to_string(negs[i]) + " at flat index " + std::to_string(i) +
              " outside [0, " + std::to_string(v) + ")";
        return false;
      }
    return true;
  }
};

// SGNS targets with negatives drawn in the kernel from a Walker alias table.
struct TgtNSSampled {
  const int32_t* pos;
  const float* prob;
  const int32_t* alias;
  int64_t v_alias;
  uint64_t key;
  int64_t k;
  std::atomic<bool>* bad_alias;
  bool check_dups() const { return true; }
  int64_t max_tgt() const { return k + 1; }
  HotRange hot_range(int64_t) const { return {}; }  // see "Hot output rows"
  // The alias columns are uniform over V: at large V each draw is a cache miss, so the loop
  // touches them well before it draws.
  void prefetch_meta(int64_t i) const {
    for (int64_t j = 0; j < k; ++j) {
      const uint64_t bits = draw_bits(key, static_cast<uint64_t>(i * k + j));
      const int64_t col = static_cast<int64_t>(((bits >> 32) * static_cast<uint64_t>(v_alias)) >> 32);
      __builtin_prefetch(prob + col, 0, 3);
      __builtin_prefetch(alias + col, 0, 3);
    }
  }
  void fill(int64_t i, PairBuf& p) const {
    p.tgt_ids[0] = pos[i];
    p.labels[0] = 1.0f;
    for (int64_t j = 0; j < k; ++j) {
      int32_t t = alias_draw(draw_bits(key, static_cast<uint64_t>(i * k + j)), prob, alias, v_alias);
      if (t < 0) {
        bad_alias->store(true, std::memory_order_relaxed);
        t = 0;
      }
      p.tgt_ids[1 + j] = t;
      p.labels[1 + j] = 0.0f;
    }
    p.n_tgt = static_cast<int>(k + 1);
  }
  bool valid(int64_t b, int64_t v, std::string& err) const {
    if (v_alias > v) {
      err = "alias table has " + std::to_string(v_alias) + " entries but outside_vecs only " +
            std::to_string(v) + " rows";
      return false;
    }
    for (int64_t i = 0; i < b; ++i)
      if (pos[i] < 0 || pos[i] >= v) {
        err = "positive id " + std::to_string(pos[i]) + " at " + std::to_string(i) +
              " outside [0, " + std::to_string(v) + ")";
        return false;
      }
    return true;
  }
};

// Hierarchical softmax targets: the inner nodes on word[i]'s Huffman path, label = 1 - code.
struct TgtHS {
  const int32_t* word;
  const int32_t* points;   // [Vw, L]
  const int32_t* codes;    // [Vw, L]
  const int32_t* lengths;  // [Vw]
  int64_t vw, l;
  bool check_dups() const { return false; }  // a Huffman path never repeats a node
  int64_t max_tgt() const { return l; }
  // Inner node a is the a-th merge, so ids rise with visit counts; the root, N-1, is on every
  // path.
  HotRange hot_range(int64_t n_rows) const {
    return {std::max<int64_t>(0, n_rows - kHotRows), n_rows};
  }
  void prefetch_meta(int64_t i) const {
    const int64_t w = word[i];
    __builtin_prefetch(lengths + w, 0, 3);
    for (int64_t b = 0; b < l * 4; b += 64) {
      __builtin_prefetch(reinterpret_cast<const char*>(points + w * l) + b, 0, 3);
      __builtin_prefetch(reinterpret_cast<const char*>(codes + w * l) + b, 0, 3);
    }
  }
  void fill(int64_t i, PairBuf& p) const {
    const int64_t w = word[i];
    const int n = lengths[w];
    for (int j = 0; j < n; ++j) {
      p.tgt_ids[j] = points[w * l + j];
      p.labels[j] = 1.0f - static_cast<float>(codes[w * l + j]);
    }
    p.n_tgt = n;
  }
  bool valid(int64_t b, int64_t n_nodes, std::string& err) const {
    for (int64_t i = 0; i < b; ++i) {
      const int64_t w = word[i];
      if (w < 0 || w >= vw) {
        err = "HS word id " + std::to_string(w) + " at " + std::to_string(i) + " outside [0, " +
              std::to_string(vw) + ")";
        return false;
      }
      const int64_t n = lengths[w];
      if (n < 0 || n > l) {
        err = "Huffman length " + std::to_string(n) + " of word " + std::to_string(w) +
              " outside [0, " + std::to_string(l) + "]";
        return false;
      }
      for (int64_t j = 0; j < n; ++j) {
        const int64_t pt = points[w * l + j], cd = codes[w * l + j];
        if (pt < 0 || pt >= n_nodes || (cd != 0 && cd != 1)) {
          err = "Huffman entry (point " + std::to_string(pt) + ", code " + std::to_string(cd) +
                ") of word " + std::to_string(w) + " invalid for " + std::to_string(n_nodes) +
                " nodes";
          return false;
        }
      }
    }
    return true;
  }
};

struct Common {
  float* in_tab;   // [V, D]
  float* out_tab;  // [N, D]
  int64_t d;
  const float* mask;  // [B]
  float lr;
  float* loss;  // [B]
  bool want_loss;
  bool cbow_mean;   // CBOW: h = mean (else sum)
  bool exact_grad;  // CBOW mean: each context row gets neu1e / n (else the full neu1e)
};

#ifdef W2V_AVX2
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

// exp(x) for x <= 0 (clamped at -87.3, where it is ~1e-38): Cody-Waite reduction and the
// Cephes expf polynomial, within ~2 ulp of std::exp.
inline __m256 exp_neg256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i n = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

// For 8 targets without repeats: g = (l - sigma(f)) * alpha, and (if want_loss) the loss terms
// l*max(-f,0) + (1-l)*max(f,0) summed into *lin and prod(1 + e^-|f|) multiplied into *prod.
// Lanes >= n are ignored.
inline void sigmoid_grads8(const float* f, const float* l, int n, float alpha, bool want_loss,
                           float* g, float* lin, double* prod) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
  const __m256 fv = _mm256_and_ps(_mm256_loadu_ps(f), valid);
  const __m256 lv = _mm256_and_ps(_mm256_loadu_ps(l), valid);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 e = exp_neg256(_mm256_or_ps(fv, sign));  // exp(-|f|)
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(one, e));
  const __m256 pos = _mm256_cmp_ps(fv, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 sig = _mm256_blendv_ps(_mm256_mul_ps(e, inv), inv, pos);
  _mm256_storeu_ps(g, _mm256_mul_ps(_mm256_sub_ps(lv, sig), _mm256_set1_ps(alpha)));
  if (want_loss) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 lt = _mm256_add_ps(
        _mm256_mul_ps(lv, _mm256_max_ps(_mm256_sub_ps(zero, fv), zero)),
        _mm256_mul_ps(_mm256_sub_ps(one, lv), _mm256_max_ps(fv, zero)));
    *lin += hsum(_mm256_and_ps(lt, valid));
    const __m256 ev = _mm256_and_ps(e, valid);  // padded lanes: factor 1
    const __m256d onep = _mm256_set1_pd(1.0);
    const __m256d p = _mm256_mul_pd(_mm256_add_pd(onep, _mm256_cvtps_pd(_mm256_castps256_ps128(ev))),
                                    _mm256_add_pd(onep, _mm256_cvtps_pd(_mm256_extractf128_ps(ev, 1))));
    __m128d q = _mm_mul_pd(_mm256_castpd256_pd128(p), _mm256_extractf128_pd(p, 1));
    q = _mm_mul_sd(q, _mm_unpackhi_pd(q, q));
    *prod *= _mm_cvtsd_f64(q);
  }
}
#endif

// f[t] = h . rows[t] for N rows at once: h is read once, N independent accumulation chains.
template <int N>
inline void dots_group(const float* h, float* const* rows, int64_t d, float* f) {
  int64_t j = 0;
#ifdef W2V_AVX2
  __m256 acc[N];
  for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps();
  for (; j + 8 <= d; j += 8) {
    const __m256 hv = _mm256_loadu_ps(h + j);
    for (int t = 0; t < N; ++t) acc[t] = _mm256_fmadd_ps(hv, _mm256_loadu_ps(rows[t] + j), acc[t]);
  }
  for (int t = 0; t < N; ++t) f[t] = hsum(acc[t]);
#else
  for (int t = 0; t < N; ++t) f[t] = 0.0f;
#endif
  for (; j < d; ++j)
    for (int t = 0; t < N; ++t) f[t] += h[j] * rows[t][j];
}

// Up to 8 rows per pass: the chains are independent, so a wider pass hides the latency of each
// fused multiply-add (SGNS's K + 1 = 6 rows in one pass, not 4 + 2). Each row's sum runs in the
// same order whatever the grouping, so the results do not depend on it.
inline void dots_all(const float* h, float* const* rows, int n, int64_t d, float* f) {
  int t = 0;
  for (; t + 8 <= n; t += 8) dots_group<8>(h, rows + t, d, f + t);
  switch (n - t) {
    case 7: dots_group<7>(h, rows + t, d, f + t); break;
    case 6: dots_group<6>(h, rows + t, d, f + t); break;
    case 5: dots_group<5>(h, rows + t, d, f + t); break;
    case 4: dots_group<4>(h, rows + t, d, f + t); break;
    case 3: dots_group<3>(h, rows + t, d, f + t); break;
    case 2: dots_group<2>(h, rows + t, d, f + t); break;
    case 1: dots_group<1>(h, rows + t, d, f + t); break;
    default: break;
  }
}

#ifdef W2V_AVX2
// update_all on the C 8-float chunks from dimension j: one accumulation chain per chunk, so C
// chains run side by side; each element sees the same operations whatever C is.
template <int C>
inline void update_chunks(const float* h, float* const* rows, const float* g, int n, int64_t j,
                          float* dst, __m256 hs) {
  __m256 hv[C], acc[C];
  for (int c = 0; c < C; ++c) {
    hv[c] = _mm256_loadu_ps(h + j + 8 * c);
    acc[c] = _mm256_mul_ps(hs, hv[c]);
  }
  for (int t = 0; t < n; ++t) {
    const __m256 gv = _mm256_set1_ps(g[t]);
    float* u = rows[t] + j;
    for (int c = 0; c < C; ++c) {
      const __m256 uv = _mm256_loadu_ps(u + 8 * c);
      acc[c] = _mm256_fmadd_ps(gv, uv, acc[c]);
      _mm256_storeu_ps(u + 8 * c, _mm256_fmadd_ps(gv, hv[c], uv));
    }
  }
  for (int c = 0; c < C; ++c) _mm256_storeu_ps(dst + j + 8 * c, acc[c]);
}
#endif

// One pass over the dimensions: acc = sum_t g_t u_t (old values), u_t += g_t h, and
// dst = hscale * h + acc. `dst` may be `h` itself (skip-gram updates its input row in place:
// each 8-float chunk of h is read before it is written).
inline void update_all(const float* h, float* const* rows, const float* g, int n, int64_t d,
                       float* dst, float hscale) {
  int64_t j = 0;
#ifdef W2V_AVX2
  const __m256 hs = _mm256_set1_ps(hscale);
  for (; j + 16 <= d; j += 16) update_chunks<2>(h, rows, g, n, j, dst, hs);
  for (; j + 8 <= d; j += 8) update_chunks<1>(h, rows, g, n, j, dst, hs);
  // A 4-float remainder (D = 100, 300) in one SSE step: the same fused multiply-adds per
  // element as the scalar loop below (g++ contracts those), so the same bits, a quarter of
  // the loop-carried latency.
  if (j + 4 <= d) {
    const __m128 hv = _mm_loadu_ps(h + j);
    __m128 acc = _mm_mul_ps(_mm256_castps256_ps128(hs), hv);
    for (int t = 0; t < n; ++t) {
      const __m128 gv = _mm_set1_ps(g[t]);
      float* u = rows[t] + j;
      const __m128 uv = _mm_loadu_ps(u);
      acc = _mm_fmadd_ps(gv, uv, acc);
      _mm_storeu_ps(u, _mm_fmadd_ps(gv, hv, uv));
    }
    _mm_storeu_ps(dst + j, acc);
    j += 4;
  }
#endif
  for (; j < d; ++j) {
    const float hj = h[j];
    float acc = hscale * hj;
    for (int t = 0; t < n; ++t) {
      const float uj = rows[t][j];
      acc += g[t] * uj;
      rows[t][j] = uj + g[t] * hj;
    }
    dst[j] = acc;
  }
}

// Input rows straight from the table (the Hogwild schedule and T = 1).
struct TableRows {
  float* table;
  int64_t d;
  float* row(int32_t id) const { return table + static_cast<int64_t>(id) * d; }
};

// `inr` and `out` say where each input / output row lives for this thread (TableRows, OutRows,
// or the deterministic schedule's SplitRows).
template <class In, class Tgt, class InRows, class OutMap>
void run_range(int64_t lo, int64_t hi, const In& in, const Tgt& tg, const Common& cm,
               const InRows& inr, const OutMap& out) {
  if (lo >= hi) return;
  const int64_t d = cm.d;
  const int64_t max_t = std::max<int64_t>(tg.max_tgt(), 1);
  // Pairs are decoded kPrefetchPairs ahead into a ring and their rows prefetched, so that the
  // cache misses of rare words (large V) overlap with the work on the current pair.
  constexpr int64_t kRing = kPrefetchPairs + 1;
  std::vector<PairBuf> ring(kRing);
  for (auto& p : ring) p.reserve(in.max_in(), tg.max_tgt());
  const int64_t max_t8 = (max_t + 7) / 8 * 8;  // 8-wide loads/stores past the last target
  std::vector<float> hbuf(d), neu1e(d), fu(max_t8), gsum(max_t8);
  std::vector<float*> urows(max_t);
  std::vector<const float*> inrows(std::max<int64_t>(in.max_in(), 1));
  std::vector<int32_t> uid(max_t);
  std::vector<int> slot(max_t);

  auto load = [&](int64_t i, PairBuf& p) {
    if (cm.mask[i] == 0.0f) {
      p.n_in = 0;
      p.n_tgt = 0;
      return;
    }
    in.fill(i, p);
    tg.fill(i, p);
  };
  for (int64_t i = lo; i < std::min(hi, lo + kPrefetchPairs); ++i) load(i, ring[(i - lo) % kRing]);
  for (int64_t i = lo + kPrefetchPairs; i < std::min(hi, lo + 2 * kPrefetchPairs); ++i)
    if (cm.mask[i] != 0.0f) tg.prefetch_meta(i);
  for (int64_t i = lo; i < hi; ++i) {
    // Two stages: per-pair metadata (alias columns, Huffman rows) 2P pairs ahead, then the
    // embedding rows P pairs ahead.
    if (i + 2 * kPrefetchPairs < hi && cm.mask[i + 2 * kPrefetchPairs] != 0.0f)
      tg.prefetch_meta(i + 2 * kPrefetchPairs);
    if (i + kPrefetchPairs < hi) {
      PairBuf& ahead = ring[(i + kPrefetchPairs - lo) % kRing];
      load(i + kPrefetchPairs, ahead);
      for (int j = 0; j < ahead.n_in; ++j) prefetch_row(inr.row(ahead.in_ids[j]), d);
      for (int j = 0; j < ahead.n_tgt; ++j) prefetch_row(out.row(ahead.tgt_ids[j]), d);
    }
    const PairBuf& cur = ring[(i - lo) % kRing];
    const float m = cm.mask[i];
    if (m == 0.0f || cur.n_in == 0) {
      cm.loss[i] = 0.0f;
      continue;
    }
    const int n_in = cur.n_in, n_t = cur.n_tgt;
    const float alpha = cm.lr * m;
    float* in_row0 = inr.row(cur.in_ids[0]);

    // Distinct target rows (SGNS may repeat one; a Huffman path never does).
    int nu = 0;
    for (int t = 0; t < n_t; ++t) {
      const int32_t id = cur.tgt_ids[t];
      int q = nu;
      if (tg.check_dups())
        for (int r = 0; r < nu; ++r)
          if (uid[r] == id) {
            q = r;
            break;
          }
      if (q == nu) {
        uid[nu] = id;
        urows[nu] = out.update_row(id);
        gsum[nu] = 0.0f;
        ++nu;
      }
      slot[t] = q;
    }

    // h: skip-gram reads its input row in place; CBOW sums (or averages) into hbuf.
    const float* h = in_row0;
    if (n_in > 1) {
      for (int j = 0; j < n_in; ++j) inrows[j] = inr.row(cur.in_ids[j]);
      sum_rows(inrows.data(), n_in, d, cm.cbow_mean, hbuf.data());
      h = hbuf.data();
    }

    // All dots on the values before this pair's update.
    dots_all(h, urows.data(), nu, d, fu.data());
    const float hh = (nu < n_t) ? dot(h, h, d) : 0.0f;

    // word2vec.c's sequential order, in closed form. A target row seen before in this pair has
    // u = u_old + G h (G = the g's of its earlier occurrences), so f = f_old + G |h|^2 and its
    // neu1e term is g u_old + g G h; the row ends at u_old + (sum of its g's) h.
    double prod = 1.0;  // sum_t log1p(e_t) = log1p(prod_t (1 + e_t) - 1): one log per pair
    float lin = 0.0f, hcoef = 0.0f;
#ifdef W2V_AVX2
    if (nu == n_t && n_t <= 64) {  // no repeats: 8 sigmoids at a time
      for (int t = 0; t < n_t; t += 8)
        sigmoid_grads8(fu.data() + t, cur.labels.data() + t, n_t - t, alpha, cm.want_loss,
                       gsum.data() + t, &lin, &prod);
    } else
#endif
    for (int t = 0; t < n_t; ++t) {
      const int q = slot[t];
      const float l = cur.labels[t];
      const float f0 = fu[q];
      const float f = f0 + gsum[q] * hh;
      const float e = std::exp(-std::fabs(f));
      if (cm.want_loss) {
        const float e0 = (f == f0) ? e : std::exp(-std::fabs(f0));  // loss on old values
        lin += l * std::max(-f0, 0.0f) + (1.0f - l) * std::max(f0, 0.0f);
        prod *= 1.0 + static_cast<double>(e0);
        if ((t & 511) == 511) {  // keep the product finite on absurdly long paths
          lin += static_cast<float>(std::log(prod));
          prod = 1.0;
        }
      }
      const float g = (l - sigmoid_from(f, e)) * alpha;
      hcoef += g * gsum[q];
      gsum[q] += g;
    }

    if (n_in == 1) {
      update_all(h, urows.data(), gsum.data(), nu, d, in_row0, 1.0f + hcoef);
    } else {
      update_all(h, urows.data(), gsum.data(), nu, d, neu1e.data(), hcoef);
      const float scale = (cm.cbow_mean && cm.exact_grad) ? 1.0f / n_in : 1.0f;
      for (int j = 0; j < n_in; ++j)
        axpy(scale, neu1e.data(), inr.row(cur.in_ids[j]), d);
    }
    cm.loss[i] = cm.want_loss ? lin + static_cast<float>(std::log1p(prod - 1.0)) : 0.0f;
  }
}

// Threads actually used for n items: all hardware threads if threads <= 0, at most n/min_chunk.
inline int64_t effective_threads(int64_t n, int64_t threads, int64_t min_chunk) {
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  return std::min<int64_t>(threads, std::max<int64_t>(1, n / std::max<int64_t>(min_chunk, 1)));
}

// Worker threads that live as long as the process. Every multi-thread call used to start its
// threads anew, and Linux places a new thread on its parent's core: on a 2-core machine the second
// thread often waited milliseconds behind its parent while the other core sat idle (`perf sched
// timehist`; BENCHMARKS.md). A worker that sleeps between calls wakes on an idle core instead.
// Workers spin for kSpinMicros after a call before they sleep, since the next call usually follows
// within microseconds (the next step of XLA's scan). One call uses the pool at a time; a call that
// finds it busy (another XLA thread, e.g. a second simulated device) says so, and run_together
// below starts threads of its own for it. Which thread runs which share of a call changes no
// result: the deterministic schedule fixes its ranges by worker index.
constexpr int64_t kSpinMicros = 200;

class WorkerPool {
 public:
  using Fn = std::function<void(int64_t)>;

  // Runs fn(w) for w = 0..n-1 at the same time, w = 0 on the calling thread, and returns true
  // once all have returned; returns false without running anything if the pool is in use or
  // cannot start n - 1 workers.
  bool run(int64_t n, const Fn& fn) {
    if (n <= 1) {
      if (n == 1) fn(0);
      return true;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (busy_) return false;
      try {
        while (static_cast<int64_t>(threads_.size()) < n - 1) {
          const int64_t w = static_cast<int64_t>(threads_.size()) + 1;
          threads_.emplace_back([this, w] { loop(w); });
        }
      } catch (...) {
        return false;
      }
      busy_ = true;
      fn_ = &fn;
      want_ = n;
      left_.store(n - 1, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    fn(0);
    if (!spin_until([&] { return left_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [&] { return left_.load(std::memory_order_acquire) == 0; });
    }
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
    return true;
  }

 private:
  template <class Pred>
  static bool spin_until(Pred&& ready) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    for (int i = 0;; ++i) {
      if (ready()) return true;
#ifdef W2V_AVX2
      _mm_pause();
#endif
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return false;
    }
  }

  void loop(int64_t w) {
    uint64_t seen = 0;
    for (;;) {
      if (!spin_until([&] { return gen_.load(std::memory_order_acquire) != seen; })) {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return gen_.load(std::memory_order_acquire) != seen; });
      }
      // One consistent view of the call (its fields change only under the lock).
      const Fn* fn;
      bool mine;
      {
        std::lock_guard<std::mutex> lock(mu_);
        seen = gen_.load(std::memory_order_relaxed);
        fn = fn_;
        mine = busy_ && w < want_;
      }
      if (!mine) continue;
      (*fn)(w);
      if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_.notify_one();
      }
    }
  }

  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;  // never joined: the workers end with the process
  std::atomic<uint64_t> gen_{0};      // one more per call
  std::atomic<int64_t> left_{0};      // workers of the current call still running
  const Fn* fn_ = nullptr;
  int64_t want_ = 0;
  bool busy_ = false;
};

// The process's pool. A child forked from a process with workers has none of their threads:
// it gets a fresh pool (the parent's object is left behind, never destroyed, since destroying
// an unjoined std::thread ends the process).
WorkerPool*& pool_slot() {
  static WorkerPool* pool = [] {
    pthread_atfork(nullptr, nullptr, [] { pool_slot() = new WorkerPool(); });
    return new WorkerPool();
  }();
  return pool;
}

WorkerPool& worker_pool() { return *pool_slot(); }

// Runs fn(w) for w = 0..n-1 at the same time, w = 0 on the calling thread: on the pool's
// workers, or, while another call holds the pool, on threads started for this call. Returns
// false, having run nothing, if n threads cannot be had.
bool run_together(int64_t n, const WorkerPool::Fn& fn) {
  if (worker_pool().run(n, fn)) return true;
  std::atomic<int> go{0};  // 1: run, -1: threads are missing, nobody runs
  auto worker = [&](int64_t w) {
    int g;
    while ((g = go.load(std::memory_order_acquire)) == 0) std::this_thread::yield();
    if (g > 0) fn(w);
  };
  std::vector<std::thread> extra;
  extra.reserve(n - 1);
  bool ok = true;
  for (int64_t w = 1; w < n && ok; ++w) {
    try {
      extra.emplace_back(worker, w);
    } catch (...) {
      ok = false;
    }
  }
  go.store(ok ? 1 : -1, std::memory_order_release);
  if (ok) fn(0);
  for (auto& th : extra) th.join();
  return ok;
}

// Run fn(worker, lo, hi) over [0, n) on effective_threads(n, threads, min_chunk) threads (the
// calling one is worker 0). The threads pull contiguous chunks of about n / (8 T) items from a
// shared counter instead of owning one fixed range each, so a thread that the OS deschedules
// (XLA's own threads, other processes) does not hold the call up while the others idle.
template <class Fn>
void parallel_chunks(int64_t n, int64_t threads, int64_t min_chunk, Fn&& fn) {
  threads = effective_threads(n, threads, min_chunk);
  min_chunk = std::max<int64_t>(min_chunk, 1);
  if (threads <= 1) {
    fn(int64_t{0}, int64_t{0}, n);
    return;
  }
  const int64_t chunk = std::max<int64_t>(min_chunk, n / (threads * 8));
  std::atomic<int64_t> next{0};
  const WorkerPool::Fn worker = [&](int64_t w) {
    for (;;) {
      const int64_t lo = next.fetch_add(chunk, std::memory_order_relaxed);
      if (lo >= n) break;
      fn(w, lo, std::min(n, lo + chunk));
    }
  };
  if (!run_together(threads, worker)) worker(0);  // no threads to be had: the caller does it all
}

// In-place contract: the result buffer aliases the operand. If XLA ever hands a distinct
// result buffer, copy the operand in first so the semantics stay "update a copy".
template <ffi::DataType T, size_t R>
float* inplace(const ffi::Buffer<T, R>& in, ffi::Result<ffi::Buffer<T, R>>& out) {
  float* dst = out->typed_data();
  const float* src = in.typed_data();
  if (dst != src) std::memcpy(dst, src, in.size_bytes());
  return dst;
}

ffi::Error check_table(const char* name, ffi::Buffer<ffi::F32, 2>& t, int64_t d) {
  if (t.dimensions()[1] != d)
    return ffi::Error::InvalidArgument(std::string(name) + " has dim " +
                                       std::to_string(t.dimensions()[1]) + ", expected " +
                                       std::to_string(d));
  return ffi::Error::Success();
}

ffi::Error check_len(const char* name, int64_t got, int64_t want) {
  if (got != want)
    return ffi::Error::InvalidArgument(std::string(name) + " has " + std::to_string(got) +
                                       " entries, expected " + std::to_string(want));
  return ffi::Error::Success();
}

#define W2V_RETURN_IF_ERROR(expr)       \
  do {                                  \
    ffi::Error _e = (expr);             \
    if (_e.failure()) return _e;        \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Deterministic multi-thread schedule ("private shared rows").
//
// Hogwild's races make T > 1 depend on timing. This schedule removes them without locks. The
// call's pairs are cut into T fixed contiguous ranges, range w for thread w, and:
//  0. every thread lists the rows of both tables that its range touches (all ids are known
//     before any update: the batch holds them and the negatives come from (seed, i, k));
//  1. the rows listed by two or more ranges ("shared": frequent words, Huffman nodes near the
//     root) are found and given a slot;
//  2. each thread runs its range as the sequential kernel does, updating the rows only it
//     touches in place and the shared rows in a private copy taken at the start of the call;
//  3. each shared row becomes its old value plus the changes of the threads that touched it,
//     added in thread order (HS's hot nodes: plus their mean, as in the Hogwild schedule).
// So each range is word2vec.c's sequential pass, except that it does not see the other ranges'
// updates of shared rows made in the same call. Nothing depends on timing: the result is a
// function of (tables, batch, seed, lr, T), bit for bit. T = 1 is the sequential kernel.
// The bookkeeping is bitsets over the vocabulary (V/8 bytes each, so they stay in cache where
// the rows do not) and lists of the rows touched; the bits are cleared again at the end of the
// call, so no V-sized array is cleared per call. A shared row records its threads in a 32-bit
// mask: T <= 32.

constexpr int64_t kMaxDeterministicThreads = 32;

struct Bitset {
  std::vector<uint64_t> words;
  void fit(int64_t n) {
    if (static_cast<int64_t>(words.size()) != (n + 63) / 64) words.assign((n + 63) / 64, 0);
  }
  bool test(int64_t i) const { return (words[i >> 6] >> (i & 63)) & 1; }
  bool test_and_set(int64_t i) {  // one thread's own bitset: no atomics
    uint64_t& w = words[i >> 6];
    const uint64_t m = uint64_t{1} << (i & 63);
    const bool was = w & m;
    w |= m;
    return was;
  }
  void clear(int64_t i) { words[i >> 6] &= ~(uint64_t{1} << (i & 63)); }
  // For bitsets that several threads write (different bits of one word).
  void set_atomic(int64_t i) {
    __atomic_fetch_or(&words[i >> 6], uint64_t{1} << (i & 63), __ATOMIC_RELAXED);
  }
  void clear_atomic(int64_t i) {
    __atomic_fetch_and(&words[i >> 6], ~(uint64_t{1} << (i & 63)), __ATOMIC_RELAXED);
  }
};

// One thread's rows of one table in a call.
struct ThreadRows {
  Bitset mine;                   // the rows its range touches
  std::vector<int32_t> touched;  // the same, in first-touch order
  std::vector<int32_t> found;    // the shared rows it lists: those it is the lowest thread of
  std::vector<uint32_t> found_threads;  // their thread masks
  std::vector<float> priv;       // [shared, D] its copies of the shared rows it touches
};

// The rows of one table that a call's threads touch. Kept between calls (ScratchPool); every
// bit set during a call is cleared before it returns.
struct RowMarks {
  Bitset shared_bits;           // the shared rows
  std::vector<int32_t> slot;    // [V] a shared row's index into `shared` and the copies
  std::vector<int32_t> shared;  // the shared rows in slot order
  std::vector<uint32_t> threads_of;  // [shared] the threads that touch each
  std::vector<ThreadRows> th;   // per thread

  void fit(int64_t v, int64_t t) {
    shared_bits.fit(v);
    if (static_cast<int64_t>(slot.size()) != v) slot.assign(v, 0);
    th.resize(t);
    for (auto& r : th) {
      r.mine.fit(v);
      r.touched.clear();
      r.found.clear();
      r.found_threads.clear();
    }
  }
  bool is_shared(int32_t id) const { return shared_bits.test(id); }
  // Step 0, per id of thread w's range.
  void touch(int32_t id, int64_t w) {
    ThreadRows& r = th[w];
    if (!r.mine.test_and_set(id)) r.touched.push_back(id);
  }
  // Step 1 (after all of step 0): the rows thread w shares with others; it lists those it is
  // the lowest thread of, so each shared row is listed once.
  void find_shared(int64_t w) {
    ThreadRows& r = th[w];
    const int64_t t = static_cast<int64_t>(th.size());
    for (const int32_t id : r.touched) {
      uint32_t mask = 0;
      for (int64_t u = 0; u < t; ++u)
        if (u == w || th[u].mine.test(id)) mask |= 1u << u;
      if ((mask & (mask - 1)) == 0) continue;  // w alone
      if ((mask & ((1u << w) - 1)) != 0) continue;  // a lower thread lists it
      r.found.push_back(id);
      r.found_threads.push_back(mask);
      shared_bits.set_atomic(id);
    }
  }
  // Step 1, then (one thread): slots in thread order, then each thread's listing order.
  void assign_slots() {
    shared.clear();
    threads_of.clear();
    for (const auto& r : th) {
      shared.insert(shared.end(), r.found.begin(), r.found.end());
      threads_of.insert(threads_of.end(), r.found_threads.begin(), r.found_threads.end());
    }
    for (size_t s = 0; s < shared.size(); ++s) slot[shared[s]] = static_cast<int32_t>(s);
  }
  // Step 2, before the range: thread w's copies of the shared rows it touches.
  void copy_in(const float* table, int64_t d, int64_t w) {
    ThreadRows& r = th[w];
    r.priv.resize(shared.size() * d);
    const size_t n = r.touched.size();
    for (size_t k = 0; k < n; ++k) {
      const int32_t id = r.touched[k];
      if (!is_shared(id)) continue;
      std::memcpy(r.priv.data() + static_cast<int64_t>(slot[id]) * d,
                  table + static_cast<int64_t>(id) * d, d * sizeof(float));
    }
  }
  // Step 3 for slots [lo, hi): row += the sum over its threads, in thread order, of
  // (copy - row); times 1/n (n = its threads) for rows in `mean`. Then the slots' shared bits
  // are cleared.
  void merge(float* table, int64_t d, int64_t lo, int64_t hi, HotRange mean) {
    const float* ps[kMaxDeterministicThreads];
    for (int64_t s = lo; s < hi; ++s) {
      if (s + 2 < hi) prefetch_row(table + static_cast<int64_t>(shared[s + 2]) * d, d);
      const int32_t id = shared[s];
      const uint32_t bits = threads_of[s];
      int n = 0;
      for (size_t w = 0; w < th.size(); ++w)
        if (bits & (1u << w)) ps[n++] = th[w].priv.data() + s * d;
      float* __restrict row = table + static_cast<int64_t>(id) * d;
      const float scale = (id >= mean.lo && id < mean.hi) ? 1.0f / static_cast<float>(n) : 1.0f;
      if (n == 2) {  // the common case, in one vectorised pass
        const float* __restrict p0 = ps[0];
        const float* __restrict p1 = ps[1];
        for (int64_t j = 0; j < d; ++j) {
          const float r = row[j];
          float acc = 0.0f;
          acc += p0[j] - r;
          acc += p1[j] - r;
          row[j] = r + acc * scale;
        }
      } else {
        for (int64_t j = 0; j < d; ++j) {
          const float r = row[j];
          float acc = 0.0f;
          for (int k = 0; k < n; ++k) acc += ps[k][j] - r;
          row[j] = r + acc * scale;
        }
      }
      shared_bits.clear_atomic(id);
    }
  }
  // Step 3, too: thread w forgets the rows it touched (nobody reads its bitset any more).
  void forget(int64_t w) {
    ThreadRows& r = th[w];
    for (const int32_t id : r.touched) r.mine.clear(id);
  }
};

// Where thread w finds row `id` under the deterministic schedule: its copy if the row is
// shared, else the table.
struct SplitRows {
  float* table;
  const RowMarks* marks;
  float* priv;
  int64_t d;
  float* row(int32_t id) const {
    return marks->is_shared(id) ? priv + static_cast<int64_t>(marks->slot[id]) * d
                                : table + static_cast<int64_t>(id) * d;
  }
  float* update_row(int32_t id) const { return row(id); }
};

struct Scratch {
  RowMarks in, out;
};

// Scratch kept for the next call (one per concurrent call, e.g. one per simulated device).
class ScratchPool {
 public:
  std::unique_ptr<Scratch> take() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return std::make_unique<Scratch>();
    auto s = std::move(free_.back());
    free_.pop_back();
    return s;
  }
  void give(std::unique_ptr<Scratch> s) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(s));
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Scratch>> free_;
};

ScratchPool& scratch_pool() {
  static ScratchPool pool;
  return pool;
}

// A reusable barrier for the threads of one call: spin briefly, then yield the core.
class Barrier {
 public:
  explicit Barrier(int64_t n) : n_(n) {}
  void wait() {
    const uint64_t gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spin = 0; gen_.load(std::memory_order_acquire) == gen; ++spin)
      if (spin > 2000) std::this_thread::yield();
  }

 private:
  const int64_t n_;
  std::atomic<int64_t> count_{0};
  std::atomic<uint64_t> gen_{0};
};

// Runs step(p, w) for phases p = 0..n_phases-1 and workers w = 0..t-1, every phase after all of
// the one before, on t threads (the caller is w = 0). If the threads cannot be created, the
// caller runs every (p, w) itself in that order, which gives the same result.
template <class Step>
void run_phases(int64_t t, int n_phases, Step&& step) {
  Barrier barrier(t);
  auto phases = [&](int64_t w) {
    for (int p = 0; p < n_phases; ++p) {
      step(p, w);
      if (p + 1 < n_phases) barrier.wait();
    }
  };
  if (run_together(t, phases)) return;
  for (int p = 0; p < n_phases; ++p)
    for (int64_t w = 0; w < t; ++w) step(p, w);
}

template <class In, class Tgt>
void launch_deterministic(const In& in, const Tgt& tg, const Common& cm, int64_t b, int64_t v_in,
                          int64_t v_out, int64_t t) {
  const int64_t d = cm.d;
  std::unique_ptr<Scratch> sc = scratch_pool().take();
  RowMarks& ri = sc->in;
  RowMarks& ro = sc->out;
  ri.fit(v_in, t);
  ro.fit(v_out, t);
  const HotRange mean = tg.hot_range(v_out);
  run_phases(t, 5, [&](int p, int64_t w) {
    const int64_t lo = b * w / t, hi = b * (w + 1) / t;
    if (p == 0) {  // the rows of this range
      PairBuf pb;
      pb.reserve(in.max_in(), tg.max_tgt());
      for (int64_t i = lo; i < hi; ++i) {
        if (cm.mask[i] == 0.0f) continue;
        in.fill(i, pb);
        if (pb.n_in == 0) continue;  // run_range skips the pair
        tg.fill(i, pb);
        for (int j = 0; j < pb.n_in; ++j) ri.touch(pb.in_ids[j], w);
        for (int j = 0; j < pb.n_tgt; ++j) ro.touch(pb.tgt_ids[j], w);
      }
    } else if (p == 1) {
      ri.find_shared(w);
      ro.find_shared(w);
    } else if (p == 2) {
      if (w == 0) {
        ri.assign_slots();
        ro.assign_slots();
      }
    } else if (p == 3) {  // the range, sequentially
      ri.copy_in(cm.in_tab, d, w);
      ro.copy_in(cm.out_tab, d, w);
      run_range(lo, hi, in, tg, cm, SplitRows{cm.in_tab, &ri, ri.th[w].priv.data(), d},
                SplitRows{cm.out_tab, &ro, ro.th[w].priv.data(), d});
    } else {  // this worker's share of the shared rows; then it clears its own bits
      const int64_t ni = static_cast<int64_t>(ri.shared.size());
      const int64_t no = static_cast<int64_t>(ro.shared.size());
      ri.merge(cm.in_tab, d, ni * w / t, ni * (w + 1) / t, HotRange{});
      ro.merge(cm.out_tab, d, no * w / t, no * (w + 1) / t, mean);
      ri.forget(w);
      ro.forget(w);
    }
  });
  scratch_pool().give(std::move(sc));
}

constexpr int64_t kMinChunk = 64;

// Checks the ids, then runs the call on effective_threads(b, threads) threads: Hogwild, or the
// deterministic schedule (below) if `deterministic` and more than one thread.
template <class In, class Tgt>
ffi::Error launch(const In& in, const Tgt& tg, Common cm, int64_t b, int64_t v_in, int64_t v_out,
                  int64_t threads, bool deterministic) {
  std::string err;
  if (!in.valid(b, v_in, err) || !tg.valid(b, v_out, err)) return ffi::Error::InvalidArgument(err);
  advise_huge_pages(cm.in_tab, v_in * cm.d * static_cast<int64_t>(sizeof(float)));
  advise_huge_pages(cm.out_tab, v_out * cm.d * static_cast<int64_t>(sizeof(float)));
  const int64_t t = effective_threads(b, threads, kMinChunk);
  if (deterministic && t > 1) {
    if (t > kMaxDeterministicThreads)
      return ffi::Error::InvalidArgument("the deterministic schedule runs at most " +
                                         std::to_string(kMaxDeterministicThreads) + " threads");
    launch_deterministic(in, tg, cm, b, v_in, v_out, t);
    return ffi::Error::Success();
  }
  const HotRange hr = t > 1 ? tg.hot_range(v_out) : HotRange{};
  const int64_t d = cm.d;
  const int64_t n_hot = hr.hi - hr.lo;
  // One private copy of the hot rows per thread (the table keeps their old values meanwhile).
  std::vector<std::vector<float>> hot(n_hot > 0 ? t : 0);
  std::vector<std::vector<unsigned char>> touched(hot.size());
  for (size_t w = 0; w < hot.size(); ++w) {
    hot[w].assign(cm.out_tab + hr.lo * d, cm.out_tab + hr.hi * d);
    touched[w].assign(n_hot, 0);
  }
  parallel_chunks(b, t, kMinChunk, [&](int64_t w, int64_t lo, int64_t hi) {
    const bool own = n_hot > 0;
    run_range(lo, hi, in, tg, cm, TableRows{cm.in_tab, d},
              OutRows{cm.out_tab, own ? hot[w].data() : nullptr, own ? touched[w].data() : nullptr,
                      hr, d});
  });
  for (int64_t r = 0; r < n_hot; ++r) {  // old value + mean change of the threads that touched r
    float* dst = cm.out_tab + (hr.lo + r) * d;
    int n = 0, last = 0;
    for (size_t w = 0; w < hot.size(); ++w)
      if (touched[w][r]) ++n, last = static_cast<int>(w);
    if (n == 1) {
      std::memcpy(dst, hot[last].data() + r * d, d * sizeof(float));
    } else if (n > 1) {
      const float inv = 1.0f / static_cast<float>(n);
      for (int64_t j = 0; j < d; ++j) {
        float change = 0.0f;
        for (size_t w = 0; w < hot.size(); ++w)
          if (touched[w][r]) change += hot[w][r * d + j] - dst[j];
        dst[j] += change * inv;
      }
    }
  }
  return ffi::Error::Success();
}

constexpr const char* kBadAlias = "alias_idx holds out-of-range entries";

// Draws n = i*K + k for pairs [0, b) into dst [b, K]; false if the alias table holds an
// out-of-range entry (that draw is then 0).
bool draw_negatives(uint64_t key, const float* prob, const int32_t* alias, int64_t v, int64_t b,
                    int64_t k, int64_t threads, int32_t* dst) {
  std::atomic<bool> bad{false};
  parallel_chunks(b, threads, 4096, [&](int64_t, int64_t lo, int64_t hi) {
    for (int64_t n = lo * k; n < hi * k; ++n) {
      int32_t t = alias_draw(draw_bits(key, static_cast<uint64_t>(n)), prob, alias, v);
      if (t < 0) {
        bad.store(true, std::memory_order_relaxed);
        t = 0;
      }
      dst[n] = t;
    }
  });
  return !bad.load();
}

// The sampled SGNS kernels. The deterministic schedule marks every row before any update, so
// there the negatives are drawn into a buffer first (the same draws) and the given-negatives
// path runs on it; an alias table entry out of range then fails before any update.
template <class In>
ffi::Error launch_sampled(const In& in, const TgtNSSampled& tg, const Common& cm, int64_t b,
                          int64_t v_in, int64_t v_out, int64_t threads, bool deterministic) {
  if (!deterministic || effective_threads(b, threads, kMinChunk) <= 1) {
    W2V_RETURN_IF_ERROR(launch(in, tg, cm, b, v_in, v_out, threads, false));
    if (tg.bad_alias->load()) return ffi::Error::InvalidArgument(kBadAlias);
    return ffi::Error::Success();
  }
  std::string err;
  if (!tg.valid(b, v_out, err)) return ffi::Error::InvalidArgument(err);
  std::vector<int32_t> negs(b * tg.k);
  if (!draw_negatives(tg.key, tg.prob, tg.alias, tg.v_alias, b, tg.k, threads, negs.data()))
    return ffi::Error::InvalidArgument(kBadAlias);
  return launch(in, TgtNS{tg.pos, negs.data(), tg.k}, cm, b, v_in, v_out, threads, true);
}

// ---------------------------------------------------------------------------------------------
// Handlers.

ffi::Error SgnsUpdateImpl(ffi::Buffer<ffi::F32, 2> cv, ffi::Buffer<ffi::F32, 2> ov,
                          ffi::Buffer<ffi::S32, 1> center, ffi::Buffer<ffi::S32, 1> context,
                          ffi::Buffer<ffi::S32, 2> negatives, ffi::Buffer<ffi::F32, 1> mask,
                          ffi::Buffer<ffi::F32, 0> lr, int64_t num_threads,
                          int64_t deterministic, int64_t compute_loss,
                          ffi::Result<ffi::Buffer<ffi::F32, 2>> cv_out,
                          ffi::Result<ffi::Buffer<ffi::F32, 2>> ov_out,
                          ffi::Result<ffi::Buffer<ffi::F32, 1>> loss) {
  const int64_t d = cv.dimensions()[1], b = center.dimensions()[0];
  const int64_t k = negatives.dimensions()[1];
  W2V_RETURN_IF_ERROR(check_table("outside_vecs", ov, d));
  W2V_RETURN_IF_ERROR(check_len("context", context.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("negatives", negatives.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("mask", mask.dimensions()[0], b));
  Common cm{inplace(cv, cv_out), inplace(ov, ov_out), d, mask.typed_data(), lr.typed_data()[0],
            loss->typed_data(), compute_loss != 0, false, false};
  InSG in{center.typed_data()};
  TgtNS tg{context.typed_data(), negatives.typed_data(), k};
  return launch(in, tg, cm, b, cv.dimensions()[0], ov.dimensions()[0], num_threads,
                deterministic != 0);
}

ffi::Error SgnsSampledUpdateImpl(
    ffi::Buffer<ffi::F32, 2> cv, ffi::Buffer<ffi::F32, 2> ov, ffi::Buffer<ffi::S32, 1> center,
    ffi::Buffer<ffi::S32, 1> context, ffi::Buffer<ffi::F32, 1> mask,
    ffi::Buffer<ffi::F32, 1> alias_prob, ffi::Buffer<ffi::S32, 1> alias_idx,
    ffi::Buffer<ffi::U32, 1> seed, ffi::Buffer<ffi::F32, 0> lr, int64_t num_threads,
    int64_t deterministic, int64_t compute_loss, int64_t negative,
    ffi::Result<ffi::Buffer<ffi::F32, 2>> cv_out,
    ffi::Result<ffi::Buffer<ffi::F32, 2>> ov_out, ffi::Result<ffi::Buffer<ffi::F32, 1>> loss) {
  const int64_t d = cv.dimensions()[1], b = center.dimensions()[0];
  W2V_RETURN_IF_ERROR(check_table("outside_vecs", ov, d));
  W2V_RETURN_IF_ERROR(check_len("context", context.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("mask", mask.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("alias_idx", alias_idx.dimensions()[0], alias_prob.dimensions()[0]));
  W2V_RETURN_IF_ERROR(check_len("seed", seed.dimensions()[0], 2));
  if (negative < 0) return ffi::Error::InvalidArgument("negative must be >= 0");
  if (alias_prob.dimensions()[0] <= 0) return ffi::Error::InvalidArgument("empty alias table");
  Common cm{inplace(cv, cv_out), inplace(ov, ov_out), d, mask.typed_data(), lr.typed_data()[0],
            loss->typed_data(), compute_loss != 0, false, false};
  std::atomic<bool> bad{false};
  InSG in{center.typed_data()};
  TgtNSSampled tg{context.typed_data(), alias_prob.typed_data(), alias_idx.typed_data(),
                  alias_prob.dimensions()[0], key_from_seed(seed.typed_data()), negative, &bad};
  return launch_sampled(in, tg, cm, b, cv.dimensions()[0], ov.dimensions()[0], num_threads,
                        deterministic != 0);
}

ffi::Error AliasSampleImpl(ffi::Buffer<ffi::F32, 1> alias_prob, ffi::Buffer<ffi::S32, 1> alias_idx,
                           ffi::Buffer<ffi::U32, 1> seed, int64_t num_threads,
                           ffi::Result<ffi::Buffer<ffi::S32, 2>> out) {
  W2V_RETURN_IF_ERROR(check_len("alias_idx", alias_idx.dimensions()[0], alias_prob.dimensions()[0]));
  W2V_RETURN_IF_ERROR(check_len("seed", seed.dimensions()[0], 2));
  const int64_t v = alias_prob.dimensions()[0];
  if (v <= 0) return ffi::Error::InvalidArgument("empty alias table");
  const int64_t b = out->dimensions()[0], k = out->dimensions()[1];
  const uint64_t key = key_from_seed(seed.typed_data());
  const float* prob = alias_prob.typed_data();
  const int32_t* alias = alias_idx.typed_data();
  if (!draw_negatives(key, prob, alias, v, b, k, num_threads, out->typed_data()))
    return ffi::Error::InvalidArgument(kBadAlias);
  return ffi::Error::Success();
}

ffi::Error SgHsUpdateImpl(ffi::Buffer<ffi::F32, 2> cv, ffi::Buffer<ffi::F32, 2> nv,
                          ffi::Buffer<ffi::S32, 1> center, ffi::Buffer<ffi::S32, 1> context,
                          ffi::Buffer<ffi::S32, 2> points, ffi::Buffer<ffi::S32, 2> codes,
                          ffi::Buffer<ffi::S32, 1> lengths, ffi::Buffer<ffi::F32, 1> mask,
                          ffi::Buffer<ffi::F32, 0> lr, int64_t num_threads,
                          int64_t deterministic, int64_t compute_loss,
                          ffi::Result<ffi::Buffer<ffi::F32, 2>> cv_out,
                          ffi::Result<ffi::Buffer<ffi::F32, 2>> nv_out,
                          ffi::Result<ffi::Buffer<ffi::F32, 1>> loss) {
  const int64_t d = cv.dimensions()[1], b = center.dimensions()[0];
  const int64_t vw = points.dimensions()[0], l = points.dimensions()[1];
  W2V_RETURN_IF_ERROR(check_table("node_vecs", nv, d));
  W2V_RETURN_IF_ERROR(check_len("context", context.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("mask", mask.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("codes rows", codes.dimensions()[0], vw));
  W2V_RETURN_IF_ERROR(check_len("codes columns", codes.dimensions()[1], l));
  W2V_RETURN_IF_ERROR(check_len("lengths", lengths.dimensions()[0], vw));
  Common cm{inplace(cv, cv_out), inplace(nv, nv_out), d, mask.typed_data(), lr.typed_data()[0],
            loss->typed_data(), compute_loss != 0, false, false};
  InSG in{center.typed_data()};
  TgtHS tg{context.typed_data(), points.typed_data(), codes.typed_data(), lengths.typed_data(),
           vw, l};
  return launch(in, tg, cm, b, cv.dimensions()[0], nv.dimensions()[0], num_threads,
                deterministic != 0);
}

ffi::Error CbowNsUpdateImpl(ffi::Buffer<ffi::F32, 2> cv, ffi::Buffer<ffi::F32, 2> ov,
                            ffi::Buffer<ffi::S32, 1> center, ffi::Buffer<ffi::S32, 2> context,
                            ffi::Buffer<ffi::F32, 2> context_mask,
                            ffi::Buffer<ffi::S32, 2> negatives, ffi::Buffer<ffi::F32, 1> mask,
                            ffi::Buffer<ffi::F32, 0> lr, int64_t num_threads,
                            int64_t deterministic, int64_t compute_loss,
                            int64_t cbow_mean, int64_t exact_grad,
                            ffi::Result<ffi::Buffer<ffi::F32, 2>> cv_out,
                            ffi::Result<ffi::Buffer<ffi::F32, 2>> ov_out,
                            ffi::Result<ffi::Buffer<ffi::F32, 1>> loss) {
  const int64_t d = cv.dimensions()[1], b = center.dimensions()[0];
  const int64_t c = context.dimensions()[1], k = negatives.dimensions()[1];
  W2V_RETURN_IF_ERROR(check_table("outside_vecs", ov, d));
  W2V_RETURN_IF_ERROR(check_len("context", context.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("context_mask rows", context_mask.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("context_mask columns", context_mask.dimensions()[1], c));
  W2V_RETURN_IF_ERROR(check_len("negatives", negatives.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("mask", mask.dimensions()[0], b));
  Common cm{inplace(cv, cv_out), inplace(ov, ov_out), d, mask.typed_data(), lr.typed_data()[0],
            loss->typed_data(), compute_loss != 0, cbow_mean != 0, exact_grad != 0};
  InCBOW in{context.typed_data(), context_mask.typed_data(), c};
  TgtNS tg{center.typed_data(), negatives.typed_data(), k};
  return launch(in, tg, cm, b, cv.dimensions()[0], ov.dimensions()[0], num_threads,
                deterministic != 0);
}

ffi::Error CbowNsSampledUpdateImpl(
    ffi::Buffer<ffi::F32, 2> cv, ffi::Buffer<ffi::F32, 2> ov, ffi::Buffer<ffi::S32, 1> center,
    ffi::Buffer<ffi::S32, 2> context, ffi::Buffer<ffi::F32, 2> context_mask,
    ffi::Buffer<ffi::F32, 1> mask, ffi::Buffer<ffi::F32, 1> alias_prob,
    ffi::Buffer<ffi::S32, 1> alias_idx, ffi::Buffer<ffi::U32, 1> seed, ffi::Buffer<ffi::F32, 0> lr,
    int64_t num_threads, int64_t deterministic, int64_t compute_loss, int64_t negative,
    int64_t cbow_mean, int64_t exact_grad, ffi::Result<ffi::Buffer<ffi::F32, 2>> cv_out,
    ffi::Result<ffi::Buffer<ffi::F32, 2>> ov_out, ffi::Result<ffi::Buffer<ffi::F32, 1>> loss) {
  const int64_t d = cv.dimensions()[1], b = center.dimensions()[0];
  const int64_t c = context.dimensions()[1];
  W2V_RETURN_IF_ERROR(check_table("outside_vecs", ov, d));
  W2V_RETURN_IF_ERROR(check_len("context", context.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("context_mask rows", context_mask.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("context_mask columns", context_mask.dimensions()[1], c));
  W2V_RETURN_IF_ERROR(check_len("mask", mask.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("alias_idx", alias_idx.dimensions()[0], alias_prob.dimensions()[0]));
  W2V_RETURN_IF_ERROR(check_len("seed", seed.dimensions()[0], 2));
  if (negative < 0) return ffi::Error::InvalidArgument("negative must be >= 0");
  if (alias_prob.dimensions()[0] <= 0) return ffi::Error::InvalidArgument("empty alias table");
  Common cm{inplace(cv, cv_out), inplace(ov, ov_out), d, mask.typed_data(), lr.typed_data()[0],
            loss->typed_data(), compute_loss != 0, cbow_mean != 0, exact_grad != 0};
  std::atomic<bool> bad{false};
  InCBOW in{context.typed_data(), context_mask.typed_data(), c};
  TgtNSSampled tg{center.typed_data(), alias_prob.typed_data(), alias_idx.typed_data(),
                  alias_prob.dimensions()[0], key_from_seed(seed.typed_data()), negative, &bad};
  return launch_sampled(in, tg, cm, b, cv.dimensions()[0], ov.dimensions()[0], num_threads,
                        deterministic != 0);
}

ffi::Error CbowHsUpdateImpl(ffi::Buffer<ffi::F32, 2> cv, ffi::Buffer<ffi::F32, 2> nv,
                            ffi::Buffer<ffi::S32, 1> center, ffi::Buffer<ffi::S32, 2> context,
                            ffi::Buffer<ffi::F32, 2> context_mask, ffi::Buffer<ffi::S32, 2> points,
                            ffi::Buffer<ffi::S32, 2> codes, ffi::Buffer<ffi::S32, 1> lengths,
                            ffi::Buffer<ffi::F32, 1> mask, ffi::Buffer<ffi::F32, 0> lr,
                            int64_t num_threads, int64_t deterministic, int64_t compute_loss,
                            int64_t cbow_mean, int64_t exact_grad,
                            ffi::Result<ffi::Buffer<ffi::F32, 2>> cv_out,
                            ffi::Result<ffi::Buffer<ffi::F32, 2>> nv_out,
                            ffi::Result<ffi::Buffer<ffi::F32, 1>> loss) {
  const int64_t d = cv.dimensions()[1], b = center.dimensions()[0];
  const int64_t c = context.dimensions()[1];
  const int64_t vw = points.dimensions()[0], l = points.dimensions()[1];
  W2V_RETURN_IF_ERROR(check_table("node_vecs", nv, d));
  W2V_RETURN_IF_ERROR(check_len("context", context.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("context_mask rows", context_mask.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("context_mask columns", context_mask.dimensions()[1], c));
  W2V_RETURN_IF_ERROR(check_len("mask", mask.dimensions()[0], b));
  W2V_RETURN_IF_ERROR(check_len("codes rows", codes.dimensions()[0], vw));
  W2V_RETURN_IF_ERROR(check_len("codes columns", codes.dimensions()[1], l));
  W2V_RETURN_IF_ERROR(check_len("lengths", lengths.dimensions()[0], vw));
  Common cm{inplace(cv, cv_out), inplace(nv, nv_out), d, mask.typed_data(), lr.typed_data()[0],
            loss->typed_data(), compute_loss != 0, cbow_mean != 0, exact_grad != 0};
  InCBOW in{context.typed_data(), context_mask.typed_data(), c};
  TgtHS tg{center.typed_data(), points.typed_data(), codes.typed_data(), lengths.typed_data(),
           vw, l};
  return launch(in, tg, cm, b, cv.dimensions()[0], nv.dimensions()[0], num_threads,
                deterministic != 0);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Exported FFI symbols (registered from Python with jax.ffi.register_ffi_target).

using F32R2 = ffi::Buffer<ffi::F32, 2>;
using F32R1 = ffi::Buffer<ffi::F32, 1>;
using F32R0 = ffi::Buffer<ffi::F32, 0>;
using S32R2 = ffi::Buffer<ffi::S32, 2>;
using S32R1 = ffi::Buffer<ffi::S32, 1>;
using U32R1 = ffi::Buffer<ffi::U32, 1>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2vSgnsUpdate, SgnsUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32R2>()  // center_vecs
                                  .Arg<F32R2>()  // outside_vecs
                                  .Arg<S32R1>()  // center
                                  .Arg<S32R1>()  // context
                                  .Arg<S32R2>()  // negatives
                                  .Arg<F32R1>()  // mask
                                  .Arg<F32R0>()  // lr
                                  .Attr<int64_t>("num_threads")
                                  .Attr<int64_t>("deterministic")
                                  .Attr<int64_t>("compute_loss")
                                  .Ret<F32R2>()
                                  .Ret<F32R2>()
                                  .Ret<F32R1>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2vSgnsSampledUpdate, SgnsSampledUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32R2>()  // center_vecs
                                  .Arg<F32R2>()  // outside_vecs
                                  .Arg<S32R1>()  // center
                                  .Arg<S32R1>()  // context
                                  .Arg<F32R1>()  // mask
                                  .Arg<F32R1>()  // alias_prob
                                  .Arg<S32R1>()  // alias_idx
                                  .Arg<U32R1>()  // seed [2]
                                  .Arg<F32R0>()  // lr
                                  .Attr<int64_t>("num_threads")
                                  .Attr<int64_t>("deterministic")
                                  .Attr<int64_t>("compute_loss")
                                  .Attr<int64_t>("negative")
                                  .Ret<F32R2>()
                                  .Ret<F32R2>()
                                  .Ret<F32R1>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2vAliasSample, AliasSampleImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32R1>()  // alias_prob
                                  .Arg<S32R1>()  // alias_idx
                                  .Arg<U32R1>()  // seed [2]
                                  .Attr<int64_t>("num_threads")
                                  .Ret<S32R2>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2vSgHsUpdate, SgHsUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32R2>()  // center_vecs
                                  .Arg<F32R2>()  // node_vecs
                                  .Arg<S32R1>()  // center
                                  .Arg<S32R1>()  // context
                                  .Arg<S32R2>()  // points
                                  .Arg<S32R2>()  // codes
                                  .Arg<S32R1>()  // lengths
                                  .Arg<F32R1>()  // mask
                                  .Arg<F32R0>()  // lr
                                  .Attr<int64_t>("num_threads")
                                  .Attr<int64_t>("deterministic")
                                  .Attr<int64_t>("compute_loss")
                                  .Ret<F32R2>()
                                  .Ret<F32R2>()
                                  .Ret<F32R1>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2vCbowNsUpdate, CbowNsUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32R2>()  // center_vecs (input vectors)
                                  .Arg<F32R2>()  // outside_vecs
                                  .Arg<S32R1>()  // center (predicted word)
                                  .Arg<S32R2>()  // context [B, C]
                                  .Arg<F32R2>()  // context_mask [B, C]
                                  .Arg<S32R2>()  // negatives
                                  .Arg<F32R1>()  // mask
                                  .Arg<F32R0>()  // lr
                                  .Attr<int64_t>("num_threads")
                                  .Attr<int64_t>("deterministic")
                                  .Attr<int64_t>("compute_loss")
                                  .Attr<int64_t>("cbow_mean")
                                  .Attr<int64_t>("exact_grad")
                                  .Ret<F32R2>()
                                  .Ret<F32R2>()
                                  .Ret<F32R1>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2vCbowNsSampledUpdate, CbowNsSampledUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32R2>()  // center_vecs
                                  .Arg<F32R2>()  // outside_vecs
                                  .Arg<S32R1>()  // center
                                  .Arg<S32R2>()  // context
                                  .Arg<F32R2>()  // context_mask
                                  .Arg<F32R1>()  // mask
                                  .Arg<F32R1>()  // alias_prob
                                  .Arg<S32R1>()  // alias_idx
                                  .Arg<U32R1>()  // seed [2]
                                  .Arg<F32R0>()  // lr
                                  .Attr<int64_t>("num_threads")
                                  .Attr<int64_t>("deterministic")
                                  .Attr<int64_t>("compute_loss")
                                  .Attr<int64_t>("negative")
                                  .Attr<int64_t>("cbow_mean")
                                  .Attr<int64_t>("exact_grad")
                                  .Ret<F32R2>()
                                  .Ret<F32R2>()
                                  .Ret<F32R1>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2vCbowHsUpdate, CbowHsUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32R2>()  // center_vecs
                                  .Arg<F32R2>()  // node_vecs
                                  .Arg<S32R1>()  // center (predicted word)
                                  .Arg<S32R2>()  // context
                                  .Arg<F32R2>()  // context_mask
                                  .Arg<S32R2>()  // points
                                  .Arg<S32R2>()  // codes
                                  .Arg<S32R1>()  // lengths
                                  .Arg<F32R1>()  // mask
                                  .Arg<F32R0>()  // lr
                                  .Attr<int64_t>("num_threads")
                                  .Attr<int64_t>("deterministic")
                                  .Attr<int64_t>("compute_loss")
                                  .Attr<int64_t>("cbow_mean")
                                  .Attr<int64_t>("exact_grad")
                                  .Ret<F32R2>()
                                  .Ret<F32R2>()
                                  .Ret<F32R1>());

// Plain C helper (ctypes): Vose's alias method, sampling.vose_alias's loop operation for
// operation, so the same table bit for bit (the Python loop takes about a second at V = 1e6).
// q [n] = p * n for a distribution p; prob [n] float64 and alias [n] int64 come back as that
// function leaves them: paired entries get (q at pairing time, the large entry), the leftovers
// (1 up to rounding) keep (1, themselves).
extern "C" void w2v_vose_alias(const double* q_in, int64_t n, double* prob, int64_t* alias) {
  std::vector<double> q(q_in, q_in + n);
  std::vector<int64_t> small, large;
  for (int64_t i = 0; i < n; ++i) {
    prob[i] = 1.0;
    alias[i] = i;
    (q[i] < 1.0 ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const int64_t s = small.back(), g = large.back();
    small.pop_back();
    large.pop_back();
    prob[s] = q[s];
    alias[s] = g;
    q[g] = (q[g] + q[s]) - 1.0;
    (q[g] < 1.0 ? small : large).push_back(g);
  }
}
