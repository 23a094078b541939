// The AVX-512 variants of native/cpu/lowp.h, compiled for their instructions whatever the build's flags and called
// only when the CPU has them (lowp.cc checks):
//   avx512vnni  int8: the AVX2 kernel body (lowp_kernels.inc) with each pmaddwd + paddd pair replaced by one
//               pmaddwd + one 256-bit vpdpwssd (AVX512-VNNI + AVX512-VL): the same exact integer sums.
//               q4: a 512-bit kernel of its own (q4x4Tile below), 4 blocks per step.
//   avx512bf16  bf16: vdpbf16ps, two bf16 products per float32 lane. x is split into bf16 hi + lo (x − hi rounded
//               again), and both parts meet the weights, so x keeps about 16 of its 24 bits (lowp.h). Not chosen
//               by bestIsa: on this Zen 5 class CPU it read 8.7 GB/s against avx2's 25 (bench/lowp_kernels.cc bf16,
//               B 1, 1 thread), and at B 8 it was the slowest of the three.
//   avx512      f32, f16, bf16: 512-bit float FMAs with x as given (bottom of this file).
// This machine's CPU may lack them: test/lowp.test.ts runs every variant the CPU has against the reference and logs
// the ones it skips.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "lowp.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")

namespace retnet::lowp {
namespace {

// int8's pairs through vpdpwssd (the .inc's q4 kernel is not used here: q4x4Tile below replaced it; the harness keeps
// it with VNNI as q4/vnni256)
#define LOWP_DOT2(a0, b0, a1, b1) _mm256_dpwssd_epi32(_mm256_madd_epi16(a0, b0), a1, b1)
#include "lowp_kernels.inc"
#undef LOWP_DOT2
#undef LOWP_Q4PART
#undef LOWP_Q4FOLD
#undef LOWP_Q4WIDEN

// q4 in 512-bit vectors: 4 blocks (64 bytes of a row, a 128-bit lane per block) per step, their low and high nibbles
// meeting x in two vpdpbusd (int32 lanes, 4 per block); the block scales are applied per lane, in float32: t = Σ · dx
// + cx, acc += dw · t, with dx, cx and dw spread over each block's 4 lanes (cx = −8 · dx · Σ xq / 4, so that a block's
// 4 lanes add up to its offset). No horizontal folding, which 512-bit registers lack (the 256-bit kernel's phaddd).
// Measured with bench/lowp_kernels.cc (q4, B 1, [2048, 2048] matrices from memory; timing lock, this 2-core Zen 5
// class EPYC): the 256-bit VNNI kernel (the .inc's q4Tile, kept as the harness's q4/vnni256) 0.124 -> 0.075 ms best on
// 1 thread (19.0 -> 31.3 GB/s), 0.099 -> 0.057 on 2 (23.9 -> 41.3 GB/s, the read probe 37.9); avx2 0.116 / 0.088.
// Prepared x per batch row, in chunks of 4 blocks (128 values; Kq = the padded K rounded up to 128, zeros beyond K):
// xq int8 [Kq] with each chunk as x[0..16) of its 4 blocks then x[16..32) of them (the nibbles' order, lowp.h); dx,
// cx float [Kq / 128, 16] in the lanes' order.
struct Q4x4 {
  int8_t* xq;
  float* dx;
  float* cx;
  int64_t Kq, nc;  // padded K, chunks of 4 blocks
};

inline Q4x4 q4x4Layout(void* px, int64_t B, int64_t K) {
  const int64_t Kq = roundUp(q4PaddedK(K), 128), nc = Kq / 128;
  char* p = static_cast<char*>(px);
  Q4x4 o{reinterpret_cast<int8_t*>(p), nullptr, nullptr, Kq, nc};
  o.dx = reinterpret_cast<float*>(p + align64(B * Kq));
  o.cx = o.dx + align64(B * nc * 16 * 4) / 4;
  return o;
}

inline int64_t q4x4Bytes(int64_t B, int64_t K) {
  const int64_t Kq = roundUp(q4PaddedK(K), 128);
  return align64(B * Kq) + 2 * align64(B * (Kq / 128) * 16 * 4);
}

inline void q4x4Prepare(const float* x, int64_t B, int64_t K, void* px) {
  Q4x4 p = q4x4Layout(px, B, K);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // packs' interleaved 32-bit quarters in order
  for (int64_t b = 0; b < B; b++)
    for (int64_t j = 0; j < 4 * p.nc; j++) {
      const int64_t k0 = 32 * j, len = K - k0 < 0 ? 0 : (K - k0 < 32 ? K - k0 : 32);
      float d;
      int32_t sx = 0;
      __m256i q[4], blk;
      if (len == 32 && quantiseBlock8x4<127>(x + b * K + k0, q, &d)) {
        __m256i s4 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s2 = _mm_add_epi32(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
        s2 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0x4E));
        sx = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xB1)));
        blk = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])), order);
      } else {
        alignas(32) int8_t qs[32];
        d = len > 0 ? quantiseBlock<int8_t, 127>(x + b * K + k0, len, qs) : 0.0f;
        for (int i = 0; i < 32; i++) {
          if (len == 0) qs[i] = 0;
          sx += qs[i];
        }
        blk = _mm256_load_si256(reinterpret_cast<const __m256i*>(qs));
      }
      const int64_t c = j / 4, l = j % 4;
      int8_t* dst = p.xq + b * p.Kq + 128 * c + 16 * l;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(blk));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 64), _mm256_extracti128_si256(blk, 1));
      for (int t = 0; t < 4; t++) {
        p.dx[(b * p.nc + c) * 16 + 4 * l + t] = d;
        p.cx[(b * p.nc + c) * 16 + 4 * l + t] = -2.0f * d * static_cast<float>(sx);
      }
    }
}

