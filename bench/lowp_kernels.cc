// Development harness for the low-precision decode kernels (native/cpu/lowp.h), in the manner of llm.c's dev/cuda:
// every variant is validated against a float64 reference on the same inputs, then timed streaming weights from
// memory. The shipped kernels are the winners; the losing variants live only here, with their measured times, so
// the choice can be rerun:
//   cd native/cpu && g++ -std=c++17 -O3 -fopenmp -I. ../../bench/lowp_kernels.cc lowp.cc lowp_avx2.cc lowp_avx512.cc
//       workers.cc -o /tmp/lowp_kernels -lopenblas   (one line)
//   /tmp/lowp_kernels [FORMAT|all] [B] [threads]
// LOWP_SHARED=1 times gemvShared (a layer's q, k, v, g in one call) against gemv product by product instead.
// Variants: FORMAT/ISA for each shipped ISA the CPU has, plus bf16/widen (8 weights widened to float32 at a time,
// instead of 16 split into even and odd elements), int8/cvt-f32 (each int8 weight converted to float32
// and multiplied with float32 x, instead of x quantised to int16) and q4/vnni256 (the 256-bit q4 VNNI kernel). Timing: B rows of x against a set of copies of an
// [N, K] matrix whose bytes add up to 1 GiB in every format (LOWP_SET_MIB=M: M MiB), called in turn, so every call
// streams its weights from memory as a decode step does: this stop's Intel Xeon serves up to 64 MiB from its caches
// (one thread reads 30 GB/s there, 16 from memory), so the 256 MiB of float32 matrices the harness used before were
// 32 MiB of q4, read from the caches. GB/s counts weight bytes (and scales) read per second.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lowp.h"
#include "workers.h"

using namespace retnet::lowp;

namespace dev {
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace {
#include "lowp_kernels.inc"
#undef LOWP_DOT2
#undef LOWP_Q4PART
#undef LOWP_Q4FOLD
#undef LOWP_Q4WIDEN
// The losing int8 variant: int8 → int32 → float32 per 8 weights, FMA with float32 x.
struct LoadI8 {
  const int8_t* w;
  int64_t ld;
  __m256 operator()(int64_t n, int64_t k) const {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + n * ld + k))));
  }
  float one(int64_t n, int64_t k) const { return w[n * ld + k]; }
};
}  // namespace
void bf16WidenRows(const Weights& w, const float* x, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  floatRows(LoadBF16{static_cast<const uint16_t*>(w.data), w.K}, w.K, x, B, y, ldy, n0, n1);
}
void int8CvtRows(const Weights& w, const float* x, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  floatRows(LoadI8{static_cast<const int8_t*>(w.data), w.K}, w.K, x, B, y, ldy, n0, n1);
  const float* s = static_cast<const float*>(w.scales);
  for (int64_t b = 0; b < B; b++)
    for (int64_t n = n0; n < n1; n++) y[b * ldy + n] *= s[n];
}
#pragma GCC pop_options
}  // namespace dev

// The losing q4 AVX512-VNNI variant: the 256-bit kernel of lowp_kernels.inc (pairs of blocks, phaddd folds of 8
// blocks per scale FMA) with vpdpbusd, which lowp_avx512.cc's 512-bit q4x4Tile replaced. On this stop's Intel Xeon
// (family 6 model 167; timing lock, ms per [2048, 2048] matrix, 1 GiB set, 1 / 2 threads, two runs) it read the same
// as the 512-bit kernel at B 1 (0.207, 0.202 / 0.131, 0.129 against 0.202, 0.199 / 0.133, 0.131; avx2 0.210 /
// 0.135) and lost at B 8 (0.620 / 0.358 against 0.542 / 0.330); from a 32 MiB set (the caches) it was 5-10% faster
// on 2 threads (0.068, 0.065 against 0.071, 0.071). So the 512-bit kernel stays the choice on both CPUs measured; last
// stop's 9.0 against 14.3 GB/s on this CPU type did not reproduce.
namespace dev256 {
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
namespace {
#define LOWP_DOT2(a0, b0, a1, b1) _mm256_dpwssd_epi32(_mm256_madd_epi16(a0, b0), a1, b1)
#define LOWP_Q4PART(lo, x0, hi, x1) _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, x0), hi, x1)
#define LOWP_Q4FOLD(a, b) _mm256_hadd_epi32(a, b)
#define LOWP_Q4WIDEN(v) (v)
#include "lowp_kernels.inc"
#undef LOWP_DOT2
#undef LOWP_Q4PART
#undef LOWP_Q4FOLD
#undef LOWP_Q4WIDEN
}  // namespace
int64_t bytes(int64_t B, int64_t K) { return q4Bytes(B, K); }
void prepare(const float* x, int64_t B, int64_t K, void* px) { q4Prepare(x, B, K, px); }
void rows(const Weights& w, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  q4Rows(static_cast<const uint8_t*>(w.data), static_cast<const uint16_t*>(w.scales), w.K, px, B, y, ldy, n0, n1);
}
#pragma GCC pop_options
}  // namespace dev256

