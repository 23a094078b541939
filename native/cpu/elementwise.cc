// Elementwise kernels: add/mul with suffix broadcasting, scaling, the reduction that undoes broadcasting, and the
// activations (exact erf GELU as torchscale's F.gelu, SiLU/swish) with their derivatives.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.h"
#include "vmath.h"

namespace retnet {

// binary(op, a, b, out, n, m): out[i] = a[i] (op) b[i % m], op a codes::BinaryOp. m divides n (b is a shape suffix).
static Napi::Value Binary(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    int64_t op = dim(info, 0, "op");
    auto a = f32(info, 1, "a"), b = f32(info, 2, "b"), out = f32(info, 3, "out");
    int64_t n = dim(info, 4, "n"), m = dim(info, 5, "m");
    if (op >= codes::kBinaryOpCount) throw ArgError{"binary: unknown op"};
    if (n > 0 && (m == 0 || n % m != 0)) throw ArgError{"binary: broadcast length must divide the length"};
    require(a, n, "binary", "a");
    require(b, m, "binary", "b");
    require(out, n, "binary", "out");
    const float *pa = a.data, *pb = b.data;
    float* po = out.data;
    int64_t rows = m == 0 ? 0 : n / m;
    parallelFor(rows, n > kParallelGrain, [&](int64_t r) {
      const float* x = pa + r * m;
      float* y = po + r * m;
      if (op == static_cast<int64_t>(codes::BinaryOp::Add))
        for (int64_t j = 0; j < m; j++) y[j] = x[j] + pb[j];
      else
        for (int64_t j = 0; j < m; j++) y[j] = x[j] * pb[j];
    });
  });
}
RETNET_KERNEL("binary", Binary);

// dropout(x, out, n, rowSize, p, seed): inverted dropout with a seeded counter-based mask, out = x ⊙ m: row
// i = e / rowSize of element e keeps (m = 1/(1−p)) when u_i = fmix32(seed ^ i·0x9E3779B9) / 2³² ≥ p, else m = 0. The
// same function as the reference kernel's, so a seed gives the same mask on every device (and backward is this
// kernel on the gradient).
static Napi::Value Dropout(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), out = f32(info, 1, "out");
    int64_t n = dim(info, 2, "n"), rowSize = dim(info, 3, "rowSize");
    double p = num(info, 4, "p");
    uint32_t seed = static_cast<uint32_t>(num(info, 5, "seed"));
    if (rowSize < 1) throw ArgError{"dropout: rowSize must be at least 1"};
    if (!(p >= 0 && p < 1)) throw ArgError{"dropout: p must lie in [0, 1)"};
    require(x, n, "dropout", "x");
    require(out, n, "dropout", "out");
    float keep = static_cast<float>(1.0 / (1.0 - p));
    const float* px = x.data;
    float* po = out.data;
    int64_t rows = (n + rowSize - 1) / rowSize;
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      uint32_t h = seed ^ (static_cast<uint32_t>(r) * 0x9E3779B9u);
      h ^= h >> 16;
      h *= 0x85EBCA6Bu;
      h ^= h >> 13;
      h *= 0xC2B2AE35u;
      h ^= h >> 16;
      float m = static_cast<double>(h) * 0x1p-32 >= p ? keep : 0.0f;
      for (int64_t e = r * rowSize, end = std::min(n, e + rowSize); e < end; e++) po[e] = px[e] * m;
    }
  });
}
RETNET_KERNEL("dropout", Dropout);

// scale(a, out, alpha, n): out = alpha * a.
static Napi::Value Scale(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto a = f32(info, 0, "a"), out = f32(info, 1, "out");
    float alpha = static_cast<float>(num(info, 2, "alpha"));
    int64_t n = dim(info, 3, "n");
    require(a, n, "scale", "a");
    require(out, n, "scale", "out");
    const float* pa = a.data;
    float* po = out.data;
    parallelFor(n, n > kParallelGrain, [&](int64_t i) { po[i] = alpha * pa[i]; });
  });
}
RETNET_KERNEL("scale", Scale);