// Rows [n, n + R) of y for batch rows [b0, b0 + BB). ldq: bytes of a row (Kp / 2), nbp: blocks of a row (Kp / 32,
// even: a row's last chunk holds 2 or 4 blocks).
template <int R, int BB>
inline void q4x4Tile(const uint8_t* __restrict qs, const uint16_t* __restrict dw, int64_t n, int64_t rs, int64_t ldq,
                     int64_t nbp,
                     const Q4x4& p, int64_t b0, float* __restrict y, int64_t ldy) {
  const __m512i lo4 = _mm512_set1_epi8(0x0F);
  const __m256i spread = _mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  __m512 acc[R][BB];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) acc[r][b] = _mm512_setzero_ps();
  for (int64_t c = 0; c < p.nc; c++) {
    const bool full = nbp - 4 * c >= 4;
    for (int r = 0; r < R; r++) {
      const uint8_t* q = qs + (n + r * rs) * ldq + 64 * c;
      const uint16_t* d = dw + (n + r * rs) * nbp + 4 * c;
      _mm_prefetch(reinterpret_cast<const char*>(q + ldq), _MM_HINT_T0);
      if ((c & 7) == 0) _mm_prefetch(reinterpret_cast<const char*>(d + nbp), _MM_HINT_T0);
      __m512i v;
      __m128i h;
      if (full) {
        v = _mm512_loadu_si512(q);
        h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(d));
      } else {  // the row's last 2 blocks
        v = _mm512_maskz_loadu_epi8(0xffffffffull, q);
        int32_t two;
        memcpy(&two, d, 4);
        h = _mm_cvtsi32_si128(two);
      }
      const __m512 dwv = _mm512_cvtph_ps(_mm256_permutexvar_epi16(spread, _mm256_zextsi128_si256(h)));
      const __m512i lo = _mm512_and_si512(v, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
      for (int b = 0; b < BB; b++) {
        const int8_t* xb = p.xq + (b0 + b) * p.Kq + 128 * c;
        const int64_t at = ((b0 + b) * p.nc + c) * 16;
        __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xb));
        s = _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(xb + 64));
        const __m512 t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_loadu_ps(p.dx + at), _mm512_loadu_ps(p.cx + at));
        acc[r][b] = _mm512_fmadd_ps(dwv, t, acc[r][b]);
      }
    }
  }
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) y[(b0 + b) * ldy + n + r * rs] = _mm512_reduce_add_ps(acc[r][b]);
}

inline void q4x4Rows(const uint8_t* qs, const uint16_t* dw, int64_t K, const void* px, int64_t B, float* y,
                     int64_t ldy, int64_t n0, int64_t n1) {
  Q4x4 p = q4x4Layout(const_cast<void*>(px), B, K);
  const int64_t ldq = q4PaddedK(K) / 2, nbp = q4PaddedK(K) / 32;
  tilesOf<8, 4, 4>(B, n0, n1, [&](auto r, auto bb, int64_t n, int64_t rs, int64_t b) {
    q4x4Tile<decltype(r)::value, decltype(bb)::value>(qs, dw, n, rs, ldq, nbp, p, b, y, ldy);
  });
}

}  // namespace

