// The memory floor of an SGNS pair as V grows: the rows one skip-gram SGNS pair touches, with
// the arithmetic reduced to one dot product and one axpy per row, nothing else.
//
//   gcc -O3 -march=native -ffast-math bench/row_access.c -o /tmp/row_access -lm
//   /tmp/row_access                 # V = 1e4 and 1e6, prefetch distance 0 and 4 pairs
//
// Per pair: the center row of table A (Zipf(1) id, like running text), the context row and
// K = 5 negative rows of table B (context Zipf(1), negatives unigram^0.75), D = 100 floats,
// read and written once each, as in w2v_jax's fused kernel (w2v_jax/kernels/w2v_kernels.cc).
// The two tables take 2 * V * 400 bytes: 8 MB at V = 1e4, 800 MB at V = 1e6. Whatever a
// trainer computes on top, its cost per pair cannot grow with V by less than this loop's once
// it has hidden its own arithmetic behind the memory traffic; BENCHMARKS.md compares the two.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { D = 100, K = 5, PAIRS = 2000000 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static uint64_t next(uint64_t* s) {  // xorshift64
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

// Inverse CDF of p(r) ~ r^-a over ranks 1..V (continuous approximation), as a 0-based id.
static int32_t draw(uint64_t* s, long v, double a) {
  const double u = (next(s) >> 11) * (1.0 / 9007199254740992.0);
  double r;
  if (a == 1.0) {
    r = exp(u * log((double)v + 1.0));
  } else {
    const double e = 1.0 - a;
    r = pow(1.0 + u * (pow((double)v + 1.0, e) - 1.0), 1.0 / e);
  }
  long i = (long)r - 1;
  return (int32_t)(i < 0 ? 0 : (i >= v ? v - 1 : i));
}

static float row_update(float* u, const float* h) {
  float f = 0.0f;
  for (int j = 0; j < D; ++j) f += u[j] * h[j];
  const float g = 1e-6f * f;
  for (int j = 0; j < D; ++j) u[j] += g * h[j];
  return f;
}

static void prefetch_row(const float* row) {
  for (int b = 0; b < D * 4; b += 64) __builtin_prefetch((const char*)row + b, 1, 3);
}

static double run(long v, int ahead) {
  float* a = malloc(sizeof(float) * v * D);
  float* b = malloc(sizeof(float) * v * D);
  int32_t* ids = malloc(sizeof(int32_t) * PAIRS * (K + 2));
  for (long i = 0; i < v * D; ++i) a[i] = b[i] = 1e-3f;
  uint64_t s = 88172645463325252ULL;
  for (long p = 0; p < PAIRS; ++p) {
    ids[p * (K + 2)] = draw(&s, v, 1.0);      // center
    ids[p * (K + 2) + 1] = draw(&s, v, 1.0);  // context
    for (int k = 0; k < K; ++k) ids[p * (K + 2) + 2 + k] = draw(&s, v, 0.75);
  }
  float acc = 0.0f;
  const double t0 = now();
  for (long p = 0; p < PAIRS; ++p) {
    if (ahead && p + ahead < PAIRS) {
      const int32_t* q = ids + (p + ahead) * (K + 2);
      prefetch_row(a + (long)q[0] * D);
      for (int t = 1; t < K + 2; ++t) prefetch_row(b + (long)q[t] * D);
    }
    const int32_t* q = ids + p * (K + 2);
    float* h = a + (long)q[0] * D;
    for (int t = 1; t < K + 2; ++t) acc += row_update(b + (long)q[t] * D, h);
    acc += row_update(h, b + (long)q[1] * D);
  }
  const double ns = (now() - t0) / PAIRS * 1e9;
  if (acc == 12345.0f) printf(" ");  // keep the work
  free(a);
  free(b);
  free(ids);
  return ns;
}

int main(int argc, char** argv) {
  const long small = argc > 1 ? atol(argv[1]) : 10000, big = argc > 2 ? atol(argv[2]) : 1000000;
  for (int ahead = 0; ahead <= 4; ahead += 4) {
    const double ns_small = run(small, ahead), ns_big = run(big, ahead);
    printf("prefetch %d pairs ahead: V=%ld %.1f ns/pair, V=%ld %.1f ns/pair, ratio %.2fx\n", ahead,
           small, ns_small, big, ns_big, ns_big / ns_small);
  }
  return 0;
}