// A matrix in one format, quantised from float32 values as src/backend/reference defines it.
struct Matrix {
  Format f;
  int64_t N, K;
  std::vector<float> f32;
  std::vector<uint16_t> u16;  // bf16 data, or q4 scales
  std::vector<int8_t> i8;
  std::vector<uint8_t> u8;
  std::vector<float> rowScale;
  Weights weights() const {
    switch (f) {
      case Format::f32: return {f, N, K, f32.data(), nullptr};
      case Format::bf16: return {f, N, K, u16.data(), nullptr};
      case Format::int8: return {f, N, K, i8.data(), rowScale.data()};
      case Format::q4: return {f, N, K, u8.data(), u16.data()};
    }
    return {};
  }
  int64_t bytes() const {
    return f32.size() * 4 + u16.size() * 2 + i8.size() + u8.size() + rowScale.size() * 4;
  }
};

static Matrix quantise(Format f, int64_t N, int64_t K, const std::vector<float>& w) {
  Matrix m{f, N, K, {}, {}, {}, {}, {}};
  if (f == Format::f32) m.f32 = w;
  if (f == Format::bf16) {
    m.u16.resize(N * K);
    for (int64_t i = 0; i < N * K; i++) m.u16[i] = toBF16(w[i]);
  }
  if (f == Format::int8) {
    m.i8.resize(N * K);
    m.rowScale.resize(N);
    for (int64_t n = 0; n < N; n++) {
      float amax = 0;
      for (int64_t k = 0; k < K; k++) amax = std::fmax(amax, std::fabs(w[n * K + k]));
      float s = amax / 127.0f;
      m.rowScale[n] = s;
      for (int64_t k = 0; k < K; k++)
        m.i8[n * K + k] = s == 0 ? 0 : static_cast<int8_t>(std::fmax(-127, std::fmin(127, std::nearbyint(w[n * K + k] / s))));
    }
  }
  if (f == Format::q4) {
    int64_t Kp = q4PaddedK(K), nb = Kp / 32;
    m.u8.assign(N * Kp / 2, 0);
    m.u16.assign(N * nb, 0);
    for (int64_t n = 0; n < N; n++)
      for (int64_t j = 0; j < nb; j++) {
        float big = 0;
        for (int64_t i = 0; i < 32; i++) {
          int64_t k = j * 32 + i;
          float v = k < K ? w[n * K + k] : 0.0f;
          if (std::fabs(v) > std::fabs(big)) big = v;
        }
        uint16_t dh = toF16(big / -8.0f);
        float d = fromF16(dh);
        m.u16[n * nb + j] = dh;
        for (int64_t i = 0; i < 32; i++) {
          int64_t k = j * 32 + i;
          float v = k < K ? w[n * K + k] : 0.0f;
          int u = d == 0 ? 8 : static_cast<int>(std::fmax(0, std::fmin(15, std::nearbyint(v / d) + 8)));
          uint8_t& byte = m.u8[n * Kp / 2 + j * 16 + (i & 15)];
          byte |= i < 16 ? u : u << 4;
        }
      }
  }
  return m;
}

// Dequantised weight (the reference's definition).
static double weightAt(const Matrix& m, int64_t n, int64_t k) {
  switch (m.f) {
    case Format::f32: return m.f32[n * m.K + k];
    case Format::bf16: return fromBF16(m.u16[n * m.K + k]);
    case Format::int8: return static_cast<double>(m.rowScale[n]) * m.i8[n * m.K + k];
    case Format::q4: {
      int64_t Kp = q4PaddedK(m.K), j = k / 32, i = k % 32;
      uint8_t byte = m.u8[n * Kp / 2 + j * 16 + (i & 15)];
      int u = i < 16 ? byte & 15 : byte >> 4;
      return static_cast<double>(fromF16(m.u16[n * (Kp / 32) + j])) * (u - 8);
    }
  }
  return 0;
}

