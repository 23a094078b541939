// Vectorised exp, sigmoid and the normal distribution's CDF/PDF for the elementwise kernels of a training step (the
// activations, the gated per-head norm, cross-entropy, softmax), and the norms' double-precision sums, eight floats
// at a time in AVX2 + FMA.
//
// Dispatch: this header is compiled into both builds of the addon (binding.gyp). The x86-64-v3 build defines
// __AVX2__ and __FMA__ and gets the vector code; the baseline build (and any other architecture) gets the same
// functions over libm, per element, as the kernels computed before. Nothing here needs -march=native, and no AVX2
// instruction reaches the baseline object (test/native-build.test.ts checks the objects).
//
// Why: libm's expf/erff are calls per element that GCC cannot vectorise. In a training step of the `base` preset
// (T 2048, 1 thread, the old Zen 1 machine) the scalar GELU backward took 34.5 ms and the gated norm's backward
// 24.7 ms, which made the step slower than before the #16 recomputation work added more of these passes.
//
// Accuracy (test/vmath.test.ts measures it against the reference backend's double-precision functions on a dense
// grid and states the bounds): exp within 2 ulp of the correctly rounded value on [-87, 88] (denormal results are
// computed, below -104 the result is 0, above 89 it is +inf, NaN stays NaN); the normal CDF Φ(x) within 1.5e-7 of
// the exact value absolutely and, for x < 0, within 1e-6 relatively (Φ's tail is computed directly, not as 1 + erf,
// so it keeps relative accuracy where the float 0.5 * (1 + erff(x / √2)) of the kernels before cancelled; the libm
// path below takes erfcf for the same reason).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RETNET_VMATH_AVX2 1
#endif

