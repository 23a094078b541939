// Row kernels (one block per row of the last dim): RMSNorm, LayerNorm, softmax, cross-entropy; the embedding gather
// and scatter; the fused AdamW step over many tensors; the sum of squares. Weight gradients are column reductions
// over rows done by a second deterministic kernel (no atomics), as sumRows does.
#include <climits>

#include "device.h"
#include "launch.h"

namespace retnet::cuda {

namespace {

constexpr int kRowThreads = 256;

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// y = x·rstd·w, times silu(z) where a gate z is given (the gated per-head norm of RetNet).
__global__ void rmsNormKernel(const float* x, const float* z, const float* w, float* y, float* rstd, int64_t cols,
                              float eps) {
  int64_t r = blockIdx.x;
  const float* xr = x + r * cols;
  float ss = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) ss += xr[j] * xr[j];
  ss = blockSum(ss);
  float s = rsqrtf(ss / static_cast<float>(cols) + eps);
  if (threadIdx.x == 0) rstd[r] = s;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float v = xr[j] * s * (w ? w[j] : 1.0f);
    if (z) {
      float zj = z[r * cols + j];
      v *= zj * sigmoid(zj);
    }
    y[r * cols + j] = v;
  }
}

// The same for rows of cols % 4 == 0 up to kVecRowPer·4·1024 wide (aligned pointers): each thread holds its
// kVecRowPer float4 of x in registers, so x is read once and every load is issued before the first is used.
// Session 4's profile of the 6.7B decode step had the kernel above at 11 µs per 4096-wide row (97 a step: 1.05 ms):
// each thread's 16 loads waited on one another through the loop.
constexpr int kVecRowPer = 4;

__global__ void rmsNormVecKernel(const float* __restrict__ x, const float* __restrict__ z,
                                 const float* __restrict__ w, float* __restrict__ y, float* __restrict__ rstd,
                                 int64_t cols, float eps) {
  pdlTrigger();
  int64_t r = blockIdx.x;
  int64_t n4 = cols / 4;
  const float4* xr = reinterpret_cast<const float4*>(x + r * cols);
  float4 v[kVecRowPer];
  float ss = 0;
#pragma unroll
  for (int p = 0; p < kVecRowPer; p++) {
    int64_t i = threadIdx.x + static_cast<int64_t>(p) * blockDim.x;
    v[p] = i < n4 ? xr[i] : make_float4(0, 0, 0, 0);
  }
#pragma unroll
  for (int p = 0; p < kVecRowPer; p++) ss += v[p].x * v[p].x + v[p].y * v[p].y + v[p].z * v[p].z + v[p].w * v[p].w;
  ss = blockSum(ss);
  float s = rsqrtf(ss / static_cast<float>(cols) + eps);
  if (threadIdx.x == 0) rstd[r] = s;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const float4* z4 = reinterpret_cast<const float4*>(z ? z + r * cols : nullptr);
  float4* y4 = reinterpret_cast<float4*>(y + r * cols);
#pragma unroll
  for (int p = 0; p < kVecRowPer; p++) {
    int64_t i = threadIdx.x + static_cast<int64_t>(p) * blockDim.x;
    if (i >= n4) continue;
    float4 o = make_float4(v[p].x * s, v[p].y * s, v[p].z * s, v[p].w * s);
    if (w) {
      float4 wv = w4[i];
      o = make_float4(o.x * wv.x, o.y * wv.y, o.z * wv.z, o.w * wv.w);
    }
    if (z) {
      float4 zv = z4[i];
      o = make_float4(o.x * zv.x * sigmoid(zv.x), o.y * zv.y * sigmoid(zv.y), o.z * zv.z * sigmoid(zv.z),
                      o.w * zv.w * sigmoid(zv.w));
    }
    y4[i] = o;
  }
}