static const char* formatName(Format f) {
  const char* names[] = {"f32", "bf16", "int8", "q4"};
  return names[static_cast<int>(f)];
}

struct Variant {
  std::string name;
  Format f;
  Isa isa;
  bool cvt;  // a variant of this file (dev::bf16WidenRows, dev::int8CvtRows)
  bool vnni256 = false;  // dev256: the 256-bit q4 VNNI kernel, through lowp.cc's chunks and pool as gemv runs it
};

static int64_t wsBytes(const Variant& v, int64_t B, int64_t K) {
  return v.vnni256 ? dev256::bytes(B, K) : workspaceBytes(v.f, v.isa, B, K);
}

// LOWP_OMP=1: the rows split statically over an OpenMP parallel region instead of lowp.cc's claimed chunks.
static const bool kOmp = getenv("LOWP_OMP") && std::string(getenv("LOWP_OMP")) == "1";

static void runVariant(const Variant& v, const Matrix& m, const float* x, int64_t B, float* y, void* ws, int threads) {
  Weights w = m.weights();
  if (v.vnni256) {  // gemv's split (lowp.cc): chunks of 8-row tiles, ~512 KiB of weights each (two of at least
                    // 128 KiB below 1 MiB), at most 64
    dev256::prepare(x, B, m.K, ws);
    const int64_t bytes = m.N * m.K / 2;
    int64_t tiles = (m.N + 7) / 8,
            chunks = std::min<int64_t>(
                std::max<int64_t>(1, std::max(bytes / (512 << 10), std::min<int64_t>(bytes / (128 << 10), 2))), 64);
    chunks = std::min(chunks, tiles);
    retnet::workers::forChunks(chunks, threads, [&](int64_t c) {
      int64_t n0 = tiles * c / chunks * 8, n1 = std::min(m.N, tiles * (c + 1) / chunks * 8);
      if (n0 < n1) dev256::rows(w, ws, B, y, m.N, n0, n1);
    });
    return;
  }
  if (!v.cvt && kOmp && v.isa == Isa::avx2) {
    isa_avx2::prepare(v.f, x, B, m.K, ws);
#pragma omp parallel num_threads(threads)
    {
      int i = omp_get_thread_num(), nt = omp_get_num_threads();
      isa_avx2::rows(w, x, ws, B, y, m.N, m.N * i / nt / 8 * 8, i == nt - 1 ? m.N : m.N * (i + 1) / nt / 8 * 8);
    }
    return;
  }
  if (!v.cvt) return gemv(w, x, B, y, m.N, ws, v.isa, threads);
#pragma omp parallel num_threads(threads)
  {
    int i = omp_get_thread_num(), nt = omp_get_num_threads();
    auto rows = v.f == Format::bf16 ? dev::bf16WidenRows : dev::int8CvtRows;
    rows(w, x, B, y, m.N, m.N * i / nt, m.N * (i + 1) / nt);
  }
}

