// Softmax over the last dimension and the fused log-softmax cross-entropy (the LM loss), forward and backward; the
// exponentials through native/cpu/vmath.h.
#include <cmath>
#include <string>

#include "common.h"
#include "vmath.h"

namespace retnet {

// softmax(x, y, rows, cols)
static Napi::Value Softmax(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), y = f32(info, 1, "y");
    int64_t rows = dim(info, 2, "rows"), cols = dim(info, 3, "cols");
    require(x, rows * cols, "softmax", "x");
    require(y, rows * cols, "softmax", "y");
    const float* px = x.data;
    float* py = y.data;
#pragma omp parallel for if (rows * cols > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = px + r * cols;
      float* yr = py + r * cols;
      float mx = -INFINITY;
      for (int64_t j = 0; j < cols; j++) mx = xr[j] > mx ? xr[j] : mx;
      vmath::expShift(xr, mx, yr, cols);
      double sum = 0;
      for (int64_t j = 0; j < cols; j++) sum += yr[j];
      float inv = static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j < cols; j++) yr[j] *= inv;
    }
  });
}
RETNET_KERNEL("softmax", Softmax);

// softmaxBackward(y, g, dx, rows, cols): dx = y * (g - sum(g * y)).
static Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto y = f32(info, 0, "y"), g = f32(info, 1, "g"), dx = f32(info, 2, "dx");
    int64_t rows = dim(info, 3, "rows"), cols = dim(info, 4, "cols");
    require(y, rows * cols, "softmaxBackward", "y");
    require(g, rows * cols, "softmaxBackward", "g");
    require(dx, rows * cols, "softmaxBackward", "dx");
    const float *py = y.data, *pg = g.data;
    float* pd = dx.data;
#pragma omp parallel for if (rows * cols > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float *yr = py + r * cols, *gr = pg + r * cols;
      float* dr = pd + r * cols;
      double dot = 0;
      for (int64_t j = 0; j < cols; j++) dot += static_cast<double>(gr[j]) * yr[j];
      for (int64_t j = 0; j < cols; j++) dr[j] = static_cast<float>(yr[j] * (gr[j] - dot));
    }
  });
}
RETNET_KERNEL("softmaxBackward", SoftmaxBackward);

// Targets are checked before any thread starts, so a bad id is a clear error instead of a wild read.
static void checkTargets(const Span<int32_t>& t, int64_t rows, int64_t vocab, int64_t ignore, const char* kernel) {
  for (int64_t r = 0; r < rows; r++) {
    int64_t id = t.data[r];
    if (id != ignore && (id < 0 || id >= vocab))
      throw ArgError{std::string(kernel) + ": target " + std::to_string(id) + " at row " + std::to_string(r) +
                     " is outside the vocabulary [0, " + std::to_string(vocab) + ")"};
  }
}

// crossEntropy(logits, targets, loss, lse, rows, vocab, ignoreIndex): loss[r] = lse[r] - logits[r, t[r]], 0 where
// t[r] == ignoreIndex. lse (log-sum-exp per row) is saved for the backward pass.
static Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "logits");
    auto t = i32(info, 1, "targets");
    auto loss = f32(info, 2, "loss"), lse = f32(info, 3, "lse");
    int64_t rows = dim(info, 4, "rows"), V = dim(info, 5, "vocab");
    int64_t ignore = static_cast<int64_t>(num(info, 6, "ignoreIndex"));
    require(x, rows * V, "crossEntropy", "logits");
    require(t, rows, "crossEntropy", "targets");
    require(loss, rows, "crossEntropy", "loss");
    require(lse, rows, "crossEntropy", "lse");
    checkTargets(t, rows, V, ignore, "crossEntropy");
    const float* px = x.data;
    const int32_t* pt = t.data;
    float *pl = loss.data, *ps = lse.data;
#pragma omp parallel for if (rows * V > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = px + r * V;
      float mx = -INFINITY;
      for (int64_t j = 0; j < V; j++) mx = xr[j] > mx ? xr[j] : mx;
      double l = mx + std::log(vmath::expShiftSum(xr, mx, V));
      ps[r] = static_cast<float>(l);
      pl[r] = pt[r] == ignore ? 0.0f : static_cast<float>(l - xr[pt[r]]);
    }
  });
}
RETNET_KERNEL("crossEntropy", CrossEntropy);

// crossEntropyBackward(logits, targets, lse, g, dlogits, rows, vocab, ignoreIndex):
// dlogits[r] = g[r] * (softmax(logits[r]) - onehot(t[r])), 0 for ignored rows. g is the per-row loss gradient.
static Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "logits");
    auto t = i32(info, 1, "targets");
    auto lse = f32(info, 2, "lse"), g = f32(info, 3, "g"), dx = f32(info, 4, "dlogits");
    int64_t rows = dim(info, 5, "rows"), V = dim(info, 6, "vocab");
    int64_t ignore = static_cast<int64_t>(num(info, 7, "ignoreIndex"));
    require(x, rows * V, "crossEntropyBackward", "logits");
    require(t, rows, "crossEntropyBackward", "targets");
    require(lse, rows, "crossEntropyBackward", "lse");
    require(g, rows, "crossEntropyBackward", "g");
    require(dx, rows * V, "crossEntropyBackward", "dlogits");
    checkTargets(t, rows, V, ignore, "crossEntropyBackward");
    const float *px = x.data, *ps = lse.data, *pg = g.data;
    const int32_t* pt = t.data;
    float* pd = dx.data;
#pragma omp parallel for if (rows * V > kParallelGrain) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = px + r * V;
      float* dr = pd + r * V;
      if (pt[r] == ignore) {
        for (int64_t j = 0; j < V; j++) dr[j] = 0.0f;
        continue;
      }
      float l = ps[r], gr = pg[r];
      vmath::expShift(xr, l, dr, V);
      for (int64_t j = 0; j < V; j++) dr[j] *= gr;
      dr[pt[r]] -= gr;
    }
  });
}
RETNET_KERNEL("crossEntropyBackward", CrossEntropyBackward);

}  // namespace retnet