namespace isa_avx512vnni {

int64_t preparedBytes(Format f, int64_t B, int64_t K) {
  return f == Format::int8 ? int8Bytes(B, K) : f == Format::q4 ? q4x4Bytes(B, K) : 0;
}

void prepare(Format f, const float* x, int64_t B, int64_t K, void* px) {
  if (f == Format::int8) int8Prepare(x, B, K, px);
  if (f == Format::q4) q4x4Prepare(x, B, K, px);
}

void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  if (w.format == Format::int8)
    int8Rows(static_cast<const int8_t*>(w.data), static_cast<const float*>(w.scales), w.K, px, B, y, ldy, n0, n1);
  if (w.format == Format::q4)
    q4x4Rows(static_cast<const uint8_t*>(w.data), static_cast<const uint16_t*>(w.scales), w.K, px, B, y, ldy, n0, n1);
}

}  // namespace isa_avx512vnni
}  // namespace retnet::lowp

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")

namespace retnet::lowp {
namespace {

inline int64_t roundUp16(int64_t n) { return (n + 15) / 16 * 16; }

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Round to nearest even, as lowp.cc's toBF16 (repeated here so that this file calls nothing compiled for another
// instruction set).
inline uint16_t bf16Bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16Value(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Prepared x: hi and lo bf16 [B, Kp] each (Kp = K rounded up to 16, zero beyond K).
template <int R, int BB>
inline void bf16Tile(const uint16_t* w, int64_t K, int64_t n, const uint16_t* xhi, const uint16_t* xlo, int64_t Kp,
                     int64_t b0, float* y, int64_t ldy) {
  __m256 hi[R][BB], lo[R][BB];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) hi[r][b] = lo[r][b] = _mm256_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 16) {
    __mmask16 m = K - k >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (K - k)) - 1u);
    __m256i wv[R];
    for (int r = 0; r < R; r++) wv[r] = _mm256_maskz_loadu_epi16(m, w + (n + r) * K + k);
    for (int b = 0; b < BB; b++) {
      __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xhi + (b0 + b) * Kp + k));
      __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xlo + (b0 + b) * Kp + k));
      for (int r = 0; r < R; r++) {
        hi[r][b] = _mm256_dpbf16_ps(hi[r][b], (__m256bh)wv[r], (__m256bh)xh);
        lo[r][b] = _mm256_dpbf16_ps(lo[r][b], (__m256bh)wv[r], (__m256bh)xl);
      }
    }
  }
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) y[(b0 + b) * ldy + n + r] = hsum8(_mm256_add_ps(hi[r][b], lo[r][b]));
}

}  // namespace

namespace isa_avx512bf16 {

int64_t preparedBytes(Format f, int64_t B, int64_t K) {
  return f == Format::bf16 ? (2 * B * roundUp16(K) * 2 + 63) / 64 * 64 : 0;
}

void prepare(Format f, const float* x, int64_t B, int64_t K, void* px) {
  if (f != Format::bf16) return;
  int64_t Kp = roundUp16(K);
  uint16_t* xhi = static_cast<uint16_t*>(px);
  uint16_t* xlo = xhi + B * Kp;
  for (int64_t b = 0; b < B; b++)
    for (int64_t k = 0; k < Kp; k++) {
      float v = k < K ? x[b * K + k] : 0.0f;
      uint16_t h = bf16Bits(v);
      xhi[b * Kp + k] = h;
      xlo[b * Kp + k] = bf16Bits(v - bf16Value(h));
    }
}

void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  if (w.format != Format::bf16) return;
  const uint16_t* wd = static_cast<const uint16_t*>(w.data);
  int64_t K = w.K, Kp = roundUp16(K);
  const uint16_t* xhi = static_cast<const uint16_t*>(px);
  const uint16_t* xlo = xhi + B * Kp;
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4)
    for (int64_t b = 0; b < B;) {
      if (B - b >= 2) {
        bf16Tile<4, 2>(wd, K, n, xhi, xlo, Kp, b, y, ldy);
        b += 2;
      } else {
        bf16Tile<4, 1>(wd, K, n, xhi, xlo, Kp, b, y, ldy);
        b += 1;
      }
    }
  for (; n < n1; n++)
    for (int64_t b = 0; b < B; b++) bf16Tile<1, 1>(wd, K, n, xhi, xlo, Kp, b, y, ldy);
}

}  // namespace isa_avx512bf16
}  // namespace retnet::lowp

