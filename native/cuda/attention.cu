// Causal softmax attention for the Transformer baseline (flash with K, V ≤ 128 runs flash.cu's tiled kernels; here
// are the naive kernels, the decode kernel and flash for larger heads), with the CPU kernels' layouts: q, k
// [B, T, H, K]; v, o, dO [B, T, H, V]; P [B, H, T, T] (naive); L [B, H, T] (flash: the row log-sum-exp); caches [B, H, C, K|V].
// One warp per query row (forward, dq) or key row (dk, dv): each lane holds K/32 elements of its row in registers,
// scores are warp-wide dot products, and the softmax is online (running max m and sum l, the accumulator rescaled
// when m grows), so no buffer larger than a row exists and memory is linear in T. The backward pass recomputes
// P = exp(s − L) (flash) or reads it (naive) twice: once per query row for dq and once per key row for dk and dv,
// so that nothing is accumulated across warps (no atomics) -- FlashAttention-2's split of the two loops.
// Scores are q·k / sqrt(K).
#include <cmath>

#include "device.h"
#include "launch.h"

namespace retnet::cuda {

namespace {

constexpr int kLanes = 32;
constexpr int kPer = 8;  // elements per lane: K, V ≤ 256
constexpr int kWarps = 4;

__device__ __forceinline__ int64_t rowAt(int64_t bh, int64_t H, int64_t T, int64_t t, int64_t W) {
  return (((bh / H) * T + t) * H + bh % H) * W;
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Loads row p[0, W) into the lane's registers (lane holds p[lane + 32 e]).
__device__ __forceinline__ void loadRow(float (&r)[kPer], const float* p, int64_t W, int lane) {
#pragma unroll
  for (int e = 0; e < kPer; e++) {
    int64_t x = lane + kLanes * e;
    r[e] = x < W ? p[x] : 0.0f;
  }
}

__device__ __forceinline__ float dotRow(const float (&r)[kPer], const float* p, int64_t W, int lane) {
  float s = 0;
#pragma unroll
  for (int e = 0; e < kPer; e++) {
    int64_t x = lane + kLanes * e;
    if (x < W) s += r[e] * p[x];
  }
  return warpSum(s);
}

// Forward, one warp per (bh, i). Naive: a second pass writes the normalised row of P (zeros above the diagonal).
template <bool Naive>
__global__ void forwardKernel(const float* q, const float* k, const float* v, float* o, float* stats, int64_t BH,
                              int64_t H, int64_t T, int64_t K, int64_t V, float scale) {
  int lane = threadIdx.x & 31;
  int64_t row = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5);
  if (row >= BH * T) return;
  int64_t bh = row / T, i = row % T;
  float qr[kPer], acc[kPer];
  loadRow(qr, q + rowAt(bh, H, T, i, K), K, lane);
#pragma unroll
  for (int e = 0; e < kPer; e++) acc[e] = 0;
  float m = -INFINITY, l = 0;
  for (int64_t j = 0; j <= i; j++) {
    float s = dotRow(qr, k + rowAt(bh, H, T, j, K), K, lane) * scale;
    float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);
    l = l * corr + p;
    const float* vj = v + rowAt(bh, H, T, j, V);
#pragma unroll
    for (int e = 0; e < kPer; e++) {
      int64_t y = lane + kLanes * e;
      acc[e] = acc[e] * corr + (y < V ? p * vj[y] : 0.0f);
    }
    m = mn;
  }
  float* orow = o + rowAt(bh, H, T, i, V);
#pragma unroll
  for (int e = 0; e < kPer; e++) {
    int64_t y = lane + kLanes * e;
    if (y < V) orow[y] = acc[e] / l;
  }
  if (Naive) {
    float* prow = stats + row * T;
    float lse = m + logf(l);
    for (int64_t j = 0; j < T; j++) {
      float p = j <= i ? expf(dotRow(qr, k + rowAt(bh, H, T, j, K), K, lane) * scale - lse) : 0.0f;
      if (lane == 0) prow[j] = p;
    }
  } else if (lane == 0) {
    stats[row] = m + logf(l);
  }
}

// D_i = dO_i · o_i, with o_i = Σ_j P_ij v_j recomputed from P when the forward's o is not given (naive).
__global__ void rowDotKernel(const float* o, const float* P, const float* v, const float* dO, float* D, int64_t BH,
                             int64_t H, int64_t T, int64_t V) {
  int lane = threadIdx.x & 31;
  int64_t row = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5);
  if (row >= BH * T) return;
  int64_t bh = row / T, i = row % T;
  float acc[kPer];
  if (o) loadRow(acc, o + rowAt(bh, H, T, i, V), V, lane);
  else {
#pragma unroll
    for (int e = 0; e < kPer; e++) acc[e] = 0;
    for (int64_t j = 0; j <= i; j++) {
      float p = P[row * T + j];
      const float* vj = v + rowAt(bh, H, T, j, V);
#pragma unroll
      for (int e = 0; e < kPer; e++) {
        int64_t y = lane + kLanes * e;
        if (y < V) acc[e] += p * vj[y];
      }
    }
  }
  float d = dotRow(acc, dO + rowAt(bh, H, T, i, V), V, lane);
  if (lane == 0) D[row] = d;
}

