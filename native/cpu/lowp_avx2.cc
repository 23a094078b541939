// The AVX2 + FMA + F16C variants of native/cpu/lowp.h: compiled for those instructions whatever the build's flags,
// and called only when the CPU has them (lowp.cc checks). Kernel bodies: lowp_kernels.inc.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

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

// `bytes` read as 8 streams side by side (8 equal parts, a 64-byte line from each in turn; the last bytes % 512
// alone), summed as float32 adds: the values do not matter, only that every byte is read.
float readStreams(const void* data, int64_t bytes) {
  const char* p = static_cast<const char*>(data);
  const int64_t part = bytes / 512 * 64;
  __m256 acc[8];
  for (int s = 0; s < 8; s++) acc[s] = _mm256_setzero_ps();
  for (int64_t i = 0; i < part; i += 64)
    for (int s = 0; s < 8; s++) {
      const float* q = reinterpret_cast<const float*>(p + s * part + i);
      acc[s] = _mm256_add_ps(acc[s], _mm256_add_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(q + 8)));
    }
  for (int s = 1; s < 8; s++) acc[0] = _mm256_add_ps(acc[0], acc[s]);
  float sum = hsum(acc[0]);
  for (int64_t i = 8 * part; i < bytes; i++) sum += static_cast<float>(p[i]);
  return sum;
}

}  // namespace isa_avx2
}  // namespace retnet::lowp

#pragma GCC pop_options