// sumRows(g, out, rows, m): out[j] = sum_r g[r * m + j]. The gradient of a broadcast operand. Accumulates in double
// so that long reductions (bias gradients over B*T rows) keep float32 accuracy.
static Napi::Value SumRows(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto g = f32(info, 0, "g"), out = f32(info, 1, "out");
    int64_t rows = dim(info, 2, "rows"), m = dim(info, 3, "m");
    require(g, rows * m, "sumRows", "g");
    require(out, m, "sumRows", "out");
    const float* pg = g.data;
    float* po = out.data;
#pragma omp parallel for if (rows * m > kParallelGrain) schedule(static)
    for (int64_t j = 0; j < m; j++) {
      double s = 0;
      for (int64_t r = 0; r < rows; r++) s += pg[r * m + j];
      po[j] = static_cast<float>(s);
    }
  });
}
RETNET_KERNEL("sumRows", SumRows);

using Act = codes::Activation;

// The activations run in blocks of 4096 elements (one thread's share is whole blocks; a block stays in L1 between
// its load and store), each block through native/cpu/vmath.h: GELU with the exact normal CDF, SiLU with the
// vectorised sigmoid, ReLU inline.
constexpr int64_t kActBlock = 4096;

// activation(kind, x, out, n): kind a codes::Activation (GELU with erf, SiLU, ReLU).
static Napi::Value Activation(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    int64_t kind = dim(info, 0, "kind");
    auto x = f32(info, 1, "x"), out = f32(info, 2, "out");
    int64_t n = dim(info, 3, "n");
    if (kind >= codes::kActivationCount) throw ArgError{"activation: unknown kind"};
    require(x, n, "activation", "x");
    require(out, n, "activation", "out");
    const float* px = x.data;
    float* po = out.data;
    int64_t blocks = (n + kActBlock - 1) / kActBlock;
    parallelFor(blocks, n > kParallelGrain / 4, [&](int64_t b) {
      int64_t i = b * kActBlock, len = std::min(kActBlock, n - i);
      switch (static_cast<Act>(kind)) {
        case Act::Gelu: vmath::gelu(px + i, po + i, len); break;
        case Act::Silu: vmath::silu(px + i, po + i, len); break;
        default:
          for (int64_t j = i; j < i + len; j++) po[j] = px[j] > 0.0f ? px[j] : 0.0f;
      }
    });
  });
}
RETNET_KERNEL("activation", Activation);

// activationBackward(kind, x, g, dx, n): dx = g * act'(x).
static Napi::Value ActivationBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    int64_t kind = dim(info, 0, "kind");
    auto x = f32(info, 1, "x"), g = f32(info, 2, "g"), dx = f32(info, 3, "dx");
    int64_t n = dim(info, 4, "n");
    if (kind >= codes::kActivationCount) throw ArgError{"activationBackward: unknown kind"};
    require(x, n, "activationBackward", "x");
    require(g, n, "activationBackward", "g");
    require(dx, n, "activationBackward", "dx");
    const float *px = x.data, *pg = g.data;
    float* pd = dx.data;
    int64_t blocks = (n + kActBlock - 1) / kActBlock;
#pragma omp parallel for if (n > kParallelGrain / 4) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
      int64_t i = b * kActBlock, len = std::min(kActBlock, n - i);
      switch (static_cast<Act>(kind)) {
        case Act::Gelu: vmath::geluGrad(px + i, pg + i, pd + i, len); break;
        case Act::Silu: vmath::siluGrad(px + i, pg + i, pd + i, len); break;
        default:
          for (int64_t j = i; j < i + len; j++) pd[j] = pg[j] * (px[j] > 0.0f ? 1.0f : 0.0f);
      }
    }
  });
}
RETNET_KERNEL("activationBackward", ActivationBackward);

}  // namespace retnet