// Validation on odd shapes, against the bound each variant promises (lowp.h): |y − ref| ≤ Σ_k |W_nk| · e_k + float32
// rounding (K·2⁻²⁴ Σ|x W|), with e_k the quantisation error allowed for x_k: half a step of its block's scale
// (max|x| / 65534 for int16, / 254 for int8), 2⁻¹⁶|x_k| for the bf16 hi/lo split, 0 where x stays float32.
static bool validate(const Variant& v, int64_t N, int64_t K, int64_t B, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> wf(N * K), x(B * K);
  for (auto& e : wf) e = nd(rng);
  for (auto& e : x) e = nd(rng);
  Matrix m = quantise(v.f, N, K, wf);
  std::vector<float> y(B * N, NAN);
  std::vector<char> ws(wsBytes(v, B, K) + 64);
  void* wsp = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(ws.data()) + 63) / 64 * 64);
  runVariant(v, m, x.data(), B, y.data(), wsp, 2);
  double qmax = v.cvt || v.isa == Isa::scalar ? 0 : v.f == Format::int8 ? 32767 : v.f == Format::q4 ? 127 : 0;
  double worst = 0;  // largest error / allowed error
  for (int64_t b = 0; b < B; b++)
    for (int64_t n = 0; n < N; n++) {
      double ref = 0, mag = 0, allowed = 0;
      for (int64_t k = 0; k < K; k++) {
        double wk = weightAt(m, n, k), xk = x[b * K + k];
        ref += wk * xk;
        mag += std::fabs(wk * xk);
        double e = 0;
        if (qmax > 0) {
          double amax = 0;
          for (int64_t j = k / 32 * 32; j < std::min(K, k / 32 * 32 + 32); j++) amax = std::fmax(amax, std::fabs(x[b * K + j]));
          e = amax / (2 * qmax);
        } else if (v.isa == Isa::avx512bf16) {
          e = std::ldexp(std::fabs(xk), -16);
        }
        allowed += std::fabs(wk) * e;
      }
      allowed += mag * (K + 2) * std::ldexp(1.0, -24) + 1e-30;
      double r = std::fabs(y[b * N + n] - ref) / allowed;
      if (!(r <= worst)) worst = std::isnan(r) ? INFINITY : r;
    }
  bool ok = worst <= 1;
  printf("  validate %-18s N=%-4lld K=%-4lld B=%-2lld error / allowed %.3f %s\n", v.name.c_str(), (long long)N,
         (long long)K, (long long)B, worst, ok ? "ok" : "FAILED");
  return ok;
}

