// Tiled FlashAttention (forward, and FlashAttention-2's backward split into a dq pass and a dk/dv pass) for head
// dims K, V ≤ 128, float32 on the CUDA cores; attention.cu's one-warp-per-row kernels take larger heads. Layouts as
// attention.cu: q, k [B, T, H, K]; v, o, dO [B, T, H, V]; L, D [B, H, T]; causal, scores q·k / sqrt(K).
//
// A block holds kRows = 64 rows of its own side (queries forward and for dq, keys for dk/dv) in shared memory, one
// warp per 16 of them, and walks tiles of 32 rows of the other side through shared memory: lane j takes row j of
// the tile, so a score is one lane's dot product over shared memory (padded rows: no bank conflicts), the row's
// softmax statistics are warp reductions, and the products with the tile (P·V, dS·K, Pᵀ·dO, dSᵀ·Q) read the
// probabilities back from shared memory by broadcast while each lane accumulates 4 output columns (lane + 32e).
// Every tile of keys or values is read once per 64 rows instead of once per row (attention.cu's v1: 204 ms forward
// at B 2 H 16 T 8192 D 128, each warp re-reading all earlier rows from L2).
#include <cmath>

#include "device.h"
#include "launch.h"

namespace retnet::cuda {

namespace {

constexpr int kRows = 64;     // rows of the block's side
constexpr int kWarpRows = 16;  // rows per warp (4 warps)
constexpr int kTile = 32;     // rows of the other side per step: one per lane
constexpr int kThreads = 128;
constexpr int kMaxDim = 128;  // K, V ≤ 4 columns per lane
constexpr int kCols = kMaxDim / 32;

__device__ __forceinline__ int64_t rowAt(int64_t bh, int64_t H, int64_t T, int64_t t, int64_t W) {
  return (((bh / H) * T + t) * H + bh % H) * W;
}

__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Rows [t0, t0 + n) of x (row width W) into s with row stride P; rows past T are zeros.
__device__ __forceinline__ void stage(float* s, int P, const float* x, int64_t bh, int64_t H, int64_t T, int64_t t0,
                                      int n, int64_t W) {
  for (int i = threadIdx.x; i < n * W; i += kThreads) {
    int r = i / W, c = i % W;
    int64_t t = t0 + r;
    s[r * P + c] = t < T ? x[rowAt(bh, H, T, t, W) + c] : 0.0f;
  }
}

// Σ_d a[d]·b[d] over d < W.
__device__ __forceinline__ float dot(const float* a, const float* b, int64_t W) {
  float s = 0;
  for (int64_t d = 0; d < W; d++) s += a[d] * b[d];
  return s;
}

// Forward: block (query tile, bh). Shared: Q [64][K+1], K tile [32][K+1], V tile [32][V], P [4][16][32].
__global__ void __launch_bounds__(kThreads) forwardKernel(const float* q, const float* k, const float* v, float* o,
                                                          float* lse, int64_t H, int64_t T, int64_t K, int64_t V,
                                                          float scale) {
  extern __shared__ float sm[];
  const int KP = static_cast<int>(K) + 1;
  float* Qs = sm;
  float* Ks = Qs + kRows * KP;
  float* Vs = Ks + kTile * KP;
  float* Ps = Vs + kTile * V;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int64_t bh = blockIdx.y, i0 = int64_t(blockIdx.x) * kRows, wr0 = i0 + w * kWarpRows;
  stage(Qs, KP, q, bh, H, T, i0, kRows, K);
  float m[kWarpRows], l[kWarpRows], acc[kWarpRows][kCols];
#pragma unroll
  for (int r = 0; r < kWarpRows; r++) {
    m[r] = -INFINITY;
    l[r] = 0;
#pragma unroll
    for (int e = 0; e < kCols; e++) acc[r][e] = 0;
  }
  float* P = Ps + w * kWarpRows * kTile;
  int64_t last = min(T - 1, i0 + kRows - 1);
  for (int64_t j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();
    stage(Ks, KP, k, bh, H, T, j0, kTile, K);
    stage(Vs, static_cast<int>(V), v, bh, H, T, j0, kTile, V);
    __syncthreads();
    if (j0 > wr0 + kWarpRows - 1) continue;  // the whole tile is after this warp's rows
    int64_t j = j0 + lane;
#pragma unroll
    for (int r = 0; r < kWarpRows; r++) {
      float s = j <= wr0 + r && j < T ? dot(Qs + (w * kWarpRows + r) * KP, Ks + lane * KP, K) * scale : -INFINITY;
      float mn = fmaxf(m[r], warpMax(s));  // finite: key 0 is in the first tile of every row
      float corr = expf(m[r] - mn), p = expf(s - mn);
      l[r] = l[r] * corr + p;
#pragma unroll
      for (int e = 0; e < kCols; e++) acc[r][e] *= corr;
      m[r] = mn;
      P[r * kTile + lane] = p;
    }
    __syncwarp();
    for (int jj = 0; jj < kTile; jj++) {
      float vj[kCols];
#pragma unroll
      for (int e = 0; e < kCols; e++) vj[e] = lane + 32 * e < V ? Vs[jj * V + lane + 32 * e] : 0.0f;
#pragma unroll
      for (int r = 0; r < kWarpRows; r++) {
        float p = P[r * kTile + jj];
#pragma unroll
        for (int e = 0; e < kCols; e++) acc[r][e] += p * vj[e];
      }
    }
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < kWarpRows; r++) {
    int64_t i = wr0 + r;
    float L = warpSum(l[r]);
    if (i >= T) continue;
#pragma unroll
    for (int e = 0; e < kCols; e++)
      if (lane + 32 * e < V) o[rowAt(bh, H, T, i, V) + lane + 32 * e] = acc[r][e] / L;
    if (lane == 0) lse[bh * T + i] = m[r] + logf(L);
  }
}

// dq: block (query tile, bh). dS_ij = P_ij (dO_i·v_j − D_i), dq_i = scale Σ_j dS_ij k_j.
// Shared: Q [64][K+1], dO [64][V+1], K tile [32][K+1], V tile [32][V+1], dS [4][16][32].
__global__ void __launch_bounds__(kThreads) dqKernel(const float* q, const float* k, const float* v, const float* lse,
                                                     const float* dO, const float* D, float* dq, int64_t H, int64_t T,
                                                     int64_t K, int64_t V, float scale) {
  extern __shared__ float sm[];
  const int KP = static_cast<int>(K) + 1, VP = static_cast<int>(V) + 1;
  float* Qs = sm;
  float* Gs = Qs + kRows * KP;
  float* Ks = Gs + kRows * VP;
  float* Vs = Ks + kTile * KP;
  float* Ss = Vs + kTile * VP;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int64_t bh = blockIdx.y, i0 = int64_t(blockIdx.x) * kRows, wr0 = i0 + w * kWarpRows;
  stage(Qs, KP, q, bh, H, T, i0, kRows, K);
  stage(Gs, VP, dO, bh, H, T, i0, kRows, V);
  float Lr[kWarpRows], Dr[kWarpRows], acc[kWarpRows][kCols];
#pragma unroll
  for (int r = 0; r < kWarpRows; r++) {
    int64_t i = wr0 + r;
    Lr[r] = i < T ? lse[bh * T + i] : 0.0f;
    Dr[r] = i < T ? D[bh * T + i] : 0.0f;
#pragma unroll
    for (int e = 0; e < kCols; e++) acc[r][e] = 0;
  }
  float* S = Ss + w * kWarpRows * kTile;
  int64_t last = min(T - 1, i0 + kRows - 1);
  for (int64_t j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();
    stage(Ks, KP, k, bh, H, T, j0, kTile, K);
    stage(Vs, VP, v, bh, H, T, j0, kTile, V);
    __syncthreads();
    if (j0 > wr0 + kWarpRows - 1) continue;
    int64_t j = j0 + lane;
#pragma unroll
    for (int r = 0; r < kWarpRows; r++) {
      int row = w * kWarpRows + r;
      float ds = 0;
      if (j <= wr0 + r && j < T && wr0 + r < T) {
        float p = expf(dot(Qs + row * KP, Ks + lane * KP, K) * scale - Lr[r]);
        ds = p * (dot(Gs + row * VP, Vs + lane * VP, V) - Dr[r]);
      }
      S[r * kTile + lane] = ds;
    }
    __syncwarp();
    for (int jj = 0; jj < kTile; jj++) {
      float kj[kCols];
#pragma unroll
      for (int e = 0; e < kCols; e++) kj[e] = lane + 32 * e < K ? Ks[jj * KP + lane + 32 * e] : 0.0f;
#pragma unroll
      for (int r = 0; r < kWarpRows; r++) {
        float ds = S[r * kTile + jj];
#pragma unroll
        for (int e = 0; e < kCols; e++) acc[r][e] += ds * kj[e];
      }
    }
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < kWarpRows; r++) {
    int64_t i = wr0 + r;
    if (i >= T) continue;
#pragma unroll
    for (int e = 0; e < kCols; e++)
      if (lane + 32 * e < K) dq[rowAt(bh, H, T, i, K) + lane + 32 * e] = acc[r][e] * scale;
  }
}

// dk, dv: block (key tile, bh); the query tiles from the block's first key on. dv_j = Σ_i P_ij dO_i,
// dk_j = scale Σ_i dS_ij q_i. Shared: K [64][K], V [64][V], Q tile [32][K+1], dO tile [32][V+1], L and D of the
// tile [32] each, P and dS [4][16][32] each.
__global__ void __launch_bounds__(kThreads) dkvKernel(const float* q, const float* k, const float* v,
                                                      const float* lse, const float* dO, const float* D, float* dk,
                                                      float* dv, int64_t H, int64_t T, int64_t K, int64_t V,
                                                      float scale) {
  extern __shared__ float sm[];
  const int KP = static_cast<int>(K) + 1, VP = static_cast<int>(V) + 1;
  float* Ks = sm;
  float* Vs = Ks + kRows * K;
  float* Qs = Vs + kRows * V;
  float* Gs = Qs + kTile * KP;
  float* Ls = Gs + kTile * VP;
  float* Ds = Ls + kTile;
  float* Ps = Ds + kTile;
  float* Ss = Ps + 4 * kWarpRows * kTile;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int64_t bh = blockIdx.y, j0 = int64_t(blockIdx.x) * kRows, wr0 = j0 + w * kWarpRows;
  stage(Ks, static_cast<int>(K), k, bh, H, T, j0, kRows, K);
  stage(Vs, static_cast<int>(V), v, bh, H, T, j0, kRows, V);
  float ak[kWarpRows][kCols], av[kWarpRows][kCols];
#pragma unroll
  for (int r = 0; r < kWarpRows; r++)
#pragma unroll
    for (int e = 0; e < kCols; e++) ak[r][e] = av[r][e] = 0;
  float* P = Ps + w * kWarpRows * kTile;
  float* S = Ss + w * kWarpRows * kTile;
  for (int64_t i0 = j0 / kTile * kTile; i0 < T; i0 += kTile) {
    __syncthreads();
    stage(Qs, KP, q, bh, H, T, i0, kTile, K);
    stage(Gs, VP, dO, bh, H, T, i0, kTile, V);
    if (threadIdx.x < kTile) {
      int64_t i = i0 + threadIdx.x;
      Ls[threadIdx.x] = i < T ? lse[bh * T + i] : 0.0f;
      Ds[threadIdx.x] = i < T ? D[bh * T + i] : 0.0f;
    }
    __syncthreads();
    if (i0 + kTile - 1 < wr0) continue;  // every query of the tile is before this warp's keys
    int64_t i = i0 + lane;
#pragma unroll
    for (int r = 0; r < kWarpRows; r++) {
      int row = w * kWarpRows + r;
      float p = 0, ds = 0;
      if (i >= wr0 + r && i < T && wr0 + r < T) {
        p = expf(dot(Ks + row * K, Qs + lane * KP, K) * scale - Ls[lane]);
        ds = p * (dot(Vs + row * V, Gs + lane * VP, V) - Ds[lane]);
      }
      P[r * kTile + lane] = p;
      S[r * kTile + lane] = ds;
    }
    __syncwarp();
    for (int ii = 0; ii < kTile; ii++) {
      float qi[kCols], gi[kCols];
#pragma unroll
      for (int e = 0; e < kCols; e++) {
        int c = lane + 32 * e;
        qi[e] = c < K ? Qs[ii * KP + c] : 0.0f;
        gi[e] = c < V ? Gs[ii * VP + c] : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kWarpRows; r++) {
        float p = P[r * kTile + ii], ds = S[r * kTile + ii];
#pragma unroll
        for (int e = 0; e < kCols; e++) {
          av[r][e] += p * gi[e];
          ak[r][e] += ds * qi[e];
        }
      }
    }
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < kWarpRows; r++) {
    int64_t j = wr0 + r;
    if (j >= T) continue;
#pragma unroll
    for (int e = 0; e < kCols; e++) {
      int c = lane + 32 * e;
      if (c < K) dk[rowAt(bh, H, T, j, K) + c] = ak[r][e] * scale;
      if (c < V) dv[rowAt(bh, H, T, j, V) + c] = av[r][e];
    }
  }
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, size_t floats, int64_t BH, int64_t T, const char* what, Args... args) {
  size_t bytes = floats * sizeof(float);
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), what);
  dim3 grid(static_cast<unsigned>((T + kRows - 1) / kRows), static_cast<unsigned>(BH));
  kernel<<<grid, kThreads, bytes, stream()>>>(args...);
  checkLaunch(what);
}

}  // namespace