// P_ij (read or recomputed) and dS_ij = P_ij (dO_i·v_j − D_i) / sqrt(K).
template <bool Naive>
__device__ __forceinline__ float2 probAndGrad(const float (&qr)[kPer], const float (&gr)[kPer], const float* k,
                                              const float* v, const float* stats, const float* D, int64_t bh,
                                              int64_t H, int64_t T, int64_t K, int64_t V, int64_t i, int64_t j,
                                              float scale, int lane) {
  float p;
  if (Naive) p = stats[(bh * T + i) * T + j];
  else p = expf(dotRow(qr, k + rowAt(bh, H, T, j, K), K, lane) * scale - stats[bh * T + i]);
  float dp = dotRow(gr, v + rowAt(bh, H, T, j, V), V, lane);
  return make_float2(p, p * (dp - D[bh * T + i]) * scale);
}

template <bool Naive>
__global__ void dqKernel(const float* q, const float* k, const float* v, const float* stats, const float* dO,
                         const float* D, float* dq, int64_t BH, int64_t H, int64_t T, int64_t K, int64_t V,
                         float scale) {
  int lane = threadIdx.x & 31;
  int64_t row = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5);
  if (row >= BH * T) return;
  int64_t bh = row / T, i = row % T;
  float qr[kPer], gr[kPer], acc[kPer];
  loadRow(qr, q + rowAt(bh, H, T, i, K), K, lane);
  loadRow(gr, dO + rowAt(bh, H, T, i, V), V, lane);
#pragma unroll
  for (int e = 0; e < kPer; e++) acc[e] = 0;
  for (int64_t j = 0; j <= i; j++) {
    float ds = probAndGrad<Naive>(qr, gr, k, v, stats, D, bh, H, T, K, V, i, j, scale, lane).y;
    const float* kj = k + rowAt(bh, H, T, j, K);
#pragma unroll
    for (int e = 0; e < kPer; e++) {
      int64_t x = lane + kLanes * e;
      if (x < K) acc[e] += ds * kj[x];
    }
  }
  float* out = dq + rowAt(bh, H, T, i, K);
#pragma unroll
  for (int e = 0; e < kPer; e++) {
    int64_t x = lane + kLanes * e;
    if (x < K) out[x] = acc[e];
  }
}

template <bool Naive>
__global__ void dkvKernel(const float* q, const float* k, const float* v, const float* stats, const float* dO,
                          const float* D, float* dk, float* dv, int64_t BH, int64_t H, int64_t T, int64_t K,
                          int64_t V, float scale) {
  int lane = threadIdx.x & 31;
  int64_t row = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5);
  if (row >= BH * T) return;
  int64_t bh = row / T, j = row % T;
  float kr[kPer], vr[kPer], ak[kPer], av[kPer];
  loadRow(kr, k + rowAt(bh, H, T, j, K), K, lane);
  loadRow(vr, v + rowAt(bh, H, T, j, V), V, lane);
#pragma unroll
  for (int e = 0; e < kPer; e++) ak[e] = av[e] = 0;
  for (int64_t i = j; i < T; i++) {
    const float* qi = q + rowAt(bh, H, T, i, K);
    const float* gi = dO + rowAt(bh, H, T, i, V);
    float p;
    if (Naive) p = stats[(bh * T + i) * T + j];
    else p = expf(dotRow(kr, qi, K, lane) * scale - stats[bh * T + i]);
    float ds = p * (dotRow(vr, gi, V, lane) - D[bh * T + i]) * scale;
#pragma unroll
    for (int e = 0; e < kPer; e++) {
      int64_t x = lane + kLanes * e;
      if (x < K) ak[e] += ds * qi[x];
      if (x < V) av[e] += p * gi[x];
    }
  }