// With a gate z (y = n·silu(z), n = x·rstd·w): dz = g·n·silu'(z), and the norm receives h = g·silu(z) (h = g
// without a gate): dx = rstd·h·w − x·rstd³·Σ(h·w·x)/cols.
__global__ void rmsNormBackwardKernel(const float* x, const float* z, const float* w, const float* rstd,
                                      const float* g, float* dx, float* dz, int64_t cols) {
  int64_t r = blockIdx.x;
  const float *xr = x + r * cols, *gr = g + r * cols;
  float s = rstd[r], dot = 0;
  auto h = [&](int64_t j) {
    if (!z) return gr[j];
    float zj = z[r * cols + j];
    return gr[j] * zj * sigmoid(zj);
  };
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dot += h(j) * (w ? w[j] : 1.0f) * xr[j];
  dot = blockSum(dot);
  float c = s * s * s * dot / static_cast<float>(cols);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float wj = w ? w[j] : 1.0f;
    dx[r * cols + j] = s * h(j) * wj - c * xr[j];
    if (z) {
      float zj = z[r * cols + j], sg = sigmoid(zj);
      dz[r * cols + j] = gr[j] * xr[j] * s * wj * sg * (1.0f + zj * (1.0f - sg));
    }
  }
}

// out[j] = Σ_r g[r,j]·xhat[r,j] where xhat = (x − mean[r])·rstd[r] (mean null: 0); optional second output Σ_r g[r,j].
// With a gate z, g is first multiplied by silu(z) (the gated norm's h).
__global__ void columnGradKernel(const float* x, const float* mean, const float* rstd, const float* g, const float* z,
                                 float* dw, float* db, int64_t rows, int64_t cols) {
  __shared__ double pw[8][33], pb[8][33];
  int64_t j = blockIdx.x * 32 + threadIdx.x;
  double sw = 0, sb = 0;
  if (j < cols)
    for (int64_t r = threadIdx.y; r < rows; r += 8) {
      float gi = g[r * cols + j];
      if (z) gi *= z[r * cols + j] * sigmoid(z[r * cols + j]);
      sw += gi * (x[r * cols + j] - (mean ? mean[r] : 0.0f)) * rstd[r];
      sb += gi;
    }
  pw[threadIdx.y][threadIdx.x] = sw;
  pb[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    double tw = 0, tb = 0;
    for (int y = 0; y < 8; y++) {
      tw += pw[y][threadIdx.x];
      tb += pb[y][threadIdx.x];
    }
    dw[j] = static_cast<float>(tw);
    if (db) db[j] = static_cast<float>(tb);
  }
}

__global__ void layerNormKernel(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                                int64_t cols, float eps) {
  const float* xr = x + blockIdx.x * cols;
  float s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += xr[j];
  float m = blockSum(s) / static_cast<float>(cols);
  float v = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) v += (xr[j] - m) * (xr[j] - m);
  float rs = rsqrtf(blockSum(v) / static_cast<float>(cols) + eps);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = rs;
  }
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) y[blockIdx.x * cols + j] = (xr[j] - m) * rs * w[j] + b[j];
}

__global__ void layerNormBackwardKernel(const float* x, const float* w, const float* mean, const float* rstd,
                                        const float* g, float* dx, int64_t cols) {
  int64_t r = blockIdx.x;
  const float *xr = x + r * cols, *gr = g + r * cols;
  float m = mean[r], s = rstd[r], sg = 0, sgx = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float gh = gr[j] * w[j];
    sg += gh;
    sgx += gh * (xr[j] - m) * s;
  }
  sg = blockSum(sg);
  sgx = blockSum(sgx);
  float n = static_cast<float>(cols);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float xh = (xr[j] - m) * s;
    dx[r * cols + j] = s * (gr[j] * w[j] - sg / n - xh * sgx / n);
  }
}

__global__ void softmaxKernel(const float* x, float* y, int64_t cols) {
  const float* xr = x + blockIdx.x * cols;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, xr[j]);
  mx = blockMax(mx);
  float s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(xr[j] - mx);
  float inv = 1.0f / blockSum(s);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) y[blockIdx.x * cols + j] = expf(xr[j] - mx) * inv;
}

__global__ void softmaxBackwardKernel(const float* y, const float* g, float* dx, int64_t cols) {
  int64_t r = blockIdx.x;
  float d = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) d += g[r * cols + j] * y[r * cols + j];
  d = blockSum(d);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dx[r * cols + j] = y[r * cols + j] * (g[r * cols + j] - d);
}

__global__ void crossEntropyKernel(const float* logits, const int32_t* targets, float* loss, float* lse, int64_t V,
                                   int32_t ignoreIndex, int32_t* bad) {
  int64_t r = blockIdx.x;
  const float* xr = logits + r * V;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, xr[j]);
  mx = blockMax(mx);
  float s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - mx);
  s = blockSum(s);
  if (threadIdx.x == 0) {
    float l = mx + logf(s);
    int32_t t = targets[r];
    lse[r] = l;
    if (t == ignoreIndex) loss[r] = 0.0f;
    else if (t < 0 || t >= V) {
      loss[r] = NAN;
      atomicMin(bad, static_cast<int32_t>(r));
    } else loss[r] = l - xr[t];
  }
}