bool flashTiled(Dims d) { return d.K <= kMaxDim && d.V <= kMaxDim && d.K > 0 && d.V > 0; }

void flashTiledForward(const float* q, const float* k, const float* v, float* o, float* lse, Dims d) {
  int64_t K = d.K, V = d.V;
  size_t floats = kRows * (K + 1) + kTile * (K + 1) + kTile * V + 4 * kWarpRows * kTile;
  launch(forwardKernel, floats, d.B * d.H, d.T, "attention (flash, tiled)", q, k, v, o, lse, d.H, d.T, K, V,
         1.0f / sqrtf(static_cast<float>(K)));
}

void flashTiledBackward(const float* q, const float* k, const float* v, const float* lse, const float* dO,
                        const float* D, float* dq, float* dk, float* dv, Dims d) {
  int64_t K = d.K, V = d.V;
  float scale = 1.0f / sqrtf(static_cast<float>(K));
  size_t dqFloats = kRows * (K + 1) + kRows * (V + 1) + kTile * (K + 1) + kTile * (V + 1) + 4 * kWarpRows * kTile;
  launch(dqKernel, dqFloats, d.B * d.H, d.T, "attention backward (flash, tiled dq)", q, k, v, lse, dO, D, dq, d.H,
         d.T, K, V, scale);
  size_t kvFloats =
      kRows * K + kRows * V + kTile * (K + 1) + kTile * (V + 1) + 2 * kTile + 2 * 4 * kWarpRows * kTile;
  launch(dkvKernel, kvFloats, d.B * d.H, d.T, "attention backward (flash, tiled dk dv)", q, k, v, lse, dO, D, dk, dv,
         d.H, d.T, K, V, scale);
}

}  // namespace retnet::cuda
