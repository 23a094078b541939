// RMSNorm over the last dimension (torchscale's norm everywhere: torchscale/component/rms_norm.py; with no weight,
// MultiScaleRetention's per-head group norm). Statistics accumulate in double.
#include <cmath>
#include <vector>

#include "common.h"
#include "vmath.h"

namespace retnet {

// Sums per-thread partial weight gradients into `out` (+=) so that rows can be split across threads.
static void reducePartials(const std::vector<std::vector<double>>& partial, float* out, int64_t cols) {
  for (int64_t j = 0; j < cols; j++) {
    double s = 0;
    for (auto& p : partial) s += p[j];
    out[j] += static_cast<float>(s);
  }
}

// y = x * rstd * w (w null: 1), times silu(z) where a gate z is given (RetNet's gated per-head norm), rows split
// across threads. The sum of squares and the gate's silu go through native/cpu/vmath.h, the silu into a row buffer
// (not into y, which may be x's storage).
static void normRows(const float* px, const float* pw, const float* pz, float* py, float* pr, int64_t rows,
                     int64_t cols, double eps) {
  const auto row = [&](int64_t r, float* gate) {
    const float* xr = px + r * cols;
    float* yr = py + r * cols;
    double ss = vmath::sumSquares(xr, cols);
    float s = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(cols > 0 ? cols : 1) + eps));
    pr[r] = s;
    if (pz) {
      vmath::silu(pz + r * cols, gate, cols);
      for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] * s * (pw ? pw[j] : 1.0f) * gate[j];
    } else {
      for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] * s * (pw ? pw[j] : 1.0f);
    }
  };
  if (rows * cols <= kParallelGrain) {  // on this thread, outside any OpenMP region (common.h parallelFor)
    std::vector<float> gate(pz ? cols : 0);
    for (int64_t r = 0; r < rows; r++) row(r, gate.data());
    return;
  }
#pragma omp parallel
  {
    std::vector<float> gate(pz ? cols : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) row(r, gate.data());
  }
}

// The backward of normRows: with a gate, the gradient reaching the norm is g * silu(z) and dz = g * n * silu'(z),
// both recomputed from x, rstd and z (the row's sigmoid(z) once, through vmath). dx = rstd * (h*w - x * rstd^2 *
// mean(h*w*x)) for that gradient h, and dw += sum_rows h * x * rstd. Per element in float, in loops GCC vectorises;
// the row's dot product and dw's sums over rows in double. (In double per element with the dot product as one
// scalar chain it took 161 ms of CPU per base-preset training step, T 2048, 1 thread: perf, this machine.)
static void normRowsBackward(const float* px, const float* pw, const float* pz, const float* pr, const float* pg,
                             float* pdx, float* pdz, float* pdw, int64_t rows, int64_t cols) {
  int threads = omp_get_max_threads();
  std::vector<std::vector<double>> partial(pdw ? threads : 0, std::vector<double>(cols, 0.0));
#pragma omp parallel if (rows * cols > kParallelGrain)
  {
    double* acc = pdw ? partial[omp_get_thread_num()].data() : nullptr;
    std::vector<float> h(cols), hw(cols), sig(pz ? cols : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = px + r * cols, *gr = pg + r * cols;
      float* dr = pdx + r * cols;
      double s = pr[r];
      float sf = pr[r];
      if (pz) {
        const float* zr = pz + r * cols;
        float* dzr = pdz + r * cols;
        vmath::sigmoid(zr, sig.data(), cols);
        for (int64_t j = 0; j < cols; j++) {
          float wj = pw ? pw[j] : 1.0f, z = zr[j], sg = sig[j];
          dzr[j] = gr[j] * xr[j] * sf * wj * sg * (1.0f + z * (1.0f - sg));
          h[j] = gr[j] * (z * sg);
          hw[j] = h[j] * wj;
        }
      } else {
        for (int64_t j = 0; j < cols; j++) {
          h[j] = gr[j];
          hw[j] = gr[j] * (pw ? pw[j] : 1.0f);
        }
      }
      float c = static_cast<float>(s * s * s * vmath::dot(hw.data(), xr, cols) / static_cast<double>(cols));
      for (int64_t j = 0; j < cols; j++) dr[j] = sf * hw[j] - c * xr[j];
      if (acc)
        for (int64_t j = 0; j < cols; j++) acc[j] += static_cast<double>(h[j]) * xr[j] * s;
    }
  }
  if (pdw) reducePartials(partial, pdw, cols);
}