__global__ void crossEntropyBackwardKernel(const float* logits, const int32_t* targets, const float* lse,
                                           const float* g, float* dx, int64_t V, int32_t ignoreIndex) {
  int64_t r = blockIdx.x;
  int32_t t = targets[r];
  bool skip = t == ignoreIndex || t < 0 || t >= V;
  float gr = g[r], l = lse[r];
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    dx[r * V + j] = skip ? 0.0f : gr * expf(logits[r * V + j] - l) - (j == t ? gr : 0.0f);
}

__global__ void embeddingKernel(const float* table, const int32_t* ids, float* out, int64_t D, int64_t V,
                                int32_t* bad) {
  int64_t i = blockIdx.x;
  int32_t id = ids[i];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0 && bad) atomicMin(bad, static_cast<int32_t>(i));
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) out[i * D + j] = NAN;
    return;
  }
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) out[i * D + j] = table[id * D + j];
}

__global__ void embeddingBackwardKernel(const float* g, const int32_t* ids, float* out, int64_t D, int64_t V) {
  int64_t i = blockIdx.x;
  int32_t id = ids[i];
  if (id < 0 || id >= V) return;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) atomicAdd(&out[id * D + j], g[i * D + j]);
}

constexpr int kAdamTensors = 256;  // tensors per launch: 256 × 40 bytes of pointers and offsets, in the parameter space

struct AdamWTable {
  float* p[kAdamTensors];
  const float* g[kAdamTensors];
  float* m[kAdamTensors];
  float* v[kAdamTensors];
  int64_t offset[kAdamTensors + 1];  // prefix sums of sizes
  int count;
};

__global__ void adamwKernel(AdamWTable t, int64_t total, AdamWArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int lo = 0, hi = t.count - 1;  // the tensor holding flat index i: the last offset ≤ i
    while (lo < hi) {
      int mid = (lo + hi + 1) >> 1;
      if (t.offset[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    int64_t e = i - t.offset[lo];
    float gi = t.g[lo][e] * a.gradScale;
    float mi = a.beta1 * t.m[lo][e] + (1.0f - a.beta1) * gi;
    float vi = a.beta2 * t.v[lo][e] + (1.0f - a.beta2) * gi * gi;
    t.m[lo][e] = mi;
    t.v[lo][e] = vi;
    float decay = 1.0f - a.lr * a.weightDecay;
    t.p[lo][e] = t.p[lo][e] * decay - a.lr * (mi * a.c1) / (sqrtf(vi * a.c2) + a.eps);
  }
}

__global__ void sumSquaresKernel(const float* x, int64_t n, double* out) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += static_cast<double>(x[i]) * x[i];
  s = blockSum(s);
  if (threadIdx.x == 0) atomicAdd(out, s);
}

unsigned rowsGrid(int64_t rows) { return static_cast<unsigned>(rows); }

}  // namespace

void rmsNorm(const float* x, const float* z, const float* w, float* y, float* rstd, int64_t rows, int64_t cols,
             float eps) {
  if (rows == 0) return;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  int64_t n4 = cols / 4, threads = ((n4 + kVecRowPer - 1) / kVecRowPer + 31) / 32 * 32;
  if (cols > 0 && cols % 4 == 0 && threads <= 1024 && aligned(x) && aligned(y) && (!w || aligned(w)) &&
      (!z || aligned(z))) {
    rmsNormVecKernel<<<rowsGrid(rows), static_cast<unsigned>(threads), 0, stream()>>>(x, z, w, y, rstd, cols, eps);
    checkLaunch("rmsNorm");
    setTriggered(true);
    return;
  }
  rmsNormKernel<<<rowsGrid(rows), kRowThreads, 0, stream()>>>(x, z, w, y, rstd, cols, eps);
  checkLaunch("rmsNorm");
}