namespace retnet::vmath {

#ifdef RETNET_VMATH_AVX2

namespace v8 {

inline __m256 splat(float v) { return _mm256_set1_ps(v); }

// exp(x): x = n ln2 + r with |r| <= ln2 / 2 (ln 2 in two parts, so n ln2_hi is exact for |n| < 2^15), e^r by a
// degree-6 polynomial (least-squares fit at Chebyshev nodes refined to equal ripple, relative error 1.9e-9 in double,
// so float rounding decides), times 2^n built in the exponent field as 2^(n/2) * 2^(n - n/2) so that every n in
// [-150, 128] (x clamped to [-104, 89]) gives normal factors and the one final product rounds into the denormals or
// to infinity as the true value would.
inline __m256 exp(__m256 x) {
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, splat(-104.0f)), splat(89.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, splat(1.44269504089f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, splat(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, splat(-2.12194440e-4f), r);
  __m256 p = splat(1.383684000e-03f);
  p = _mm256_fmadd_ps(p, r, splat(8.374817308e-03f));
  p = _mm256_fmadd_ps(p, r, splat(4.166822576e-02f));
  p = _mm256_fmadd_ps(p, r, splat(1.666642015e-01f));
  p = _mm256_fmadd_ps(p, r, splat(4.999999208e-01f));
  p = _mm256_fmadd_ps(p, r, splat(1.000000036e+00f));
  p = _mm256_fmadd_ps(p, r, splat(1.0f));
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));  // the clamp dropped NaN; put it back
}

// 1 / (1 + e^-z): 0 for z -> -inf (e^-z = inf), 1 for z -> inf.
inline __m256 sigmoid(__m256 z) {
  __m256 one = splat(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}

// Φ(x) and φ(x) = e^(-x²/2) / √(2π). With a = |x| / √2, q = Φ(-|x|) = erfc(a) / 2 from one of two fits (each a
// least-squares fit at Chebyshev nodes refined to equal ripple, numpy, relative error in double given):
//   a <= 1:  erf(a) = a P(a²), degree 5 in a² (4.0e-8), q = 1/2 - erf(a)/2 (q >= 0.079 here: no cancellation);
//   a > 1:   erfc(a) = e^(-a²) R(t), t = 1 / (1 + a), degree 8 in t (2.0e-8 on a in [1, 10]; beyond 10 e^(-a²) is 0).
// e^(-a²) = e^(-x²/2) is shared with φ and taken with x² split exactly (fma) into h + l, as e^(-h/2) (1 - l/2): the
// float rounding of x² alone would cost a relative error of x² 2^-25 in the tail. |x| is clamped to 20 first
// (Φ(-20) and φ(20) are 0 in float) so that x = ±inf does not reach inf - inf.
inline void normal(__m256 x, __m256& cdf, __m256& pdf) {
  const __m256 signBit = splat(-0.0f);
  __m256 ax = _mm256_min_ps(splat(20.0f), _mm256_andnot_ps(signBit, x));  // NaN stays NaN (second operand)
  __m256 h = _mm256_mul_ps(ax, ax), l = _mm256_fmsub_ps(ax, ax, h);
  __m256 e = exp(_mm256_mul_ps(h, splat(-0.5f)));
  e = _mm256_fnmadd_ps(_mm256_mul_ps(e, splat(0.5f)), l, e);
  pdf = _mm256_mul_ps(e, splat(0.398942280401f));
  __m256 a = _mm256_mul_ps(ax, splat(0.707106781187f));
  __m256 a2 = _mm256_mul_ps(a, a);
  __m256 p = splat(-5.631577611e-04f);
  p = _mm256_fmadd_ps(p, a2, splat(4.917594557e-03f));
  p = _mm256_fmadd_ps(p, a2, splat(-2.671135494e-02f));
  p = _mm256_fmadd_ps(p, a2, splat(1.128018205e-01f));
  p = _mm256_fmadd_ps(p, a2, splat(-3.761232654e-01f));
  p = _mm256_fmadd_ps(p, a2, splat(1.128379123e+00f));
  __m256 qSmall = _mm256_fnmadd_ps(_mm256_mul_ps(a, splat(0.5f)), p, splat(0.5f));
  __m256 t = _mm256_div_ps(splat(1.0f), _mm256_add_ps(splat(1.0f), a));
  __m256 r = splat(5.643423234e-01f);
  r = _mm256_fmadd_ps(r, t, splat(-2.328589658e+00f));
  r = _mm256_fmadd_ps(r, t, splat(3.556884599e+00f));
  r = _mm256_fmadd_ps(r, t, splat(-2.261253318e+00f));
  r = _mm256_fmadd_ps(r, t, splat(1.016126277e-01f));
  r = _mm256_fmadd_ps(r, t, splat(2.235378163e-01f));
  r = _mm256_fmadd_ps(r, t, splat(5.696197700e-01f));
  r = _mm256_fmadd_ps(r, t, splat(5.639099721e-01f));
  r = _mm256_fmadd_ps(r, t, splat(6.111683099e-06f));
  __m256 qLarge = _mm256_mul_ps(_mm256_mul_ps(e, r), splat(0.5f));
  __m256 q = _mm256_blendv_ps(qLarge, qSmall, _mm256_cmp_ps(a, splat(1.0f), _CMP_LE_OQ));
  cdf = _mm256_blendv_ps(_mm256_sub_ps(splat(1.0f), q), q, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
}

// Lanes [0, rem) of a partial block, for masked loads and stores (which touch no memory in the other lanes).
inline __m256i tailMask(int64_t rem) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// f(i, mask) over [0, n) in blocks of 8: full blocks with mask all-ones, the last partial one with tailMask, so that
// every element goes through the same vector arithmetic wherever it sits.
template <class F>
inline void blocks(int64_t n, F&& f) {
  int64_t i = 0;
  const __m256i all = _mm256_set1_epi32(-1);
  for (; i + 8 <= n; i += 8) f(i, all, true);
  if (i < n) f(i, tailMask(n - i), false);
}

inline __m256 load(const float* p, __m256i m, bool full) { return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m); }
inline void store(float* p, __m256 v, __m256i m, bool full) {
  if (full)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, m, v);
}

}  // namespace v8

// y = exp(x - shift).
inline void expShift(const float* x, float shift, float* y, int64_t n) {
  __m256 s = v8::splat(shift);
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    v8::store(y + i, v8::exp(_mm256_sub_ps(v8::load(x + i, m, full), s)), m, full);
  });
}

// Σ exp(x - shift), each block's eight terms added into double lanes (a row of 4096 logits loses no float accuracy).
inline double expShiftSum(const float* x, float shift, int64_t n) {
  __m256 s = v8::splat(shift);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    __m256 e = v8::exp(_mm256_sub_ps(v8::load(x + i, m, full), s));
    e = _mm256_and_ps(e, _mm256_castsi256_ps(m));  // masked-out lanes loaded 0: e^-shift, not a term
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  });
  alignas(32) double d[4];
  _mm256_store_pd(d, _mm256_add_pd(lo, hi));
  return (d[0] + d[1]) + (d[2] + d[3]);
}

