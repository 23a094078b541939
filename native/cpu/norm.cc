// Row normalisations over the last dimension: RMSNorm (torchscale's norm everywhere, and with no weight its per-head
// "group norm") and LayerNorm (the paper's Eq. 9 and the Transformer baseline). Statistics accumulate in double.
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

// layerNorm(x, w, b, y, mean, rstd, rows, cols, eps): y = (x - mean) * rstd * w + b.
static Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), w = f32(info, 1, "w"), b = f32(info, 2, "b"), y = f32(info, 3, "y");
    auto mean = f32(info, 4, "mean"), rstd = f32(info, 5, "rstd");
    int64_t rows = dim(info, 6, "rows"), cols = dim(info, 7, "cols");
    double eps = num(info, 8, "eps");
    require(x, rows * cols, "layerNorm", "x");
    require(y, rows * cols, "layerNorm", "y");
    require(w, cols, "layerNorm", "w");
    require(b, cols, "layerNorm", "b");
    require(mean, rows, "layerNorm", "mean");
    require(rstd, rows, "layerNorm", "rstd");
    const float *px = x.data, *pw = w.data, *pb = b.data;
    float *py = y.data, *pm = mean.data, *pr = rstd.data;
#pragma omp parallel for if (rows * cols > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = px + r * cols;
      float* yr = py + r * cols;
      double m = 0, v = 0;
      for (int64_t j = 0; j < cols; j++) m += xr[j];
      m /= static_cast<double>(cols > 0 ? cols : 1);
      for (int64_t j = 0; j < cols; j++) v += (xr[j] - m) * (xr[j] - m);
      v /= static_cast<double>(cols > 0 ? cols : 1);
      double s = 1.0 / std::sqrt(v + eps);
      pm[r] = static_cast<float>(m);
      pr[r] = static_cast<float>(s);
      for (int64_t j = 0; j < cols; j++) yr[j] = static_cast<float>((xr[j] - m) * s) * pw[j] + pb[j];
    }
  });
}
RETNET_KERNEL("layerNorm", LayerNorm);

// layerNormBackward(x, w, mean, rstd, g, dx, dw, db, rows, cols):
// dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)), dw += sum g*xhat, db += sum g.
static Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), w = f32(info, 1, "w"), mean = f32(info, 2, "mean"), rstd = f32(info, 3, "rstd");
    auto g = f32(info, 4, "g"), dx = f32(info, 5, "dx"), dw = f32(info, 6, "dw"), db = f32(info, 7, "db");
    int64_t rows = dim(info, 8, "rows"), cols = dim(info, 9, "cols");
    require(x, rows * cols, "layerNormBackward", "x");
    require(g, rows * cols, "layerNormBackward", "g");
    require(dx, rows * cols, "layerNormBackward", "dx");
    require(w, cols, "layerNormBackward", "w");
    require(dw, cols, "layerNormBackward", "dw");
    require(db, cols, "layerNormBackward", "db");
    require(mean, rows, "layerNormBackward", "mean");
    require(rstd, rows, "layerNormBackward", "rstd");
    const float *px = x.data, *pw = w.data, *pm = mean.data, *pr = rstd.data, *pg = g.data;
    float* pdx = dx.data;
    int threads = omp_get_max_threads();
    std::vector<std::vector<double>> pdw(threads, std::vector<double>(cols, 0.0));
    std::vector<std::vector<double>> pdb(threads, std::vector<double>(cols, 0.0));
#pragma omp parallel if (rows * cols > kParallelGrain)
    {
      double* aw = pdw[omp_get_thread_num()].data();
      double* ab = pdb[omp_get_thread_num()].data();
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; r++) {
        const float *xr = px + r * cols, *gr = pg + r * cols;
        float* dr = pdx + r * cols;
        double m = pm[r], s = pr[r], sumG = 0, sumGX = 0;
        for (int64_t j = 0; j < cols; j++) {
          double gh = static_cast<double>(gr[j]) * pw[j], xh = (xr[j] - m) * s;
          sumG += gh;
          sumGX += gh * xh;
          aw[j] += static_cast<double>(gr[j]) * xh;
          ab[j] += gr[j];
        }
        double n = static_cast<double>(cols);
        for (int64_t j = 0; j < cols; j++) {
          double gh = static_cast<double>(gr[j]) * pw[j], xh = (xr[j] - m) * s;
          dr[j] = static_cast<float>(s * (gh - sumG / n - xh * sumGX / n));
        }
      }
    }
    reducePartials(pdw, dw.data, cols);
    reducePartials(pdb, db.data, cols);
  });
}
RETNET_KERNEL("layerNormBackward", LayerNormBackward);

}  // namespace retnet
