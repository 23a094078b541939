// Dispatch, threading and the portable (scalar) variant of native/cpu/lowp.h.
#include "lowp.h"

#include "workers.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

namespace retnet::lowp {

uint16_t toBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays (quiet) NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float fromBF16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float fromF16(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal: value man · 2⁻²⁴
    float f = std::ldexp(static_cast<float>(man), -24);
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t toF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;                // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;               // rounds to ≥ 65520: infinity
  if (a < 0x38800000u) {                                     // below 2⁻¹⁴: subnormal (or zero), units of 2⁻²⁴
    float m = std::fabs(f) * 16777216.0f;                    // exact: a power-of-two scaling
    return sign | static_cast<uint16_t>(std::nearbyint(m));  // nearest even; 1024 becomes the smallest normal
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);                // round the 13 dropped bits to nearest even
  return sign | static_cast<uint16_t>((r - 0x38000000u) >> 13);
}

const char* isaName(Isa isa) {
  switch (isa) {
    case Isa::best: return "best";
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512bf16: return "avx512bf16";
    case Isa::avx512vnni: return "avx512vnni";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

bool cpuHas(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2: return avx2;
    case Isa::avx512bf16: return avx512 && __builtin_cpu_supports("avx512bf16");
    case Isa::avx512vnni: return avx512 && __builtin_cpu_supports("avx512vnni");
    case Isa::avx512: return avx512 && __builtin_cpu_supports("avx512dq");
    case Isa::best: return true;
  }
  return false;
#else
  return isa == Isa::scalar || isa == Isa::best;
#endif
}

bool hasVariant(Format f, Isa isa) {
  switch (isa) {
    case Isa::scalar:
    case Isa::avx2: return true;
    case Isa::avx512bf16: return f == Format::bf16;
    case Isa::avx512vnni: return f == Format::int8 || f == Format::q4;
    case Isa::avx512: return f == Format::f32 || f == Format::f16 || f == Format::bf16;
    case Isa::best: return true;
  }
  return false;
}

// avx512bf16 last (lowp_avx512.cc: slower than both float kernels on the one CPU measured with it).
Isa bestIsa(Format f) {
  for (Isa isa : {Isa::avx512, Isa::avx512vnni, Isa::avx2, Isa::avx512bf16})
    if (hasVariant(f, isa) && cpuHas(isa)) return isa;
  return Isa::scalar;
}

// The 16-bit floats at B 1 read faster with avx2 than with avx512: bf16 7-12% in two runs (lowp_avx512.cc's
// figures); f16 on this stop's 2-core AMD EPYC (cpuid family 26 model 2, Zen 5), one process alternating avx2 and
// avx512 per simulated 1.3B decode step (the step's 193 products on their own weights, 2.57 GB, 2 threads, a 512 MiB
// read between steps; timing lock; four runs, either variant first): avx2 / avx512 step time 0.843, 0.918, 0.879
// (1 / 1.137), 0.898. At B 2 avx512 is ahead (avx2 / avx512 1.049) and at B 8 far ahead (1.62), so only B 1 moves.
Isa bestIsaFor(Format f, int64_t B) {
  if ((f == Format::bf16 || f == Format::f16) && B == 1 && cpuHas(Isa::avx2)) return Isa::avx2;
  return bestIsa(f);
}

namespace {

// The portable variant: each weight dequantised to float32, products in float32 (no x quantisation).
float weightAt(const Weights& w, int64_t n, int64_t k) {
  switch (w.format) {
    case Format::f32: return static_cast<const float*>(w.data)[n * w.K + k];
    case Format::bf16: return fromBF16(static_cast<const uint16_t*>(w.data)[n * w.K + k]);
    case Format::f16: return fromF16(static_cast<const uint16_t*>(w.data)[n * w.K + k]);
    case Format::int8:
      return static_cast<const float*>(w.scales)[n] * static_cast<const int8_t*>(w.data)[n * w.K + k];
    case Format::q4: {
      int64_t Kp = q4PaddedK(w.K), j = k / kQ4Block, i = k % kQ4Block;
      uint8_t byte = static_cast<const uint8_t*>(w.data)[n * (Kp / 2) + j * 16 + (i & 15)];
      int u = i < 16 ? byte & 15 : byte >> 4;
      return fromF16(static_cast<const uint16_t*>(w.scales)[n * (Kp / kQ4Block) + j]) * static_cast<float>(u - 8);
    }
  }
  return 0.0f;
}

void scalarRows(const Weights& w, const float* x, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; n++)
    for (int64_t b = 0; b < B; b++) {
      float s = 0.0f;
      for (int64_t k = 0; k < w.K; k++) s += weightAt(w, n, k) * x[b * w.K + k];
      y[b * ldy + n] = s;
    }
}

int64_t preparedBytes(Format f, Isa isa, int64_t B, int64_t K) {
  switch (isa) {
    case Isa::avx2: return isa_avx2::preparedBytes(f, B, K);
    case Isa::avx512vnni: return isa_avx512vnni::preparedBytes(f, B, K);
    case Isa::avx512bf16: return isa_avx512bf16::preparedBytes(f, B, K);
    case Isa::avx512: return isa_avx512::preparedBytes(f, B, K);
    default: return 0;
  }
}

// Weight bytes per unit of work handed to a thread: kChunkBytes, or for a product of under 2 · kChunkBytes two chunks
// of at least kMinChunkBytes (a product below 2 · kMinChunkBytes runs on the calling thread alone). Chunks of 512
// KiB against 128 KiB (one process alternating them, bench/lowp_kernels.cc LOWP_SHARED=1: a 1.3B layer's q, k, v, g
// from a 1 GiB set, B 1, 2 threads, this 2-core Zen 5, timing lock): q4/avx512vnni 0.364 against 0.408 ms per group
// (1.12x), int8/avx512vnni 0.622 against 0.651 (1.05x); 1 MiB as 512 KiB (1.12x, 1.04x); 32 KiB slower (0.97x
// both). Each chunk starts its row streams afresh (lowp_kernels.inc rowStreams), so longer streams read faster.
constexpr int64_t kChunkBytes = 512 << 10, kMinChunkBytes = 128 << 10;

// Stored bytes of one row of W (with its scales).
int64_t rowBytes(Format f, int64_t K) {
  switch (f) {
    case Format::f32: return 4 * K;
    case Format::bf16:
    case Format::f16: return 2 * K;
    case Format::int8: return K + 4;
    case Format::q4: return q4PaddedK(K) / 2 + 2 * (q4PaddedK(K) / kQ4Block);
  }
  return K;
}

}  // namespace

int64_t workspaceBytes(Format f, Isa isa, int64_t B, int64_t K) {
  return preparedBytes(f, isa == Isa::best ? bestIsaFor(f, B) : isa, B, K);
}

namespace {

// gemv and gemvShared. ldy: y's row stride for one product (gemv), -1: each y_i's own N_i.
void products(const Weights* ws, int64_t count, const float* x, int64_t B, float* const* ys, void* workspace, Isa isa,
              int threads, int64_t ldy) {
  if (count <= 0 || B == 0) return;
  const Format f = ws[0].format;
  const int64_t K = ws[0].K;
  if (isa == Isa::best) isa = bestIsaFor(f, B);
  if (K == 0) {
    for (int64_t i = 0; i < count; i++)
      for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < ws[i].N; n++) ys[i][b * (ldy < 0 ? ws[i].N : ldy) + n] = 0.0f;
    return;
  }
  using RowsFn = void (*)(const Weights&, const float*, const void*, int64_t, float*, int64_t, int64_t, int64_t);
  RowsFn rows = nullptr;
  switch (isa) {
    case Isa::avx2:
      isa_avx2::prepare(f, x, B, K, workspace);
      rows = isa_avx2::rows;
      break;
    case Isa::avx512vnni:
      isa_avx512vnni::prepare(f, x, B, K, workspace);
      rows = isa_avx512vnni::rows;
      break;
    case Isa::avx512bf16:
      isa_avx512bf16::prepare(f, x, B, K, workspace);
      rows = isa_avx512bf16::rows;
      break;
    case Isa::avx512:
      isa_avx512::prepare(f, x, B, K, workspace);
      rows = isa_avx512::rows;
      break;
    default: break;
  }
  // Chunks of whole 8-row tiles, about kChunkBytes of weights each (at most 64 per product), claimed by the threads in
  // turn; the chunks of product i follow those of product i − 1 (first[i] is its first). Within a chunk the kernels
  // read R rows as R streams side by side (lowp_kernels.inc rowStreams). Visiting the 8-row tiles of 2 / 4 / 8 parts
  // of a chunk in turn measured slower on an earlier stop's Intel Xeon (bench/lowp_kernels.cc, 1 GiB set, B 1, 2
  // threads: q4 20.6 GB/s in order, 19.2 / 17.5 / 16.6; int8 22.0, 21.0 / 20.0 / 21.8).
  constexpr int64_t kMaxShared = 8;
  int64_t stack[kMaxShared + 1];
  std::vector<int64_t> heap;
  int64_t* first = stack;
  if (count > kMaxShared) {
    heap.resize(count + 1);
    first = heap.data();
  }
  first[0] = 0;
  for (int64_t i = 0; i < count; i++) {
    const Weights& w = ws[i];
    const int64_t bytes = w.N * rowBytes(f, K);
    int64_t tiles = (w.N + 7) / 8, chunks = std::max(bytes / kChunkBytes, std::min<int64_t>(bytes / kMinChunkBytes, 2));
    chunks = w.N == 0 ? 0 : chunks < 1 ? 1 : chunks > 64 ? 64 : chunks > tiles ? tiles : chunks;
    first[i + 1] = first[i] + chunks;
  }
  workers::forChunks(first[count], threads, [&](int64_t c) {
    int64_t i = 0;
    while (c >= first[i + 1]) i++;
    const Weights& w = ws[i];
    const int64_t chunks = first[i + 1] - first[i], j = c - first[i], tiles = (w.N + 7) / 8;
    int64_t n0 = tiles * j / chunks * 8, n1 = tiles * (j + 1) / chunks * 8;
    if (n1 > w.N) n1 = w.N;
    if (n0 >= n1) return;
    const int64_t ld = ldy < 0 ? w.N : ldy;
    if (rows)
      rows(w, x, workspace, B, ys[i], ld, n0, n1);
    else
      scalarRows(w, x, B, ys[i], ld, n0, n1);
  });
}

}  // namespace