// y = sigmoid(z).
inline void sigmoid(const float* z, float* y, int64_t n) {
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) { v8::store(y + i, v8::sigmoid(v8::load(z + i, m, full)), m, full); });
}

// y = x sigmoid(x) (SiLU / swish).
inline void silu(const float* x, float* y, int64_t n) {
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    __m256 v = v8::load(x + i, m, full);
    v8::store(y + i, _mm256_mul_ps(v, v8::sigmoid(v)), m, full);
  });
}

// dx = g s (1 + x (1 - s)), s = sigmoid(x).
inline void siluGrad(const float* x, const float* g, float* dx, int64_t n) {
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    __m256 v = v8::load(x + i, m, full), s = v8::sigmoid(v), one = v8::splat(1.0f);
    __m256 d = _mm256_mul_ps(s, _mm256_fmadd_ps(v, _mm256_sub_ps(one, s), one));
    v8::store(dx + i, _mm256_mul_ps(v8::load(g + i, m, full), d), m, full);
  });
}

// y = x Φ(x) (exact GELU, torchscale's F.gelu).
inline void gelu(const float* x, float* y, int64_t n) {
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    __m256 v = v8::load(x + i, m, full), cdf, pdf;
    v8::normal(v, cdf, pdf);
    v8::store(y + i, _mm256_mul_ps(v, cdf), m, full);
  });
}

// dx = g (Φ(x) + x φ(x)).
inline void geluGrad(const float* x, const float* g, float* dx, int64_t n) {
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    __m256 v = v8::load(x + i, m, full), cdf, pdf;
    v8::normal(v, cdf, pdf);
    v8::store(dx + i, _mm256_mul_ps(v8::load(g + i, m, full), _mm256_fmadd_ps(v, pdf, cdf)), m, full);
  });
}

// Σ x², and Σ a b, in double: four double lanes per half block, two chains (a single scalar double chain is bound
// by the add's latency, ~4 cycles an element).
inline double sumSquares(const float* x, int64_t n) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    __m256 v = v8::load(x + i, m, full);
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  });
  alignas(32) double d[4];
  _mm256_store_pd(d, _mm256_add_pd(lo, hi));
  return (d[0] + d[1]) + (d[2] + d[3]);
}
inline double dot(const float* a, const float* b, int64_t n) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  v8::blocks(n, [&](int64_t i, __m256i m, bool full) {
    __m256 u = v8::load(a + i, m, full), v = v8::load(b + i, m, full);
    lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(u)), _mm256_cvtps_pd(_mm256_castps256_ps128(v)), lo);
    hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(u, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), hi);
  });
  alignas(32) double d[4];
  _mm256_store_pd(d, _mm256_add_pd(lo, hi));
  return (d[0] + d[1]) + (d[2] + d[3]);
}

#else  // libm per element: the formulas the kernels used before this header (GELU's CDF now through erfc)

inline void expShift(const float* x, float shift, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = std::exp(x[i] - shift);
}
inline double expShiftSum(const float* x, float shift, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += std::exp(static_cast<double>(x[i] - shift));
  return s;
}
inline void sigmoid(const float* z, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + std::exp(-z[i]));
}
inline double sumSquares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += static_cast<double>(x[i]) * x[i];
  return s;
}
inline double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += static_cast<double>(a[i]) * b[i];
  return s;
}
inline void silu(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + std::exp(-x[i]));
}
inline void siluGrad(const float* x, const float* g, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float s = 1.0f / (1.0f + std::exp(-x[i]));
    dx[i] = g[i] * s * (1.0f + x[i] * (1.0f - s));
  }
}
// Φ(x) = erfc(-x / √2) / 2 rather than (1 + erf(x / √2)) / 2, which cancels for x < 0 (at x = -6, Φ = 1e-9 is
// below the float rounding of the 1 it is added to).
inline void gelu(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * std::erfc(x[i] * -0.70710678118654752f);
}
inline void geluGrad(const float* x, const float* g, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float cdf = 0.5f * std::erfc(x[i] * -0.70710678118654752f);
    float pdf = 0.39894228040143268f * std::exp(-0.5f * x[i] * x[i]);
    dx[i] = g[i] * (cdf + x[i] * pdf);
  }
}

#endif

}  // namespace retnet::vmath
