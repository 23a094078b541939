// RMSNorm over the last dimension (torchscale's norm everywhere: torchscale/component/rms_norm.py; with no weight,
// MultiScaleRetention's per-head group norm). Statistics accumulate in double.
#include <cmath>
#include <vector>

#include "common.h"

namespace retnet {

// Sums per-thread partial weight gradients into `out` (+=) so that rows can be split across threads.
static void reducePartials(const std::vector<std::vector<double>>& partial, float* out, int64_t cols) {
  for (int64_t j = 0; j < cols; j++) {
    double s = 0;
    for (auto& p : partial) s += p[j];
    out[j] += static_cast<float>(s);
  }
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
    const float *px = x.data, *pw = w.data;
    float *py = y.data, *pr = rstd.data;
#pragma omp parallel for if (rows * cols > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = px + r * cols;
      float* yr = py + r * cols;
      double ss = 0;
      for (int64_t j = 0; j < cols; j++) ss += static_cast<double>(xr[j]) * xr[j];
      float s = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(cols > 0 ? cols : 1) + eps));
      pr[r] = s;
      if (hasWeight)
        for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] * s * pw[j];
      else
        for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] * s;
    }
  });
}
RETNET_KERNEL("rmsNorm", RmsNorm);

// rmsNormBackward(x, w, rstd, g, dx, dw, rows, cols, hasWeight): dx = rstd * (g*w - x * rstd^2 * mean(g*w*x)),
// dw += sum_rows g * x * rstd.
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
    const float *px = x.data, *pw = w.data, *pr = rstd.data, *pg = g.data;
    float* pdx = dx.data;
    int threads = omp_get_max_threads();
    std::vector<std::vector<double>> partial(hasWeight ? threads : 0, std::vector<double>(cols, 0.0));
#pragma omp parallel if (rows * cols > kParallelGrain)
    {
      double* acc = hasWeight ? partial[omp_get_thread_num()].data() : nullptr;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; r++) {
        const float *xr = px + r * cols, *gr = pg + r * cols;
        float* dr = pdx + r * cols;
        double s = pr[r], dot = 0;
        for (int64_t j = 0; j < cols; j++) dot += static_cast<double>(gr[j]) * (hasWeight ? pw[j] : 1.0f) * xr[j];
        double c = s * s * s * dot / static_cast<double>(cols);
        for (int64_t j = 0; j < cols; j++) {
          double gh = static_cast<double>(gr[j]) * (hasWeight ? pw[j] : 1.0f);
          dr[j] = static_cast<float>(s * gh - c * xr[j]);
          if (hasWeight) acc[j] += static_cast<double>(gr[j]) * xr[j] * s;
        }
      }
    }
    if (hasWeight) reducePartials(partial, dw.data, cols);
  });
}
RETNET_KERNEL("rmsNormBackward", RmsNormBackward);


}  // namespace retnet
