// The AVX-512 variants of native/cpu/lowp.h, compiled for their instructions whatever the build's flags and called
// only when the CPU has them (lowp.cc checks):
//   avx512vnni  int8 and q4: the AVX2 kernel bodies (lowp_kernels.inc) with each pmaddwd + paddd pair replaced by
//               one pmaddwd + one 256-bit vpdpwssd (AVX512-VNNI + AVX512-VL): the same exact integer sums.
//   avx512bf16  bf16: vdpbf16ps, two bf16 products per float32 lane. x is split into bf16 hi + lo (x − hi rounded
//               again), and both parts meet the weights, so x keeps about 16 of its 24 bits (lowp.h).
// This machine's CPU may lack them: test/lowp.test.ts runs every variant the CPU has against the reference and logs
// the ones it skips.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "lowp.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")

namespace retnet::lowp {
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

namespace isa_avx512vnni {

int64_t preparedBytes(Format f, int64_t B, int64_t K) {
  return f == Format::int8 ? int8Bytes(B, K) : f == Format::q4 ? q4Bytes(B, K) : 0;
}

void prepare(Format f, const float* x, int64_t B, int64_t K, void* px) {
  if (f == Format::int8) int8Prepare(x, B, K, px);
  if (f == Format::q4) q4Prepare(x, B, K, px);
}

void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  if (w.format == Format::int8)
    int8Rows(static_cast<const int8_t*>(w.data), static_cast<const float*>(w.scales), w.K, px, B, y, ldy, n0, n1);
  if (w.format == Format::q4)
    q4Rows(static_cast<const uint8_t*>(w.data), static_cast<const uint16_t*>(w.scales), w.K, px, B, y, ldy, n0, n1);
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