void rmsNormBackward(const float* x, const float* z, const float* w, const float* rstd, const float* g, float* dx,
                     float* dz, float* dw, int64_t rows, int64_t cols) {
  if (rows > 0) rmsNormBackwardKernel<<<rowsGrid(rows), kRowThreads, 0, stream()>>>(x, z, w, rstd, g, dx, dz, cols);
  if (dw && cols > 0)
    columnGradKernel<<<static_cast<unsigned>((cols + 31) / 32), dim3(32, 8), 0, stream()>>>(x, nullptr, rstd, g, z,
                                                                                            dw, nullptr, rows, cols);
  checkLaunch("rmsNormBackward");
}

void layerNorm(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t rows,
               int64_t cols, float eps) {
  if (rows == 0) return;
  layerNormKernel<<<rowsGrid(rows), kRowThreads, 0, stream()>>>(x, w, b, y, mean, rstd, cols, eps);
  checkLaunch("layerNorm");
}

void layerNormBackward(const float* x, const float* w, const float* mean, const float* rstd, const float* g,
                       float* dx, float* dw, float* db, int64_t rows, int64_t cols) {
  if (rows > 0) layerNormBackwardKernel<<<rowsGrid(rows), kRowThreads, 0, stream()>>>(x, w, mean, rstd, g, dx, cols);
  if (cols > 0)
    columnGradKernel<<<static_cast<unsigned>((cols + 31) / 32), dim3(32, 8), 0, stream()>>>(x, mean, rstd, g, nullptr, dw, db,
                                                                                            rows, cols);
  checkLaunch("layerNormBackward");
}

void softmax(const float* x, float* y, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  softmaxKernel<<<rowsGrid(rows), kRowThreads, 0, stream()>>>(x, y, cols);
  checkLaunch("softmax");
}

void softmaxBackward(const float* y, const float* g, float* dx, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  softmaxBackwardKernel<<<rowsGrid(rows), kRowThreads, 0, stream()>>>(y, g, dx, cols);
  checkLaunch("softmaxBackward");
}

void crossEntropy(const float* logits, const int32_t* targets, float* loss, float* lse, int64_t N, int64_t V,
                  int32_t ignoreIndex, int32_t* bad) {
  if (N == 0) return;
  crossEntropyKernel<<<rowsGrid(N), kRowThreads, 0, stream()>>>(logits, targets, loss, lse, V, ignoreIndex, bad);
  checkLaunch("crossEntropy");
}

void crossEntropyBackward(const float* logits, const int32_t* targets, const float* lse, const float* g, float* dx,
                          int64_t N, int64_t V, int32_t ignoreIndex) {
  if (N == 0) return;
  crossEntropyBackwardKernel<<<rowsGrid(N), kRowThreads, 0, stream()>>>(logits, targets, lse, g, dx, V, ignoreIndex);
  checkLaunch("crossEntropyBackward");
}

void embedding(const float* table, const int32_t* ids, float* out, int64_t n, int64_t D, int64_t V, int32_t* bad) {
  if (n == 0) return;
  embeddingKernel<<<static_cast<unsigned>(n), 128, 0, stream()>>>(table, ids, out, D, V, bad);
  checkLaunch("embedding");
}

void embeddingBackward(const float* g, const int32_t* ids, float* out, int64_t n, int64_t D, int64_t V) {
  if (n == 0) return;
  embeddingBackwardKernel<<<static_cast<unsigned>(n), 128, 0, stream()>>>(g, ids, out, D, V);
  checkLaunch("embeddingBackward");
}

void adamwMany(float* const* params, const float* const* grads, float* const* m, float* const* v,
               const int64_t* sizes, int count, AdamWArgs a) {
  for (int first = 0; first < count; first += kAdamTensors) {
    AdamWTable t{};
    t.count = std::min(kAdamTensors, count - first);
    int64_t total = 0;
    for (int i = 0; i < t.count; i++) {
      t.p[i] = params[first + i];
      t.g[i] = grads[first + i];
      t.m[i] = m[first + i];
      t.v[i] = v[first + i];
      t.offset[i] = total;
      total += sizes[first + i];
    }
    t.offset[t.count] = total;
    if (total == 0) continue;
    adamwKernel<<<gridFor(total), kThreads, 0, stream()>>>(t, total, a);
    checkLaunch("adamw");
  }
}

void sumSquares(const float* x, int64_t n, double* out) {
  check(cudaMemsetAsync(out, 0, sizeof(double), stream()), "sumSquares");
  if (n == 0) return;
  sumSquaresKernel<<<gridFor(n), kThreads, 0, stream()>>>(x, n, out);
  checkLaunch("sumSquares");
}

}  // namespace retnet::cuda
