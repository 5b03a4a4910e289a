// The fused SGNS kernel timed without Python, JAX or XLA: the kernel's own source compiled into
// one program that calls `launch` (the function every FFI handler calls) on batches of
// synthetic examples, so that `perf record` sees nothing but the kernel and a change to it can
// be timed to a few percent.
//
//   INC=$(python -c 'import jax; print(jax.ffi.include_dir())')
//   g++ -O3 -march=native -std=c++17 -pthread -I"$INC" bench/kernel_native.cc -o /tmp/kernel_native
//   /tmp/kernel_native [V=9000] [threads=1] [batch=16384] [model=sg|cbow] [deterministic=0|1]
//
// Examples: skip-gram pairs (center, context) or CBOW windows (10 context slots, radius
// b ~ U{1..5} as under the dynamic window, mean of the context rows), every id Zipf(1) over V
// (running text without subsampling), K = 5 negatives from unigram^0.75, D = 100, 2^21
// examples per repeat, 4 repeats, the same tables throughout; prints ns per example of wall
// time for each repeat. `deterministic=1` runs the kernel's deterministic schedule (threads >
// 1). The kernel backs a table with huge pages on the second call that sees it (w2v_kernels.cc,
// "Huge pages"), so the first repeat includes that one-off cost; build with -DW2V_NO_HUGE_PAGES
// for the 4 KiB baseline.
#include "../w2v_jax/kernels/w2v_kernels.cc"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t v = argc > 1 ? std::atol(argv[1]) : 9000;
  const int64_t threads = argc > 2 ? std::atol(argv[2]) : 1;
  const int64_t batch = argc > 3 ? std::atol(argv[3]) : 16384;
  const bool cbow = argc > 4 && std::string(argv[4]) == "cbow";
  const bool deterministic = argc > 5 && std::atoi(argv[5]) != 0;
  constexpr int64_t kPairs = int64_t{1} << 21, kNeg = 5, kDim = 100, kSlots = 10, kRadius = 5;

  std::vector<float> in(v * kDim), out(v * kDim);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> init(-0.005f, 0.005f);
  for (auto& x : in) x = init(rng);
  for (auto& x : out) x = 0.1f * init(rng);
  // Inverse CDF of p(r) ~ r^-a over ranks 1..V (continuous approximation), as a 0-based id.
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto zipf = [&](double a) {
    const double u = unit(rng);
    const double e = 1.0 - a;
    const double r = a == 1.0 ? std::exp(u * std::log(v + 1.0))
                              : std::pow(1.0 + u * (std::pow(v + 1.0, e) - 1.0), 1.0 / e);
    return static_cast<int32_t>(std::clamp<int64_t>(static_cast<int64_t>(r) - 1, 0, v - 1));
  };
  // Skip-gram reads window[i * kSlots] as example i's one input row; CBOW reads all kSlots,
  // slot j at offset j - 5 (j < 5) or j - 4, used if within the example's radius.
  std::vector<int32_t> center(kPairs), window(kPairs * kSlots), negs(kPairs * kNeg);
  std::vector<float> slot_mask(kPairs * kSlots);
  for (int64_t i = 0; i < kPairs; ++i) {
    center[i] = zipf(1.0);
    const int64_t radius = 1 + static_cast<int64_t>(rng() % kRadius);
    for (int64_t j = 0; j < kSlots; ++j) {
      window[i * kSlots + j] = zipf(1.0);
      const int64_t offset = j < kRadius ? kRadius - j : j - kRadius + 1;
      slot_mask[i * kSlots + j] = offset <= radius ? 1.0f : 0.0f;
    }
    for (int64_t k = 0; k < kNeg; ++k) negs[i * kNeg + k] = zipf(0.75);
  }
  std::vector<int32_t> sg_input(kPairs);
  for (int64_t i = 0; i < kPairs; ++i) sg_input[i] = window[i * kSlots];
  std::vector<float> mask(kPairs, 1.0f), loss(kPairs);

  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s + batch <= kPairs; s += batch) {
      TgtNS tg{center.data() + s, negs.data() + s * kNeg, kNeg};
      Common cm{in.data(), out.data(), kDim, mask.data() + s, 0.01f, loss.data() + s, true, cbow,
                false};
      const ffi::Error err =
          cbow ? launch(InCBOW{window.data() + s * kSlots, slot_mask.data() + s * kSlots, kSlots},
                        tg, cm, batch, v, v, threads, deterministic)
               : launch(InSG{sg_input.data() + s}, tg, cm, batch, v, v, threads, deterministic);
      if (!err.success()) {
        std::fprintf(stderr, "kernel error: %s\n", err.message().c_str());
        return 1;
      }
    }
    const double sec = seconds_since(t0);
    std::printf("%s V=%ld threads=%ld batch=%ld%s: %.1f ns per %s\n", cbow ? "cbow" : "sg",
                static_cast<long>(v), static_cast<long>(threads), static_cast<long>(batch),
                deterministic ? " deterministic" : "", sec / (kPairs / batch * batch) * 1e9,
                cbow ? "window" : "pair");
  }
  return 0;
}