// rmsNorm(x, w, y, rstd, rows, cols, eps, hasWeight): y = x / sqrt(mean(x^2) + eps) * w; rstd saved for backward.
static Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), w = f32(info, 1, "w"), y = f32(info, 2, "y"), rstd = f32(info, 3, "rstd");
    int64_t rows = dim(info, 4, "rows"), cols = dim(info, 5, "cols");
    double eps = num(info, 6, "eps");
    bool hasWeight = flag(info, 7, "hasWeight");
    require(x, rows * cols, "rmsNorm", "x");
    require(y, rows * cols, "rmsNorm", "y");
    require(rstd, rows, "rmsNorm", "rstd");
    if (hasWeight) require(w, cols, "rmsNorm", "w");
    normRows(x.data, hasWeight ? w.data : nullptr, nullptr, y.data, rstd.data, rows, cols, eps);
  });
}
RETNET_KERNEL("rmsNorm", RmsNorm);

// rmsNormBackward(x, w, rstd, g, dx, dw, rows, cols, hasWeight)
static Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), w = f32(info, 1, "w"), rstd = f32(info, 2, "rstd"), g = f32(info, 3, "g");
    auto dx = f32(info, 4, "dx"), dw = f32(info, 5, "dw");
    int64_t rows = dim(info, 6, "rows"), cols = dim(info, 7, "cols");
    bool hasWeight = flag(info, 8, "hasWeight");
    require(x, rows * cols, "rmsNormBackward", "x");
    require(g, rows * cols, "rmsNormBackward", "g");
    require(dx, rows * cols, "rmsNormBackward", "dx");
    require(rstd, rows, "rmsNormBackward", "rstd");
    if (hasWeight) {
      require(w, cols, "rmsNormBackward", "w");
      require(dw, cols, "rmsNormBackward", "dw");
    }
    normRowsBackward(x.data, hasWeight ? w.data : nullptr, nullptr, rstd.data, g.data, dx.data, nullptr,
                     hasWeight ? dw.data : nullptr, rows, cols);
  });
}
RETNET_KERNEL("rmsNormBackward", RmsNormBackward);

// gatedRmsNorm(x, z, w, y, rstd, rows, cols, eps, hasWeight): y = rmsNorm(x, w) * silu(z).
static Napi::Value GatedRmsNorm(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), z = f32(info, 1, "gate"), w = f32(info, 2, "w"), y = f32(info, 3, "y");
    auto rstd = f32(info, 4, "rstd");
    int64_t rows = dim(info, 5, "rows"), cols = dim(info, 6, "cols");
    double eps = num(info, 7, "eps");
    bool hasWeight = flag(info, 8, "hasWeight");
    require(x, rows * cols, "gatedRmsNorm", "x");
    require(z, rows * cols, "gatedRmsNorm", "gate");
    require(y, rows * cols, "gatedRmsNorm", "y");
    require(rstd, rows, "gatedRmsNorm", "rstd");
    if (hasWeight) require(w, cols, "gatedRmsNorm", "w");
    normRows(x.data, hasWeight ? w.data : nullptr, z.data, y.data, rstd.data, rows, cols, eps);
  });
}
RETNET_KERNEL("gatedRmsNorm", GatedRmsNorm);

// gatedRmsNormBackward(x, z, w, rstd, g, dx, dz, dw, rows, cols, hasWeight)
static Napi::Value GatedRmsNormBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), z = f32(info, 1, "gate"), w = f32(info, 2, "w"), rstd = f32(info, 3, "rstd");
    auto g = f32(info, 4, "g"), dx = f32(info, 5, "dx"), dz = f32(info, 6, "dgate"), dw = f32(info, 7, "dw");
    int64_t rows = dim(info, 8, "rows"), cols = dim(info, 9, "cols");
    bool hasWeight = flag(info, 10, "hasWeight");
    require(x, rows * cols, "gatedRmsNormBackward", "x");
    require(z, rows * cols, "gatedRmsNormBackward", "gate");
    require(g, rows * cols, "gatedRmsNormBackward", "g");
    require(dx, rows * cols, "gatedRmsNormBackward", "dx");
    require(dz, rows * cols, "gatedRmsNormBackward", "dgate");
    require(rstd, rows, "gatedRmsNormBackward", "rstd");
    if (hasWeight) {
      require(w, cols, "gatedRmsNormBackward", "w");
      require(dw, cols, "gatedRmsNormBackward", "dw");
    }
    normRowsBackward(x.data, hasWeight ? w.data : nullptr, z.data, rstd.data, g.data, dx.data, dz.data,
                     hasWeight ? dw.data : nullptr, rows, cols);
  });
}
RETNET_KERNEL("gatedRmsNormBackward", GatedRmsNormBackward);

}  // namespace retnet