#pragma GCC pop_options

// ---------------------------------------------------------------------------------------------------------------------
// avx512: the float weights (f32, f16, bf16) in 512-bit vectors with AVX-512F/BW/VL alone, x in float32 as given (no
// rounding of x: the same arithmetic as the AVX2 kernels, 16 lanes instead of 8). The last K mod 16 (bf16: mod 32)
// columns load W with a mask and meet zeros in the prepared x, so every K runs the vector loop.
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")

namespace retnet::lowp {
namespace {

inline __mmask16 mask16(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}
inline __mmask32 mask32(int64_t left) {
  return left >= 32 ? static_cast<__mmask32>(0xffffffffu) : static_cast<__mmask32>((1ull << left) - 1u);
}

// Each tile fetches the same place in the next row of each of its row streams, a line per 64 bytes it reads
// (lowp_kernels.inc prefetchLine, rowStreams).
inline void ahead(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// x prepared as float32 [B, Kp] (Kp = K rounded up to 32), zeros beyond K; for bf16 each 32-chunk as its 16 even then
// its 16 odd elements (the order the bf16 words split in).
inline int64_t kp32(int64_t K) { return (K + 31) / 32 * 32; }

void prepareFloat(Format f, const float* x, int64_t B, int64_t K, float* xp) {
  const int64_t Kp = kp32(K);
  for (int64_t b = 0; b < B; b++) {
    float* o = xp + b * Kp;
    const float* xb = x + b * K;
    if (f != Format::bf16) {
      std::memcpy(o, xb, 4 * K);
      for (int64_t k = K; k < Kp; k++) o[k] = 0.0f;
      continue;
    }
    for (int64_t k = 0; k < Kp; k += 32)
      for (int j = 0; j < 16; j++) {
        o[k + j] = k + 2 * j < K ? xb[k + 2 * j] : 0.0f;
        o[k + 16 + j] = k + 2 * j + 1 < K ? xb[k + 2 * j + 1] : 0.0f;
      }
  }
}

// Rows [n, n + R) of y for batch rows [b0, b0 + BB). f32/f16: 16 columns per step.
template <int R, int BB, bool F16>
inline void float16Tile(const void* wv, int64_t K, int64_t n, int64_t rs, const float* __restrict xp, int64_t Kp,
                        int64_t b0, float* __restrict y, int64_t ldy) {
  __m512 acc[R][BB];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) acc[r][b] = _mm512_setzero_ps();
  auto step = [&](int64_t k, bool tail) {
    const __mmask16 m = tail ? mask16(K - k) : static_cast<__mmask16>(0xffff);
    __m512 w[R];
    for (int r = 0; r < R; r++) {
      if (F16) {
        const uint16_t* wr = static_cast<const uint16_t*>(wv) + (n + r * rs) * K + k;
        if ((k & 31) == 0) ahead(wr + K);
        w[r] = _mm512_cvtph_ps(tail ? _mm256_maskz_loadu_epi16(m, wr)
                                    : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr)));
      } else {
        const float* wr = static_cast<const float*>(wv) + (n + r * rs) * K + k;
        ahead(wr + K);
        w[r] = tail ? _mm512_maskz_loadu_ps(m, wr) : _mm512_loadu_ps(wr);
      }
    }
    for (int b = 0; b < BB; b++) {
      __m512 xv = _mm512_loadu_ps(xp + (b0 + b) * Kp + k);
      for (int r = 0; r < R; r++) acc[r][b] = _mm512_fmadd_ps(w[r], xv, acc[r][b]);
    }
  };
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) step(k, false);
  if (k < K) step(k, true);
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) y[(b0 + b) * ldy + n + r * rs] = _mm512_reduce_add_ps(acc[r][b]);
}

