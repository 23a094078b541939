// Optimizer kernels: the fused AdamW step (decoupled weight decay, Loshchilov & Hutter 2019) and the sum of squares
// used for global-norm gradient clipping.
#include <cmath>
#include <vector>

#include "common.h"

namespace retnet {

// adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, step, gradScale):
// g = grad * gradScale (clipping folded in); p -= lr * wd * p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps).
static Napi::Value AdamW(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto p = f32(info, 0, "param"), g = f32(info, 1, "grad"), m = f32(info, 2, "m"), v = f32(info, 3, "v");
    int64_t n = dim(info, 4, "n");
    double lr = num(info, 5, "lr"), b1 = num(info, 6, "beta1"), b2 = num(info, 7, "beta2"), eps = num(info, 8, "eps");
    double wd = num(info, 9, "weightDecay");
    int64_t step = dim(info, 10, "step");
    double gs = num(info, 11, "gradScale");
    if (step < 1) throw ArgError{"adamw: step counts from 1"};
    require(p, n, "adamw", "param");
    require(g, n, "adamw", "grad");
    require(m, n, "adamw", "m");
    require(v, n, "adamw", "v");
    float c1 = static_cast<float>(1.0 / (1.0 - std::pow(b1, static_cast<double>(step))));
    float c2 = static_cast<float>(1.0 / (1.0 - std::pow(b2, static_cast<double>(step))));
    float flr = static_cast<float>(lr), decay = static_cast<float>(1.0 - lr * wd);
    float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2), feps = static_cast<float>(eps);
    float fgs = static_cast<float>(gs);
    float *pp = p.data, *pm = m.data, *pv = v.data;
    const float* pg = g.data;
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
    for (int64_t i = 0; i < n; i++) {
      float gi = pg[i] * fgs;
      float mi = fb1 * pm[i] + (1.0f - fb1) * gi;
      float vi = fb2 * pv[i] + (1.0f - fb2) * gi * gi;
      pm[i] = mi;
      pv[i] = vi;
      pp[i] = pp[i] * decay - flr * (mi * c1) / (std::sqrt(vi * c2) + feps);
    }
  });
}
RETNET_KERNEL("adamw", AdamW);

// sumSquares(xs) -> number: Σ x² over every element of every Float32Array of the array xs, accumulated in double
// (the global gradient norm² in one call: the optimizer reads one number per step, not one per parameter).
static Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  double total = 0;
  Napi::Value r = guard(info, [&] {
    if (info.Length() < 1 || !info[0].IsArray()) throw ArgError{"sumSquares: argument 0 (xs) must be an array"};
    auto list = info[0].As<Napi::Array>();
    std::vector<Span<float>> xs;
    for (uint32_t j = 0; j < list.Length(); j++) {
      Napi::Value x = list.Get(j);
      if (!x.IsTypedArray() || x.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw ArgError{"sumSquares: every entry of xs must be a Float32Array"};
      auto a = x.As<Napi::Float32Array>();
      xs.push_back({a.Data(), a.ElementLength()});
    }
    for (const auto& x : xs) {
      const float* px = x.data;
      int64_t n = static_cast<int64_t>(x.length);
      double s = 0;
#pragma omp parallel for if (n > kParallelGrain) reduction(+ : s) schedule(static)
      for (int64_t i = 0; i < n; i++) s += static_cast<double>(px[i]) * px[i];
      total += s;
    }
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), total);
}
RETNET_KERNEL("sumSquares", SumSquares);

}  // namespace retnet