#pragma unroll
  for (int e = 0; e < kPer; e++) {
    int64_t x = lane + kLanes * e;
    if (x < K) dk[rowAt(bh, H, T, j, K) + x] = ak[e];
    if (x < V) dv[rowAt(bh, H, T, j, V) + x] = av[e];
  }
}

// Decoding (split over the cache, as flash-decoding): block (bh, s) takes the keys [s·kDecodeSplit, +kDecodeSplit) of
// row bh, its warps taking them in turn, each with its own online softmax; the block combines its warps into a
// partial (max m, sum l, unnormalised accumulator) in the workspace, and a second kernel combines the partials of a
// row. One block per row left 16 blocks on 132 SMs at B 1, H 16: 103 GB/s over an 8k cache of a 6.7B model (run 1,
// 2026-12-02); the split gives every row ceil(n / 256) blocks.
constexpr int kDecodeWarps = 8;
constexpr int64_t kDecodeSplit = 256;

__global__ void decodeKernel(const float* q, const float* kc, const float* vc, const int32_t* lengths, float* part,
                             int64_t H, int64_t C, int64_t K, int64_t V, int64_t S, float scale) {
  __shared__ float ms[kDecodeWarps], ls[kDecodeWarps], accs[kDecodeWarps][kLanes * kPer];
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int64_t bh = blockIdx.x, split = blockIdx.y;
  int64_t n = lengths[bh / H];
  int64_t end = min(n, (split + 1) * kDecodeSplit);
  float qr[kPer], acc[kPer];
  loadRow(qr, q + bh * K, K, lane);
#pragma unroll
  for (int e = 0; e < kPer; e++) acc[e] = 0;
  float m = -INFINITY, l = 0;
  for (int64_t j = split * kDecodeSplit + w; j < end; j += kDecodeWarps) {
    float s = dotRow(qr, kc + (bh * C + j) * K, K, lane) * scale;
    float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);
    l = l * corr + p;
    const float* vj = vc + (bh * C + j) * V;
#pragma unroll
    for (int e = 0; e < kPer; e++) {
      int64_t y = lane + kLanes * e;
      acc[e] = acc[e] * corr + (y < V ? p * vj[y] : 0.0f);
    }
    m = mn;
  }
  if (lane == 0) {
    ms[w] = m;
    ls[w] = l;
  }
#pragma unroll
  for (int e = 0; e < kPer; e++) accs[w][lane + kLanes * e] = acc[e];
  __syncthreads();
  if (w != 0) return;
  float M = -INFINITY;
  for (int i = 0; i < kDecodeWarps; i++) M = fmaxf(M, ms[i]);
  float Lsum = 0;
  for (int i = 0; i < kDecodeWarps; i++) Lsum += ms[i] == -INFINITY ? 0.0f : ls[i] * expf(ms[i] - M);
  // part [BH, S, 2 + V]: m, l, then the accumulator relative to m.
  float* pr = part + (bh * S + split) * (2 + V);
  if (lane == 0) {
    pr[0] = M;
    pr[1] = Lsum;
  }
#pragma unroll
  for (int e = 0; e < kPer; e++) {
    int64_t y = lane + kLanes * e;
    if (y >= V) continue;
    float s = 0;
    for (int i = 0; i < kDecodeWarps; i++)
      if (ms[i] != -INFINITY) s += accs[i][y] * expf(ms[i] - M);
    pr[2 + y] = s;
  }
}

// o[bh, y] from the partials of row bh (splits past the row's length hold m = −inf and are skipped).
__global__ void decodeCombineKernel(const float* part, float* o, int64_t V, int64_t S) {
  int64_t bh = blockIdx.x;
  const float* pr = part + bh * S * (2 + V);
  float M = -INFINITY;
  for (int64_t s = 0; s < S; s++) M = fmaxf(M, pr[s * (2 + V)]);
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    float num = 0, den = 0;
    for (int64_t s = 0; s < S; s++) {
      float m = pr[s * (2 + V)];
      if (m == -INFINITY) continue;
      float c = expf(m - M);
      den += pr[s * (2 + V) + 1] * c;
      num += pr[s * (2 + V) + 2 + y] * c;
    }
    o[bh * V + y] = num / den;
  }
}

void checkDims(const char* what, int64_t K, int64_t V) {
  if (K > kLanes * kPer || V > kLanes * kPer)
    throw CudaError(std::string(what) + ": head dims up to 256 on cuda, got K=" + std::to_string(K) +
                    " V=" + std::to_string(V));
}