static double cpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static double nowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  std::string which = argc > 1 ? argv[1] : "all";
  int64_t B = argc > 2 ? atoll(argv[2]) : 1;
  int threads = argc > 3 ? atoi(argv[3]) : 2;
  std::vector<Variant> vs;
  for (Format f : {Format::f32, Format::bf16, Format::int8, Format::q4}) {
    if (which != "all" && which != formatName(f)) continue;
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512bf16, Isa::avx512vnni, Isa::avx512})
      if (hasVariant(f, isa)) {
        std::string name = std::string(formatName(f)) + "/" + isaName(isa);
        if (!cpuHas(isa)) {
          printf("skip %s: this CPU lacks %s\n", name.c_str(), isaName(isa));
          continue;
        }
        vs.push_back({name, f, isa, false});
      }
    if (f == Format::int8) vs.push_back({"int8/cvt-f32", f, Isa::avx2, true});
    if (f == Format::bf16) vs.push_back({"bf16/widen", f, Isa::avx2, true});
    if (f == Format::q4 && cpuHas(Isa::avx512vnni)) vs.push_back({"q4/vnni256", f, Isa::avx512vnni, false, true});
  }
  std::mt19937 rng(1);
  bool ok = true;
  for (auto& v : vs)
    for (auto s : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {7, 33, 3}, {13, 100, 1}, {37, 64, 16}, {9, 257, 5},
                                                      {64, 512, 2}})
      ok = validate(v, s[0], s[1], s[2], rng) && ok;
  // Timing: copies of a 2048 x 2048 matrix, 1 GiB of them in its format (LOWP_SET_MIB=M: M MiB).
  // LOWP_RESIDENT=1: one 256 x 2048 matrix read again and again from the caches, to time the arithmetic alone.
  const bool resident = getenv("LOWP_RESIDENT") && std::string(getenv("LOWP_RESIDENT")) == "1";
  const int64_t setBytes = (getenv("LOWP_SET_MIB") ? atoll(getenv("LOWP_SET_MIB")) : 1024) << 20;
  const int64_t N = resident ? 256 : 2048, K = 2048;
  const int reps = resident ? 200 : 5;
  std::vector<float> x(B * K), y(B * N);
  for (auto& e : x) e = std::normal_distribution<float>(0, 1)(rng);
  std::vector<char> ws(1 << 20);
  void* wsp = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(ws.data()) + 63) / 64 * 64);
  std::vector<float> wf(N * K);
  for (auto& e : wf) e = std::normal_distribution<float>(0, 1)(rng);
  {  // the read ceiling: 1 GiB streamed
    std::vector<char> big(1ll << 30, 1);
    for (int t = 1; t <= threads; t++) {
      double best = 1e30;
      for (int rep = 0; rep < 8; rep++) {
        double t0 = nowMs();
        volatile float s = streamRead(big.data(), big.size(), t);
        (void)s;
        best = std::fmin(best, nowMs() - t0);
      }
      printf("read ceiling, %d thread(s): %.1f GB/s\n", t, big.size() / (best * 1e6));
    }
  }
  // LOWP_SHARED=1: a 1.3B layer's q, k, v, g projections ([2048, 2048] twice, [4096, 2048] twice, one x) as one
  // gemvShared call against four gemv calls, in turns, on copies adding up to the set's bytes: ms per group of four.
  if (getenv("LOWP_SHARED") && std::string(getenv("LOWP_SHARED")) == "1") {
    const int64_t Ns[4] = {2048, 2048, 4096, 4096};
    for (auto& v : vs) {
      if (v.isa == Isa::scalar || v.cvt || v.vnni256) continue;
      std::vector<float> big(4096 * K);
      for (auto& e : big) e = std::normal_distribution<float>(0, 1)(rng);
      std::vector<Matrix> proto;
      int64_t groupBytes = 0;
      for (int64_t N4 : Ns) {
        proto.push_back(quantise(v.f, N4, K, big));  // the first N4 rows of big
        groupBytes += proto.back().bytes();
      }
      const int64_t groups = std::max<int64_t>(1, setBytes / groupBytes);
      std::vector<std::array<Matrix, 4>> set(groups, {proto[0], proto[1], proto[2], proto[3]});
      std::vector<float> ys(B * 4096 * 4);
      float* yp[4] = {ys.data(), ys.data() + B * 4096, ys.data() + 2 * B * 4096, ys.data() + 3 * B * 4096};
      std::vector<double> shared, separate;
      for (int t = 0; t < 2 * reps; t++) {
        const bool one = (t % 2 == 0) == (t / 2 % 2 == 0);  // ABBA
        double t0 = nowMs();
        for (auto& g : set) {
          Weights w[4] = {g[0].weights(), g[1].weights(), g[2].weights(), g[3].weights()};
          if (one)
            gemvShared(w, 4, x.data(), B, yp, wsp, v.isa, threads);
          else
            for (int i = 0; i < 4; i++) gemv(w[i], x.data(), B, yp[i], Ns[i], wsp, v.isa, threads);
        }
        (one ? shared : separate).push_back((nowMs() - t0) / groups);
      }
      std::sort(shared.begin(), shared.end());
      std::sort(separate.begin(), separate.end());
      printf("%-14s B=%-2lld threads=%d  q,k,v,g shared %.3f ms (best %.3f), separate %.3f (best %.3f): %.3fx, %.1f GB/s\n",
             v.name.c_str(), (long long)B, threads, shared[reps / 2], shared[0], separate[reps / 2], separate[0],
             shared[reps / 2] / separate[reps / 2], groupBytes / (shared[reps / 2] * 1e6));
    }
    return ok ? 0 : 1;
  }
  for (auto& v : vs) {
    if (v.isa == Isa::scalar) continue;
    std::vector<Matrix> ms{quantise(v.f, N, K, wf)};
    const int64_t bytes = ms[0].bytes(), count = resident ? 1 : (setBytes + bytes - 1) / bytes;
    while (static_cast<int64_t>(ms.size()) < count) ms.push_back(ms[0]);
    for (int t = 1; t <= threads; t++) {
      std::vector<double> per, cpu;
      for (int rep = 0; rep < reps; rep++) {
        double t0 = nowMs(), c0 = cpuMs();
        for (auto& m : ms) runVariant(v, m, x.data(), B, y.data(), wsp, t);
        per.push_back((nowMs() - t0) / count);
        cpu.push_back((cpuMs() - c0) / count);
      }
      std::sort(per.begin(), per.end());
      std::sort(cpu.begin(), cpu.end());
      printf("%-14s B=%-2lld threads=%d  %.3f ms/matrix (best %.3f)  %.1f GB/s (best %.1f)", v.name.c_str(),
             (long long)B, t, per[reps / 2], per[0], bytes / (per[reps / 2] * 1e6), bytes / (per[0] * 1e6));
      if (t == 1) printf("  on-CPU %.3f ms: %.1f GB/s", cpu[0], bytes / (cpu[0] * 1e6));
      printf("\n");
    }
  }
  return ok ? 0 : 1;
}
