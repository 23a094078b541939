// The AVX2 + FMA + F16C variants of native/cpu/lowp.h: compiled for those instructions whatever the build's flags,
// and called only when the CPU has them (lowp.cc checks). Kernel bodies: lowp_kernels.inc.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "lowp.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace retnet::lowp {
namespace {

#include "lowp_kernels.inc"
#undef LOWP_DOT2
#undef LOWP_Q4PART
#undef LOWP_Q4FOLD
#undef LOWP_Q4WIDEN

}  // namespace

namespace isa_avx2 {

int64_t preparedBytes(Format f, int64_t B, int64_t K) {
  switch (f) {
    case Format::bf16: return bf16Bytes(B, K);
    case Format::int8: return int8Bytes(B, K);
    case Format::q4: return q4Bytes(B, K);
    default: return 0;
  }
}

void prepare(Format f, const float* x, int64_t B, int64_t K, void* px) {
  if (f == Format::bf16) bf16Prepare(x, B, K, px);
  if (f == Format::int8) int8Prepare(x, B, K, px);
  if (f == Format::q4) q4Prepare(x, B, K, px);
}

void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  switch (w.format) {
    case Format::f32:
      floatRows(LoadF32{static_cast<const float*>(w.data), w.K}, w.K, x, B, y, ldy, n0, n1);
      break;
    case Format::f16:
      floatRows(LoadF16{static_cast<const uint16_t*>(w.data), w.K}, w.K, x, B, y, ldy, n0, n1);
      break;
    case Format::bf16:
      bf16Rows(static_cast<const uint16_t*>(w.data), w.K, x, px, B, y, ldy, n0, n1);
      break;
    case Format::int8:
      int8Rows(static_cast<const int8_t*>(w.data), static_cast<const float*>(w.scales), w.K, px, B, y, ldy, n0, n1);
      break;
    case Format::q4:
      q4Rows(static_cast<const uint8_t*>(w.data), static_cast<const uint16_t*>(w.scales), w.K, px, B, y, ldy, n0, n1);
      break;
  }
}

// Four independent sums of 32-byte loads (as float32 adds: the values do not matter, only that every byte is read).
float readSum(const void* data, int64_t bytes) {
  const char* p = static_cast<const char*>(data);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(reinterpret_cast<const float*>(p + i)));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(reinterpret_cast<const float*>(p + i + 32)));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(reinterpret_cast<const float*>(p + i + 64)));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(reinterpret_cast<const float*>(p + i + 96)));
  }
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < bytes; i++) s += static_cast<float>(p[i]);
  return s;
}

}  // namespace isa_avx2
}  // namespace retnet::lowp

#pragma GCC pop_options