unsigned rowBlocks(int64_t rows) { return static_cast<unsigned>((rows + kWarps - 1) / kWarps); }

}  // namespace

// Kernels: 0 naive forward, 1 naive backward, 2 flash forward, 3 flash backward, 4 decode (T: the cache capacity C).
// Backward needs D [B, H, T]; decode its partials [B, H, ceil(C / kDecodeSplit), 2 + V].
int64_t attentionWorkspace(int kernel, Dims d) {
  if (kernel == 4) return d.B * d.H * ((d.T + kDecodeSplit - 1) / kDecodeSplit) * (2 + d.V);
  return kernel == 1 || kernel == 3 ? d.B * d.H * d.T : 0;
}

void attentionNaive(const float* q, const float* k, const float* v, float* o, float* p, Dims d) {
  checkDims("attention", d.K, d.V);
  int64_t rows = d.B * d.H * d.T;
  if (rows == 0) return;
  forwardKernel<true><<<rowBlocks(rows), kWarps * kLanes, 0, stream()>>>(q, k, v, o, p, d.B * d.H, d.H, d.T, d.K,
                                                                          d.V, 1.0f / sqrtf(static_cast<float>(d.K)));
  checkLaunch("attention (naive)");
}

void attentionFlash(const float* q, const float* k, const float* v, float* o, float* lse, Dims d) {
  checkDims("attention", d.K, d.V);
  int64_t rows = d.B * d.H * d.T;
  if (rows == 0) return;
  if (flashTiled(d)) return flashTiledForward(q, k, v, o, lse, d);
  forwardKernel<false><<<rowBlocks(rows), kWarps * kLanes, 0, stream()>>>(q, k, v, o, lse, d.B * d.H, d.H, d.T, d.K,
                                                                           d.V, 1.0f / sqrtf(static_cast<float>(d.K)));
  checkLaunch("attention (flash)");
}

template <bool Naive>
static void backward(const float* q, const float* k, const float* v, const float* o, const float* stats,
                     const float* dO, float* dq, float* dk, float* dv, float* D, Dims d) {
  checkDims("attention backward", d.K, d.V);
  int64_t rows = d.B * d.H * d.T;
  if (rows == 0) return;
  float scale = 1.0f / sqrtf(static_cast<float>(d.K));
  rowDotKernel<<<rowBlocks(rows), kWarps * kLanes, 0, stream()>>>(o, Naive ? stats : nullptr, v, dO, D, d.B * d.H,
                                                                  d.H, d.T, d.V);
  if (!Naive && flashTiled(d)) return flashTiledBackward(q, k, v, stats, dO, D, dq, dk, dv, d);
  dqKernel<Naive><<<rowBlocks(rows), kWarps * kLanes, 0, stream()>>>(q, k, v, stats, dO, D, dq, d.B * d.H, d.H, d.T,
                                                                     d.K, d.V, scale);
  dkvKernel<Naive><<<rowBlocks(rows), kWarps * kLanes, 0, stream()>>>(q, k, v, stats, dO, D, dk, dv, d.B * d.H, d.H,
                                                                      d.T, d.K, d.V, scale);
  checkLaunch("attention backward");
}

void attentionNaiveBackward(const float* q, const float* k, const float* v, const float* p, const float* dO,
                            float* dq, float* dk, float* dv, float* ws, Dims d) {
  backward<true>(q, k, v, nullptr, p, dO, dq, dk, dv, ws, d);
}

void attentionFlashBackward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                            const float* dO, float* dq, float* dk, float* dv, float* ws, Dims d) {
  backward<false>(q, k, v, o, lse, dO, dq, dk, dv, ws, d);
}

void attentionDecode(const float* q, const float* kc, const float* vc, const int32_t* lengths, float* o, float* ws,
                     int64_t B, int64_t H, int64_t C, int64_t K, int64_t V) {
  checkDims("attention decode", K, V);
  int64_t S = (C + kDecodeSplit - 1) / kDecodeSplit;
  if (B * H == 0 || S == 0) return;
  decodeKernel<<<dim3(static_cast<unsigned>(B * H), static_cast<unsigned>(S)), kDecodeWarps * kLanes, 0, stream()>>>(
      q, kc, vc, lengths, ws, H, C, K, V, S, 1.0f / sqrtf(static_cast<float>(K)));
  decodeCombineKernel<<<static_cast<unsigned>(B * H), 128, 0, stream()>>>(ws, o, V, S);
  checkLaunch("attention decode");
}

}  // namespace retnet::cuda