// bf16: 32 columns per step, the 16 words split into even (shifted left 16) and odd (low half cleared) elements.
template <int R, int BB>
inline void bf16Tile512(const uint16_t* __restrict wd, int64_t K, int64_t n, int64_t rs, const float* __restrict xp,
                        int64_t Kp, int64_t b0, float* __restrict y, int64_t ldy) {
  const __m512i hiMask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 acc[R][BB];
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) acc[r][b] = _mm512_setzero_ps();
  auto step = [&](int64_t k, bool tail) {
    const __mmask32 m = tail ? mask32(K - k) : static_cast<__mmask32>(0xffffffffu);
    __m512 ev[R], od[R];
    for (int r = 0; r < R; r++) {
      const uint16_t* wr = wd + (n + r * rs) * K + k;
      ahead(wr + K);
      __m512i v = tail ? _mm512_maskz_loadu_epi16(m, wr) : _mm512_loadu_si512(wr);
      ev[r] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      od[r] = _mm512_castsi512_ps(_mm512_and_si512(v, hiMask));
    }
    for (int b = 0; b < BB; b++) {
      const float* xb = xp + (b0 + b) * Kp + k;
      __m512 xe = _mm512_loadu_ps(xb), xo = _mm512_loadu_ps(xb + 16);
      for (int r = 0; r < R; r++) acc[r][b] = _mm512_fmadd_ps(od[r], xo, _mm512_fmadd_ps(ev[r], xe, acc[r][b]));
    }
  };
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) step(k, false);
  if (k < K) step(k, true);
  for (int r = 0; r < R; r++)
    for (int b = 0; b < BB; b++) y[(b0 + b) * ldy + n + r * rs] = _mm512_reduce_add_ps(acc[r][b]);
}

template <int R, int BB>
inline void floatTileOf(Format f, const void* w, int64_t K, int64_t n, int64_t rs, const float* xp, int64_t Kp,
                        int64_t b0, float* y, int64_t ldy) {
  if (f == Format::bf16)
    bf16Tile512<R, BB>(static_cast<const uint16_t*>(w), K, n, rs, xp, Kp, b0, y, ldy);
  else if (f == Format::f16)
    float16Tile<R, BB, true>(w, K, n, rs, xp, Kp, b0, y, ldy);
  else
    float16Tile<R, BB, false>(w, K, n, rs, xp, Kp, b0, y, ldy);
}

}  // namespace

namespace isa_avx512 {

int64_t preparedBytes(Format f, int64_t B, int64_t K) {
  return f == Format::f32 || f == Format::f16 || f == Format::bf16 ? (B * kp32(K) * 4 + 63) / 64 * 64 : 0;
}

void prepare(Format f, const float* x, int64_t B, int64_t K, void* px) {
  if (preparedBytes(f, B, K) > 0) prepareFloat(f, x, B, K, static_cast<float*>(px));
}

// Batch 1: 8 rows at a time (8 independent FMA chains, 8 streams in flight); more: 4 rows by 4 batch rows (16
// accumulators), then 2 and 1. Measured with bench/lowp_kernels.cc ([2048, 2048] from memory, ms best on 1 / 2
// threads, avx2 -> avx512; the machine's read rate moved between runs by up to 30%, so single-run differences under
// ~10% are noise): f32 B 1 0.915 / 0.492 -> 0.627 / 0.467, B 8 1.821 / 1.001 -> 1.050 / 0.631; bf16 B 1 0.329 / 0.253
// -> 0.373 / 0.271 (avx2 stays bf16's choice at B 1: lowp.cc bestIsaFor), B 4 0.706 / 0.425 -> 0.327 / 0.392, B 8
// 1.366 / 0.758 -> 0.728 / 0.429, B 16 2.664 / 1.430 -> 1.265 / 0.801. The masked loads only in the last step: a
// mask every step measured f32 B 8 1.213 / 0.929.
void rows(const Weights& w, const float*, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t K = w.K, Kp = kp32(K);
  const float* xp = static_cast<const float*>(px);
  const Format f = w.format;
  tilesOf<8, 4, 4>(B, n0, n1, [&](auto r, auto bb, int64_t n, int64_t rs, int64_t b) {
    floatTileOf<decltype(r)::value, decltype(bb)::value>(f, w.data, K, n, rs, xp, Kp, b, y, ldy);
  });
}

}  // namespace isa_avx512
}  // namespace retnet::lowp

#pragma GCC pop_options