void gemv(const Weights& w, const float* x, int64_t B, float* y, int64_t ldy, void* workspace, Isa isa, int threads) {
  products(&w, 1, x, B, &y, workspace, isa, threads, ldy);
}

void gemvShared(const Weights* ws, int64_t count, const float* x, int64_t B, float* const* ys, void* workspace, Isa isa,
                int threads) {
  products(ws, count, x, B, ys, workspace, isa, threads, -1);
}

namespace {

// Rows [n0, n1) of W as float32 into out [(n1 − n0), K].
void dequantRows(const Weights& w, int64_t n0, int64_t n1, float* out, int threads) {
  const int64_t K = w.K, Kp = q4PaddedK(K);
  workers::forChunks(n1 - n0, threads, [&](int64_t i) {
    int64_t n = n0 + i;
    float* o = out + i * K;
    switch (w.format) {
      case Format::f32: std::memcpy(o, static_cast<const float*>(w.data) + n * K, 4 * K); break;
      case Format::bf16: {
        const uint16_t* r = static_cast<const uint16_t*>(w.data) + n * K;
        for (int64_t k = 0; k < K; k++) o[k] = fromBF16(r[k]);
        break;
      }
      case Format::f16: {
        const uint16_t* r = static_cast<const uint16_t*>(w.data) + n * K;
        for (int64_t k = 0; k < K; k++) o[k] = fromF16(r[k]);
        break;
      }
      case Format::int8: {
        const int8_t* r = static_cast<const int8_t*>(w.data) + n * K;
        float s = static_cast<const float*>(w.scales)[n];
        for (int64_t k = 0; k < K; k++) o[k] = s * static_cast<float>(r[k]);
        break;
      }
      case Format::q4: {
        const uint8_t* r = static_cast<const uint8_t*>(w.data) + n * (Kp / 2);
        const uint16_t* d = static_cast<const uint16_t*>(w.scales) + n * (Kp / kQ4Block);
        for (int64_t j = 0; j * kQ4Block < K; j++) {
          float dj = fromF16(d[j]);
          for (int64_t i2 = 0; i2 < kQ4Block && j * kQ4Block + i2 < K; i2++) {
            uint8_t byte = r[j * 16 + (i2 & 15)];
            int u = i2 < 16 ? byte & 15 : byte >> 4;
            o[j * kQ4Block + i2] = dj * static_cast<float>(u - 8);
          }
        }
        break;
      }
    }
  });
}

// The tiles of tiledProduct. A tile holds up to 4 MiB of float32 rows of W and at least 512 rows: OpenBLAS 0.3.21's
// sgemm falls off its fast path below that (x [154, 1024] by a [256, 1024] tile: 8.7 GFLOP/s against 30-33 for
// 512-4096 rows, one thread, /tmp C driver against libopenblas directly). The parts: one per thread while each gets
// at least a tile's 512 rows.
struct Tiling {
  int64_t parts, tileRows;
};
Tiling tilingOf(int64_t N, int64_t K, int threads) {
  constexpr int64_t kTileBytes = 4 << 20, kMinTileRows = 512;
  int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, N / kMinTileRows));
  int64_t share = (N + parts - 1) / parts;
  return {parts, std::max<int64_t>(1, std::min(share, std::max(kMinTileRows, kTileBytes / std::max<int64_t>(1, 4 * K))))};
}

}  // namespace

int64_t tiledFloats(int64_t N, int64_t K, int threads) {
  Tiling t = tilingOf(N, K, threads);
  return t.parts * t.tileRows * K;
}

// Two one-threaded sgemms on halves of W beat one two-threaded sgemm on all of it, as OpenBLAS splits it: x [154,
// 1024] by a float32 [4096, 1024]ᵀ at 61 GFLOP/s against 44-48 (2 threads, the C driver above); the bf16 RetNet decode
// step at batch 154 of bench budget spends most of its time here. OpenBLAS runs one-threaded while the parts do (its
// thread count is global; the engine calls it from one thread at a time).
void tiledProduct(const Weights& w, const float* x, int64_t R, float* y, float* tiles, int threads) {
  const int64_t N = w.N, K = w.K, ld = std::max<int64_t>(1, K);
  Tiling t = tilingOf(N, K, threads);
  auto part = [&](int64_t p, int dequantThreads) {
    int64_t n0 = N * p / t.parts, n1 = N * (p + 1) / t.parts;
    float* tile = tiles + p * t.tileRows * K;
    for (int64_t a = n0; a < n1; a += t.tileRows) {
      int64_t b = std::min(n1, a + t.tileRows);
      dequantRows(w, a, b, tile, dequantThreads);
      // y[:, a:b] (leading dimension N) = x [R, K] · tile [b − a, K]ᵀ
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(R), static_cast<int>(b - a),
                  static_cast<int>(K), 1.0f, x, static_cast<int>(ld), tile, static_cast<int>(ld), 0.0f, y + a,
                  static_cast<int>(N));
    }
  };
  if (t.parts == 1) {
    part(0, threads);
    return;
  }
  int blasThreads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  workers::forChunks(t.parts, threads, [&](int64_t p) { part(p, 1); });
  openblas_set_num_threads(blasThreads);
}

float streamRead(const void* data, int64_t bytes, int threads) {
  constexpr int64_t kPartBytes = 1 << 20;
  const char* p = static_cast<const char*>(data);
  const int64_t parts = bytes / kPartBytes < 1 ? 1 : bytes / kPartBytes;
  std::vector<float> sums(parts, 0.0f);
  workers::forChunks(parts, threads, [&](int64_t c) {
    const int64_t b0 = c * kPartBytes, b1 = c == parts - 1 ? bytes : b0 + kPartBytes;
    if (cpuHas(Isa::avx2)) {
      sums[c] = isa_avx2::readStreams(p + b0, b1 - b0);
    } else {
      for (int64_t i = b0; i < b1; i++) sums[c] += static_cast<float>(p[i]);
    }
  });
  float total = 0.0f;
  for (float s : sums) total += s;
  return total;
}

}  // namespace retnet::lowp
