// Retention kernels (torchscale's parallel, chunkwise and recurrent forms; docs/retention.md). Layouts as on the CPU:
// q, k [B, T, H, K]; v, o, dO [B, T, H, V]; r [B, H, T]; state [B, H, K, V]; scale [B, H]. Every form computes
// o_n = r_n · U_n with U_n = Σ_{m≤n} γ^(n−m) (q_n·k_m) v_m and a detached row factor r_n, so one backward serves all.
//
// Chunkwise (chunk size C, nC = ceil(T / C) chunks per head, chunk c holding rows c0 = cC .. c1 − 1):
//  S_c = Σ_{m<c0} γ^(c0−m) k_mᵀ v_m   [K, V], the state entering chunk c (S_0 = 0), by one local sum per chunk and a
//        scan over chunks: S_c = γ^C S_{c−1} + Σ_{m∈c−1} γ^(c0−m) k_mᵀ v_m;
//  U_n = Σ_{m∈c, m≤n} γ^(n−m)(q_n·k_m) v_m + γ^(n−c0) q_n S_c.
// The forward's r_n = 1 / (sqrt(Σ_{t≤i} γ^t) · max(a_n, σ_c)) with a_n = max(1, Σ_{m∈c,m≤n} |A_nm|) (A the decayed,
// normalised intra-chunk scores) and σ_c = max(1, max_y Σ_x |S_c[x, y]| / (γ Σ_{t<C} γ^t)), torchscale's
// normalisers (the CPU kernel's Z is S_c / (γ Σ_{t<C} γ^t)).
// Backward with G_n = r_n dO_n and the reverse state R_c = Σ_{n≥c1} γ^(n−c1+1) q_nᵀ G_n (zero for the last chunk):
//  dq_n = Σ_{m∈c,m≤n} γ^(n−m)(G_n·v_m) k_m + γ^(n−c0) S_c G_nᵀ,
//  dk_m = Σ_{n∈c,n≥m} γ^(n−m)(G_n·v_m) q_n + γ^(c1−1−m) R_c v_mᵀ,
//  dv_m = Σ_{n∈c,n≥m} γ^(n−m)(q_n·k_m) G_n + γ^(c1−1−m) k_m R_c.
// The parallel form's backward is the chunkwise one (the same function of q, k, v, r). Decay powers are exp(e·ln γ)
// in float64 per head, as torchscale builds its masks, then rounded to float32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>
#include <vector>

#include "device.h"
#include "launch.h"

namespace retnet::cuda {

namespace {

constexpr int kMaxHeads = 256;

struct Heads {
  float lambda[kMaxHeads];  // ln γ_h
};

Heads headsOf(const double* gammas, int64_t H) {
  if (H > kMaxHeads) throw CudaError("retention: at most 256 heads on cuda, got " + std::to_string(H));
  Heads h{};
  for (int64_t i = 0; i < H; i++) h.lambda[i] = static_cast<float>(std::log(gammas[i]));
  return h;
}

__device__ __forceinline__ float dpow(float lambda, float e) { return expf(lambda * e); }

// Σ_{t<n} γ^t = (1 − γ^n) / (1 − γ), through expm1 so that the differences from 1 keep full precision (γ is within
// 2^-5 of 1, so 1 − expf(λ) would lose a third of the float's digits).
__device__ __forceinline__ float decaySum(float lambda, float n) { return expm1f(lambda * n) / expm1f(lambda); }

// Offset of row t of head (b, h) in a [B, T, H, W] tensor (T: the tensor's rows per batch row, its stride).
__device__ __forceinline__ int64_t rowAt(int64_t bh, int64_t H, int64_t T, int64_t t, int64_t W) {
  return (((bh / H) * T + t) * H + bh % H) * W;
}

// A forward launch covers one sequence per batch row: rows [start, start + T) of each row of tensors with `stride`
// rows (T = stride, start = 0 without segments; one launch per packed segment with them). Z0 is the raw state the
// sequences continue (S̃₀·sqrt(s₀) when normalising), read from the initial state S̃₀ [B, H, K, V] and s₀ [B, H].
struct SeqArgs {
  int64_t start, stride;
  const float* init;       // S̃₀ or null (empty states)
  const float* initScale;  // s₀
};

// Z0[bh, e] (e = x·V + y): the raw initial state.
__device__ __forceinline__ float rawInit(const SeqArgs& s, int64_t bh, int64_t KV, int64_t e, bool normalize) {
  return s.init[bh * KV + e] * (normalize ? sqrtf(s.initScale[bh]) : 1.0f);
}

// ---- recurrent step: one block per (b·H + h, tile of 32 value columns), the K rows split over 8 warps ----
// Session 4's kernel (one block per (b, h), one thread per column walking all K rows with one load in flight) ran
// 106 µs a layer at 6.7B batch 1 (16 blocks for 7 MB of state: ~66 GB/s) and was the largest item of the batch-317
// step. Here each thread walks K/8 rows with kStepUnroll independent loads in flight (the state is __restrict__, so
// the loads may pass the stores), the 8 partial dot products meet in shared memory, and q, k sit in shared memory.
// The decay sums are read by every block of the head and advanced afterwards by stepScaleKernel: a block cannot
// write scale[bh] while the head's other blocks may still read it.
// The state is float32 or float16 (St = __half: read as float32, stored rounded to nearest even; o from the float32
// values). A thread owns P adjacent value columns: P = 2 for a float16 state of even V (a __half2 a row), so a warp
// reads 128 contiguous bytes of each state row as with float32; with one float16 column a thread a warp read 64 and
// the step streamed 1.03 TB/s of state at 6.7B batch 626 against 1.8 with float32 (stop 29, run 7).
constexpr int kStepCols = 32, kStepGroups = 8, kStepUnroll = 16;

__device__ __forceinline__ void stateLoad(const float* p, float (&s)[1]) { s[0] = *p; }
__device__ __forceinline__ void stateLoad(const __half* p, float (&s)[1]) { s[0] = __half2float(*p); }
__device__ __forceinline__ void stateLoad(const __half* p, float (&s)[2]) {
  float2 f = __half22float2(*reinterpret_cast<const __half2*>(p));
  s[0] = f.x;
  s[1] = f.y;
}
__device__ __forceinline__ void stateStore(float* p, const float (&s)[1]) { *p = s[0]; }
__device__ __forceinline__ void stateStore(__half* p, const float (&s)[1]) { *p = __float2half_rn(s[0]); }
__device__ __forceinline__ void stateStore(__half* p, const float (&s)[2]) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(s[0], s[1]);
}

// One row x of the P columns: s = s·decay + k_x·v, stored, and acc += q_x·s.
template <int P>
__device__ __forceinline__ void stepRow(float (&s)[P], float decay, float kx, float qx, const float (&vy)[P],
                                        float (&acc)[P]) {
#pragma unroll
  for (int c = 0; c < P; c++) {
    s[c] = s[c] * decay + kx * vy[c];
    acc[c] += qx * s[c];
  }
}

template <typename St, int P>
__global__ void __launch_bounds__(kStepCols* kStepGroups)
    stepKernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, Heads hs,
               St* __restrict__ state, const float* __restrict__ scale, float* __restrict__ o, int64_t H, int64_t K,
               int64_t V, bool normalize) {
  extern __shared__ float qk[];  // q then k of this head: 2K floats
  __shared__ float part[kStepGroups][kStepCols * P];
  int64_t bh = blockIdx.x;
  int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kStepCols + tx;
  for (int64_t i = tid; i < K; i += kStepCols * kStepGroups) {
    qk[i] = q[bh * K + i];
    qk[K + i] = k[bh * K + i];
  }
  float g = expf(hs.lambda[bh % H]);
  float prev = scale[bh], next = prev * g + 1.0f;
  float decay = normalize ? sqrtf(prev) * g / sqrtf(next) : g, inv = normalize ? 1.0f / sqrtf(next) : 1.0f;
  __syncthreads();
  int64_t y = (static_cast<int64_t>(blockIdx.y) * kStepCols + tx) * P;  // V % P == 0 (see retentionStep)
  float acc[P] = {};
  if (y < V) {
    float vy[P];
#pragma unroll
    for (int c = 0; c < P; c++) vy[c] = v[bh * V + y + c] * inv;
    St* S = state + bh * K * V + y;
    int64_t x = ty;
    for (; x + (kStepUnroll - 1) * kStepGroups < K; x += kStepUnroll * kStepGroups) {
      float s[kStepUnroll][P];
#pragma unroll
      for (int u = 0; u < kStepUnroll; u++) stateLoad(S + (x + u * kStepGroups) * V, s[u]);
#pragma unroll
      for (int u = 0; u < kStepUnroll; u++) {
        int64_t xu = x + u * kStepGroups;
        stepRow<P>(s[u], decay, qk[K + xu], qk[xu], vy, acc);
        stateStore(S + xu * V, s[u]);
      }
    }
    for (; x < K; x += kStepGroups) {
      float s[P];
      stateLoad(S + x * V, s);
      stepRow<P>(s, decay, qk[K + x], qk[x], vy, acc);
      stateStore(S + x * V, s);
    }
  }
#pragma unroll
  for (int c = 0; c < P; c++) part[ty][tx * P + c] = acc[c];
  __syncthreads();
  if (ty == 0 && y < V) {
#pragma unroll
    for (int c = 0; c < P; c++) {
      float t = 0;
#pragma unroll
      for (int i = 0; i < kStepGroups; i++) t += part[i][tx * P + c];
      o[bh * V + y + c] = t;
    }
  }
}

__global__ void stepScaleKernel(Heads hs, float* scale, int64_t BH, int64_t H) {
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < BH) scale[i] = scale[i] * expf(hs.lambda[i % H]) + 1.0f;
}

// ---- parallel forward: one block per (b·H + h, n), 128 threads; the scores A_n· in tiles of 256 ----
// U_n's columns are accumulated tile by tile (thread t owns columns t, t + 128, ...; V ≤ 512) and divided by the clamped
// absolute row sum c at the end, so no buffer grows with T.
constexpr int kParallelThreads = 128, kParallelTile = 256, kParallelCols = 4;

// With an initial state the decay sums continue s₀ (Ŝ(n) = s₀γ^(n+1) + S(n)) and U_n gains γ^(n+1) q_n Z0.
__global__ void parallelKernel(const float* q, const float* k, const float* v, Heads hs, float* o, float* r,
                               int64_t H, int64_t T, int64_t K, int64_t V, bool normalize, SeqArgs sa) {
  __shared__ float A[kParallelTile];
  int64_t bh = blockIdx.x, n = blockIdx.y, P = sa.stride;
  float lambda = hs.lambda[bh % H];
  float s0 = sa.init ? sa.initScale[bh] : 0.0f;
  float sq = normalize ? sqrtf(s0 * dpow(lambda, static_cast<float>(n + 1)) + decaySum(lambda, static_cast<float>(n + 1)))
                       : 1.0f;
  const float* qn = q + rowAt(bh, H, P, sa.start + n, K);
  float abs = 0, acc[kParallelCols] = {0, 0, 0, 0};
  for (int64_t m0 = 0; m0 <= n; m0 += kParallelTile) {
    int64_t len = min(static_cast<int64_t>(kParallelTile), n + 1 - m0);
    for (int64_t t = threadIdx.x; t < len; t += blockDim.x) {
      const float* km = k + rowAt(bh, H, P, sa.start + m0 + t, K);
      float dot = 0;
      for (int64_t x = 0; x < K; x++) dot += qn[x] * km[x];
      float a = dot * dpow(lambda, static_cast<float>(n - m0 - t)) / sq;
      A[t] = a;
      abs += fabsf(a);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kParallelCols; c++) {
      int64_t y = threadIdx.x + c * int64_t(kParallelThreads);
      if (y >= V) continue;
      float s = 0;
      for (int64_t t = 0; t < len; t++) s += A[t] * v[rowAt(bh, H, P, sa.start + m0 + t, V) + y];
      acc[c] += s;
    }
    __syncthreads();
  }
  abs = blockSum(abs);
  float cl = normalize ? fminf(fmaxf(abs, 1.0f), 5e4f) : 1.0f;
  float qd = dpow(lambda, static_cast<float>(n + 1)) / sq;
#pragma unroll
  for (int c = 0; c < kParallelCols; c++) {
    int64_t y = threadIdx.x + c * int64_t(kParallelThreads);
    if (y >= V) continue;
    float cross = 0;
    if (sa.init)
      for (int64_t x = 0; x < K; x++) cross += qn[x] * rawInit(sa, bh, K * V, x * V + y, normalize);
    o[rowAt(bh, H, P, sa.start + n, V) + y] = (acc[c] + qd * cross) / cl;
  }
  if (threadIdx.x == 0) r[bh * P + sa.start + n] = 1.0f / (sq * cl);
}

// ---- chunk-local state: Δ[x, y] = Σ_{j<L} w_j X_j[x] Y_j[y] (rY_j scales Y_j when given), written to slot dst ----
// Transposed writes Δ as [V, K] (Δᵀ[y, x]), the layout in which the backward reads it along x.
// Forward: X = k, Y = v, w_j = γ^(C−j), into slot c + 1. Reverse: X = q, Y = r ⊙ dO, w_j = γ^(j+1), into slot c − 1.
// One block per (b·H + h, chunk, 32-row slab of x); rows of the chunk staged through shared memory.
template <bool Reverse, bool Transposed>
__global__ void localStateKernel(const float* X, const float* Y, const float* rY, Heads hs, float* slots, int64_t H,
                                 int64_t T, int64_t K, int64_t V, int64_t C, int64_t nC, int64_t start, int64_t P) {
  extern __shared__ float sm[];
  int64_t bh = blockIdx.x, c = blockIdx.y, x0 = blockIdx.z * 32;
  int64_t dst = Reverse ? c - 1 : c + 1;
  if (dst < 0 || dst >= nC) return;
  int64_t c0 = c * C, L = min(C, T - c0), xs = K - x0 < 32 ? K - x0 : 32;
  float lambda = hs.lambda[bh % H];
  float* Xs = sm;           // [C, 32]
  float* Ys = sm + C * 32;  // [C, V]
  for (int64_t e = threadIdx.x; e < L * 32; e += blockDim.x) {
    int64_t j = e / 32, x = e % 32;
    float w = dpow(lambda, Reverse ? static_cast<float>(j + 1) : static_cast<float>(C - j));
    Xs[e] = x < xs ? X[rowAt(bh, H, P, start + c0 + j, K) + x0 + x] * w : 0.0f;
  }
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t j = e / V, y = e % V;
    Ys[e] = Y[rowAt(bh, H, P, start + c0 + j, V) + y] * (rY ? rY[bh * P + start + c0 + j] : 1.0f);
  }
  __syncthreads();
  float* out = slots + (bh * nC + dst) * K * V;
  for (int64_t e = threadIdx.x; e < xs * V; e += blockDim.x) {
    int64_t x = e / V, y = e % V;
    float acc = 0;
    for (int64_t j = 0; j < L; j++) acc += Xs[j * 32 + x] * Ys[j * V + y];
    if (Transposed) out[y * K + x0 + x] = acc;
    else out[(x0 + x) * V + y] = acc;
  }
}

// In place over slots [BH, nC, K, V]: forward S_0 = γ Z0 (0 without an initial state: sa.init null; given only in
// the [K, V] layout), S_c = γ^C S_{c−1} + Δ_c; reverse from the last slot down, starting from 0.
template <bool Reverse>
__global__ void scanKernel(float* slots, Heads hs, int64_t H, int64_t KV, int64_t C, int64_t nC, SeqArgs sa,
                           bool normalize) {
  int64_t bh = blockIdx.y;
  int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= KV) return;
  float lambda = hs.lambda[bh % H], decay = dpow(lambda, static_cast<float>(C));
  float* s = slots + bh * nC * KV + e;
  float first = sa.init ? expf(lambda) * rawInit(sa, bh, KV, e, normalize) : 0.0f;
  float acc = 0;
  for (int64_t i = 0; i < nC; i++) {
    int64_t c = Reverse ? nC - 1 - i : i;
    acc = i == 0 ? first : acc * decay + s[c * KV];
    s[c * KV] = acc;
  }
}

// σ_c = max(1, max_y Σ_x |S_c[x, y]| / (γ Σ_{t<C} γ^t)), one block per (bh, c). C is the chunk size asked for, also
// where a sequence shorter than it runs as one chunk (its S_0 is the initial state's).
__global__ void sigmaKernel(const float* slots, Heads hs, float* sigma, int64_t H, int64_t K, int64_t V, int64_t C,
                            int64_t nC) {
  int64_t bh = blockIdx.x, c = blockIdx.y;
  float lambda = hs.lambda[bh % H], g = expf(lambda);
  float SC = decaySum(lambda, static_cast<float>(C));
  const float* s = slots + (bh * nC + c) * K * V;
  float mx = 0;
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    float col = 0;
    for (int64_t x = 0; x < K; x++) col += fabsf(s[x * V + y]);
    mx = fmaxf(mx, col);
  }
  mx = blockMax(mx) / (g * SC);
  if (threadIdx.x == 0) sigma[bh * nC + c] = fmaxf(1.0f, mx);
}

// ---- chunk outputs (forward): one block per (bh, chunk) ----
// normalize false (the fla variant): sq = den = 1 and r = 1, so o_i = Σ_{j≤i} γ^(i−j) (q_i·k_j) v_j + γ^i q_i S_c, the
// parallel form's function (sigma is not read).
__global__ void chunkOutputKernel(const float* q, const float* k, const float* v, const float* slots,
                                  const float* sigma, Heads hs, float* o, float* r, int64_t H, int64_t T, int64_t K,
                                  int64_t V, int64_t C, int64_t nC, int64_t start, int64_t P, bool normalize) {
  extern __shared__ float sm[];
  int64_t bh = blockIdx.x, c = blockIdx.y, c0 = c * C, L = min(C, T - c0);
  float lambda = hs.lambda[bh % H];
  float* Qs = sm;           // [C, K]
  float* Ks = Qs + C * K;   // [C, K]
  float* Vs = Ks + C * K;   // [C, V]
  float* As = Vs + C * V;   // [C, C]
  float* den = As + C * C;  // [C]: m_i = max(a_i, σ_c)
  for (int64_t e = threadIdx.x; e < L * K; e += blockDim.x) {
    int64_t j = e / K, x = e % K;
    Qs[e] = q[rowAt(bh, H, P, start + c0 + j, K) + x];
    Ks[e] = k[rowAt(bh, H, P, start + c0 + j, K) + x];
  }
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t j = e / V, y = e % V;
    Vs[e] = v[rowAt(bh, H, P, start + c0 + j, V) + y];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < L * L; e += blockDim.x) {
    int64_t i = e / L, j = e % L;
    float a = 0;
    if (j <= i) {
      for (int64_t x = 0; x < K; x++) a += Qs[i * K + x] * Ks[j * K + x];
      float sq = normalize ? sqrtf(decaySum(lambda, static_cast<float>(i + 1))) : 1.0f;
      a *= dpow(lambda, static_cast<float>(i - j)) / sq;
    }
    As[i * L + j] = a;
  }
  __syncthreads();
  float sig = normalize ? sigma[bh * nC + c] : 1.0f;
  // One warp per row for the absolute row sums.
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int64_t i = warp; i < L && !normalize; i += warps)
    if (lane == 0) {
      den[i] = 1.0f;
      r[bh * P + start + c0 + i] = 1.0f;
    }
  for (int64_t i = warp; i < L && normalize; i += warps) {
    float s = 0;
    for (int64_t j = lane; j <= i; j += 32) s += fabsf(As[i * L + j]);
    for (int w = 16; w > 0; w >>= 1) s += __shfl_xor_sync(0xffffffffu, s, w);
    if (lane == 0) {
      float sq = sqrtf(decaySum(lambda, static_cast<float>(i + 1)));
      float m = fmaxf(fmaxf(s, 1.0f), sig);
      den[i] = m;
      r[bh * P + start + c0 + i] = 1.0f / (sq * m);
    }
  }
  __syncthreads();
  const float* S = slots + (bh * nC + c) * K * V;
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t i = e / V, y = e % V;
    float inner = 0, cross = 0;
    for (int64_t j = 0; j <= i; j++) inner += As[i * L + j] * Vs[j * V + y];
    for (int64_t x = 0; x < K; x++) cross += Qs[i * K + x] * S[x * V + y];
    float sq = normalize ? sqrtf(decaySum(lambda, static_cast<float>(i + 1))) : 1.0f;
    // inner is U's intra-chunk part over sqrt(S_i) already (A holds the 1/sq); the cross part γ^i q_n S_c gets it here.
    o[rowAt(bh, H, P, start + c0 + i, V) + y] = (inner + cross * dpow(lambda, static_cast<float>(i)) / sq) / den[i];
  }
}

// ---- chunk gradients (backward): one block per (bh, chunk) ----
__global__ void chunkGradKernel(const float* q, const float* k, const float* v, const float* r, const float* dO,
                                const float* ST, const float* R, const float* RT, Heads hs, float* dq, float* dk, float* dv, int64_t H,
                                int64_t T, int64_t K, int64_t V, int64_t C, int64_t nC) {
  extern __shared__ float sm[];
  int64_t bh = blockIdx.x, c = blockIdx.y, c0 = c * C, L = min(C, T - c0);
  float lambda = hs.lambda[bh % H];
  float* Qs = sm;          // [C, K]
  float* Ks = Qs + C * K;  // [C, K]
  float* Vs = Ks + C * K;  // [C, V]
  float* Gs = Vs + C * V;  // [C, V]: r ⊙ dO
  float* Ms = Gs + C * V;  // [C, C]: γ^(i−j) (G_i·v_j), j ≤ i
  float* Ns = Ms + C * C;  // [C, C]: γ^(i−j) (q_i·k_j), j ≤ i
  for (int64_t e = threadIdx.x; e < L * K; e += blockDim.x) {
    int64_t j = e / K, x = e % K;
    Qs[e] = q[rowAt(bh, H, T, c0 + j, K) + x];
    Ks[e] = k[rowAt(bh, H, T, c0 + j, K) + x];
  }
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t j = e / V, y = e % V;
    Vs[e] = v[rowAt(bh, H, T, c0 + j, V) + y];
    Gs[e] = dO[rowAt(bh, H, T, c0 + j, V) + y] * r[bh * T + c0 + j];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < L * L; e += blockDim.x) {
    int64_t i = e / L, j = e % L;
    float m = 0, n = 0;
    if (j <= i) {
      for (int64_t y = 0; y < V; y++) m += Gs[i * V + y] * Vs[j * V + y];
      for (int64_t x = 0; x < K; x++) n += Qs[i * K + x] * Ks[j * K + x];
      float d = dpow(lambda, static_cast<float>(i - j));
      m *= d;
      n *= d;
    }
    Ms[e] = m;
    Ns[e] = n;
  }
  __syncthreads();
  const float* STc = ST + (bh * nC + c) * K * V;  // [V, K]
  const float* Rc = R + (bh * nC + c) * K * V;    // [K, V]
  const float* RTc = RT + (bh * nC + c) * K * V;  // [V, K]
  for (int64_t e = threadIdx.x; e < L * K; e += blockDim.x) {
    int64_t i = e / K, x = e % K;
    float aq = 0, ak = 0, cq = 0, ck = 0;
    for (int64_t j = 0; j <= i; j++) aq += Ms[i * L + j] * Ks[j * K + x];
    for (int64_t n = i; n < L; n++) ak += Ms[n * L + i] * Qs[n * K + x];
    for (int64_t y = 0; y < V; y++) {
      cq += STc[y * K + x] * Gs[i * V + y];
      ck += RTc[y * K + x] * Vs[i * V + y];
    }
    dq[rowAt(bh, H, T, c0 + i, K) + x] = aq + dpow(lambda, static_cast<float>(i)) * cq;
    dk[rowAt(bh, H, T, c0 + i, K) + x] = ak + dpow(lambda, static_cast<float>(C - 1 - i)) * ck;
  }
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t i = e / V, y = e % V;
    float av = 0, cv = 0;
    for (int64_t n = i; n < L; n++) av += Ns[n * L + i] * Gs[n * V + y];
    for (int64_t x = 0; x < K; x++) cv += Ks[i * K + x] * Rc[x * V + y];
    dv[rowAt(bh, H, T, c0 + i, V) + y] = av + dpow(lambda, static_cast<float>(C - 1 - i)) * cv;
  }
}

// The state after T rows for the recurrent form: Z = γ^T Z0 + Σ_m γ^(T−1−m) k_mᵀ v_m, s = s₀γ^T + Σ_{t<T} γ^t,
// written as S̃ = Z / sqrt(s) when normalising (Z where s = 0: the empty state). Writes every element.
__global__ void stateKernel(const float* k, const float* v, Heads hs, float* state, float* scale, int64_t H,
                            int64_t T, int64_t K, int64_t V, bool normalize, SeqArgs sa) {
  int64_t bh = blockIdx.x, x = blockIdx.y, P = sa.stride;
  float lambda = hs.lambda[bh % H];
  float gT = dpow(lambda, static_cast<float>(T));
  float s = (sa.init ? sa.initScale[bh] * gT : 0.0f) + decaySum(lambda, static_cast<float>(T));
  float inv = normalize && s > 0 ? 1.0f / sqrtf(s) : 1.0f;
  if (x == 0 && threadIdx.x == 0) scale[bh] = s;
  if (x >= K) return;
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    float acc = sa.init ? gT * rawInit(sa, bh, K * V, x * V + y, normalize) : 0.0f;
    for (int64_t m = 0; m < T; m++)
      acc += dpow(lambda, static_cast<float>(T - 1 - m)) * k[rowAt(bh, H, P, sa.start + m, K) + x] *
             v[rowAt(bh, H, P, sa.start + m, V) + y];
    state[(bh * K + x) * V + y] = acc * inv;
  }
}

int64_t chunks(int64_t T, int64_t C) { return (T + C - 1) / C; }

// A chunk longer than the sequence computes what a chunk of exactly T rows does (one chunk, no carried state), and
// shared memory is sized by the chunk, so C is clamped to T.
int64_t clampChunk(int64_t C, int64_t T) { return std::max<int64_t>(1, std::min(C, T)); }

size_t smemOrThrow(size_t bytes, const char* kernel, const void* fn) {
  if (bytes > 227 * 1024)
    throw CudaError(std::string(kernel) + ": needs " + std::to_string(bytes) +
                    " bytes of shared memory (more than the 227 KiB a block may have); use a smaller chunk size");
  check(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), kernel);
  return bytes;
}

template <bool Reverse, bool Transposed>
void localStates(dim3 grid, size_t bytes, const float* X, const float* Y, const float* rY, const Heads& hs,
                 float* slots, Dims d, int64_t C, int64_t nC, const SeqArgs& sa) {
  smemOrThrow(bytes, "retention", reinterpret_cast<const void*>(localStateKernel<Reverse, Transposed>));
  localStateKernel<Reverse, Transposed>
      <<<grid, kThreads, bytes, stream()>>>(X, Y, rY, hs, slots, d.H, d.T, d.K, d.V, C, nC, sa.start, sa.stride);
}

// The states entering each chunk (forward: S_c from k, v and the initial state; reverse: R_c from q, r ⊙ dO).
void states(const float* X, const float* Y, const float* rY, const Heads& hs, float* slots, Dims d, int64_t C,
            bool reverse, bool transposed, const SeqArgs& sa, bool normalize) {
  int64_t nC = chunks(d.T, C);
  dim3 grid(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(nC), static_cast<unsigned>((d.K + 31) / 32));
  size_t bytes = (C * 32 + C * d.V) * sizeof(float);
  if (reverse && transposed) localStates<true, true>(grid, bytes, X, Y, rY, hs, slots, d, C, nC, sa);
  else if (reverse) localStates<true, false>(grid, bytes, X, Y, rY, hs, slots, d, C, nC, sa);
  else if (transposed) localStates<false, true>(grid, bytes, X, Y, rY, hs, slots, d, C, nC, sa);
  else localStates<false, false>(grid, bytes, X, Y, rY, hs, slots, d, C, nC, sa);
  checkLaunch("retention local states");
  dim3 sg(static_cast<unsigned>((d.K * d.V + kThreads - 1) / kThreads), static_cast<unsigned>(d.B * d.H));
  if (reverse) scanKernel<true><<<sg, kThreads, 0, stream()>>>(slots, hs, d.H, d.K * d.V, C, nC, sa, normalize);
  else scanKernel<false><<<sg, kThreads, 0, stream()>>>(slots, hs, d.H, d.K * d.V, C, nC, sa, normalize);
  checkLaunch("retention scan");
}

}  // namespace


namespace {

// ---- chunkwise retention on bf16 tensor cores (opt-in: RetentionRun/Backward `tensorCores`) ----
// The same computation as the float32 kernels above for K = V = 128, C = 64 and T a multiple of 64 (other shapes
// take the float32 kernels): the chunk products on WMMA 16×16×16 tiles with bf16 operands (rounded from the float32
// inputs when they are staged in shared memory) and float32 accumulation; the states carried across chunks in
// float32 (TF32 products), stored for the chunk kernels as bf16. Relative error about 3e-3 (bf16 operands), so it is
// opt-in. Kernels: tcScanKernel (the states entering each chunk, and σ), tcOutputKernel (o and r per chunk) and
// tcGradKernel (dq, dk, dv per chunk). Row strides of the staged tiles are padded by 8 elements, so that the tile
// loads do not all hit the same shared-memory banks.
namespace tc {

using namespace nvcuda;
using bf16 = __nv_bfloat16;
constexpr int C = 64, D = 128, LD = D + 8, LDC = C + 8, LDF = C + 4, kWarps = 8;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// A [C, Cols] float32 tile of one chunk in registers, for staging as bf16 in shared memory: thread t holds rows
// t / Q + n · (kTcThreads / Q) (n < N), columns 4 (t % Q).. (one float4 each), so a warp reads whole rows. All of a
// tile's loads are issued before any is used. Measured (tc4, bench/cuda/NOTES.md): staging with one float4 load in
// flight per thread (a loop that converts each load before issuing the next) made the gradient kernel wait on ~50
// dependent global round trips per chunk, 1.42 ms at B 2 H 16 T 8192.
constexpr int kTcThreads = 256;
template <int Cols>
struct Tile {
  static constexpr int Q = Cols / 4, N = C * Q / kTcThreads, RowStep = kTcThreads / Q;
  float4 f[N];
  __device__ __forceinline__ static int row(int n) { return static_cast<int>(threadIdx.x) / Q + n * RowStep; }
  __device__ __forceinline__ void load(const float* src, int64_t ld) {
    int x = (threadIdx.x % Q) * 4;
#pragma unroll
    for (int n = 0; n < N; n++) f[n] = *reinterpret_cast<const float4*>(src + row(n) * ld + x);
  }
  // dst[row, ·] = bf16(tile[row, ·] · scale(n, row)), 8-byte stores (dst row stride LDst).
  template <int LDst, typename Scale>
  __device__ __forceinline__ void store(bf16* dst, Scale scale) const {
    int x = (threadIdx.x % Q) * 4;
#pragma unroll
    for (int n = 0; n < N; n++) {
      float s = scale(n, row(n));
      __nv_bfloat162 lo = __floats2bfloat162_rn(f[n].x * s, f[n].y * s);
      __nv_bfloat162 hi = __floats2bfloat162_rn(f[n].z * s, f[n].w * s);
      uint2 u{*reinterpret_cast<unsigned*>(&lo), *reinterpret_cast<unsigned*>(&hi)};
      *reinterpret_cast<uint2*>(dst + row(n) * LDst + x) = u;
    }
  }
};
using RowTile = Tile<D>;
struct Unscaled {
  __device__ float operator()(int, int) const { return 1.0f; }
};

// acc += A[16 rows at a, inner n] · B[inner n, 16 cols at b] with the layouts the fragment types say.
template <typename FA, typename FB>
__device__ __forceinline__ void mmaRun(Acc& acc, const bf16* a, int lda, int aStep, const bf16* b, int ldb, int bStep,
                                       int n) {
  FA fa;
  FB fb;
  for (int kk = 0; kk < n; kk += 16) {
    wmma::load_matrix_sync(fa, a + kk * aStep, lda);
    wmma::load_matrix_sync(fb, b + kk * bStep, ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
}

// The states entering the chunks, one pass: S_c (forward: X = k, Y = v, w_j = γ^(C−j); S_0 = 0, S_{c+1} = γ^C S_c +
// Σ_j w_j X_jᵀ Y_j) or R_c (Reverse: X = q, Y = r ⊙ dO, w_j = γ^(j+1); R_{nC−1} = 0, R_{c−1} = γ^C R_c + ...), each
// stored as bf16 [D, D] in slot c for the chunk kernels; with sigma, the forward's max_y Σ_x |S_c[x, y]| (float32,
// before rounding) by atomicMax into sigma[bh, c] (zeroed before). Grid (D / BV, BH), 8 warps: block = (head, BV
// value columns), walking the chunks in order with its [D, BV] slice of the state in TF32 WMMA accumulators (warp w:
// rows 16w..), the next kStages − 1 chunks' raw float32 rows in flight through cp.async while one is used (no
// conversion pass: the TF32 products read the staged floats). Measured before (bench/cuda/NOTES.md): tc2's walk,
// which waited on each chunk's loads, 0.83 ms a pass at B 2 H 16 T 8192; tc3's local states of all chunks at once
// then a float32 scan over [BH, nC, D, D] in global memory, ~0.55 ms a pass.
constexpr int LDX = D + 4, kScanThreads = 256;
template <int BV, int Stages>
struct ScanSmem {
  static constexpr int LDY = BV + 4;  // rows of 16-byte multiples; 32-byte aligned fragment starts (8-row steps)
  static constexpr int stage = C * LDX + C * LDY + C;  // X rows, Y rows, the rows' weights (floats)
  static constexpr size_t bytes = (Stages * stage + D * LDY + kScanThreads) * sizeof(float);
};

__device__ __forceinline__ void cpAsync16(void* dst, const void* src) {
  unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void cpCommit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cpWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// A walk split into parts (WalkPlan): part p walks indices [p·len, min(nC, (p + 1)·len)) from a zero state and stores
// its states as bf16 in the slots (part 0 the true ones, with σ; a later part its local ones, to which tcJoinKernel
// adds what entered the part); every part but the last leaves its local state after its last chunk in carry[p, bh].
struct WalkSplit {
  int64_t parts, len;
  float* carry;  // [parts − 1, BH, D, D]
};

template <bool Reverse, int BV, int kStages>
__device__ __forceinline__ void scanWalk(const float* X, const float* Y, const float* rY, Heads hs, bf16* slots,
                                         unsigned* sigma, int64_t H, int64_t T, int64_t nC, int64_t bh,
                                         const WalkSplit& split, int64_t part, unsigned char* smem) {
  using Sm = ScanSmem<BV, kStages>;
  constexpr int LDY = Sm::LDY, NT = BV / 16;
  using FragXT = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
  using FragY = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
  using Acc8 = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
  float* ring = reinterpret_cast<float*>(smem);  // kStages × (Xs [C, LDX], Ys [C, LDY], w [C])
  float* St = ring + kStages * Sm::stage;         // [D, LDY]: the state entering the chunk
  float* sums = St + D * LDY;                     // [kScanThreads / BV, BV]: column sums of |S| over row groups
  int64_t y0 = static_cast<int64_t>(blockIdx.x) * BV, P = H * D, BH = gridDim.y;
  int64_t i0 = part * split.len, i1 = i0 + split.len < nC ? i0 + split.len : nC;
  float* carry = part + 1 < split.parts ? split.carry + (part * BH + bh) * D * D : nullptr;
  if (part > 0) sigma = nullptr;
  float lambda = hs.lambda[bh % H], decay = dpow(lambda, static_cast<float>(C));
  int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const float* Xh = X + rowAt(bh, H, T, 0, D);
  const float* Yh = Y + rowAt(bh, H, T, 0, D) + y0;
  // Chunk i of the walk (c = i, or nC − 1 − i in reverse) into its ring stage.
  auto issue = [&](int64_t i) {
    if (i < i1) {
      int64_t c0 = (Reverse ? nC - 1 - i : i) * C;
      float* Xs = ring + ((i - i0) % kStages) * Sm::stage;
      float* Ys = Xs + C * LDX;
      for (int e = tid; e < C * (D / 4); e += kScanThreads) {
        int j = e / (D / 4), x = (e % (D / 4)) * 4;
        cpAsync16(Xs + j * LDX + x, Xh + (c0 + j) * P + x);
      }
      for (int e = tid; e < C * (BV / 4); e += kScanThreads) {
        int j = e / (BV / 4), y = (e % (BV / 4)) * 4;
        cpAsync16(Ys + j * LDY + y, Yh + (c0 + j) * P + y);
      }
      if (Reverse && tid < C / 4) cpAsync16(Ys + C * LDY + tid * 4, rY + bh * T + c0 + tid * 4);
    }
    cpCommit();  // an empty group past the end keeps the wait counts uniform
  };
  for (int i = 0; i < kStages - 1; i++) issue(i0 + i);
  Acc8 acc[NT];
#pragma unroll
  for (int t = 0; t < NT; t++) wmma::fill_fragment(acc[t], 0.0f);
  constexpr int groups = kScanThreads / BV, rowsPer = D / groups;
  int col = tid % BV, grp = tid / BV;
  for (int64_t i = i0; i < i1; i++) {
    int64_t c = Reverse ? nC - 1 - i : i;
#pragma unroll
    for (int t = 0; t < NT; t++) wmma::store_matrix_sync(St + warp * 16 * LDY + t * 16, acc[t], LDY, wmma::mem_row_major);
    cpWait<kStages - 2>();
    __syncthreads();  // chunk i staged, St complete, the stage of chunk i − 1 free
    issue(i + kStages - 1);
    float* Xs = ring + ((i - i0) % kStages) * Sm::stage;
    float* Ys = Xs + C * LDX;
    // The rows' weights on Y (8 or 16 floats a thread), then S_c out as bf16 and its column sums.
    for (int e = tid; e < C * BV; e += kScanThreads) {
      int j = e / BV;
      float w = dpow(lambda, static_cast<float>(Reverse ? j + 1 : C - j)) * (Reverse ? Ys[C * LDY + j] : 1.0f);
      Ys[j * LDY + e % BV] *= w;
    }
    bf16* out = slots + (bh * nC + c) * D * D + y0 + col;
    float abs = 0;
#pragma unroll 8
    for (int x = grp * rowsPer; x < (grp + 1) * rowsPer; x++) {
      float s = St[x * LDY + col];
      out[x * D] = __float2bfloat16(s);
      abs += fabsf(s);
    }
    if (sigma) sums[grp * BV + col] = abs;
    __syncthreads();  // Y weighted, St read, sums complete
    if (sigma && warp == 0) {
      float m = 0;
      for (int y = tid; y < BV; y += 32) {
        float s = 0;
#pragma unroll
        for (int g = 0; g < groups; g++) s += sums[g * BV + y];
        m = fmaxf(m, s);
      }
      for (int w = 16; w > 0; w >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, w));
      if (tid == 0) atomicMax(sigma + bh * nC + c, __float_as_uint(m));  // non-negative floats order as integers
    }
    if (i + 1 == i1 && !carry) break;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
      for (int e = 0; e < acc[t].num_elements; e++) acc[t].x[e] *= decay;
    // S += Xᵀ Y: A = Xᵀ (column-major view of Xs, rows 16w.. of the state), B = Y.
    for (int kk = 0; kk < C; kk += 8) {
      FragXT a;
      wmma::load_matrix_sync(a, Xs + kk * LDX + warp * 16, LDX);
#pragma unroll
      for (int e = 0; e < a.num_elements; e++) a.x[e] = wmma::__float_to_tf32(a.x[e]);
#pragma unroll
      for (int t = 0; t < NT; t++) {
        FragY b;
        wmma::load_matrix_sync(b, Ys + kk * LDY + t * 16, LDY);
#pragma unroll
        for (int e = 0; e < b.num_elements; e++) b.x[e] = wmma::__float_to_tf32(b.x[e]);
        wmma::mma_sync(acc[t], a, b, acc[t]);
      }
    }
  }
  if (carry)  // the part's local state after its last chunk
#pragma unroll
    for (int t = 0; t < NT; t++)
      wmma::store_matrix_sync(carry + warp * 16 * D + y0 + t * 16, acc[t], D, wmma::mem_row_major);
  cpWait<0>();
}

// Grid (D / BV, BH, parts).
template <int BV, int Stages>
__global__ void __launch_bounds__(kScanThreads) tcScanKernel(const float* X, const float* Y, Heads hs, bf16* slots,
                                                             unsigned* sigma, int64_t H, int64_t T, int64_t nC,
                                                             WalkSplit split) {
  extern __shared__ __align__(128) unsigned char smem[];
  scanWalk<false, BV, Stages>(X, Y, nullptr, hs, slots, sigma, H, T, nC, blockIdx.y, split, blockIdx.z, smem);
}

// The backward's two walks in one launch (blockIdx.z / parts: 0 the states S_c over k, v; 1 the reverse states R_c
// over q, r ⊙ dO; blockIdx.z % parts the part), two stages of prefetch so that two blocks fit on a multiprocessor
// and each hides the other's waits.
template <int BV>
__global__ void __launch_bounds__(kScanThreads, 2) tcScanPairKernel(const float* q, const float* k, const float* v,
                                                                    const float* r, const float* dO, Heads hs,
                                                                    bf16* S, bf16* R, int64_t H, int64_t T,
                                                                    int64_t nC, WalkSplit splitS, WalkSplit splitR) {
  extern __shared__ __align__(128) unsigned char smem[];
  int64_t walk = blockIdx.z / splitS.parts, part = blockIdx.z % splitS.parts;
  if (walk == 0) scanWalk<false, BV, 2>(k, v, nullptr, hs, S, nullptr, H, T, nC, blockIdx.y, splitS, part, smem);
  else scanWalk<true, BV, 2>(q, dO, r, hs, R, nullptr, H, T, nC, blockIdx.y, splitR, part, smem);
}

// The true states of a split walk's later parts, in place: S(i) = L(i) + Σ_{q < p} γ^(C (i − (q + 1) len)) carry_q for
// walk index i in part p (state(i + 1) = γ^C state(i) + U(i), and carry_q is part q's contribution to the state
// entering part q + 1), L(i) the bf16 local state in slot c (c = i, or nC − 1 − i in reverse); with sigma, σ_c from
// the float32 sums as scanWalk computes it. Grid (nC − len, BH, walks), 256 threads: thread t owns columns
// 8 (t % 16) ..+ 8 of rows t / 16 + 16 n. The local states are rounded to bf16 before the join adds to them (relative
// error at B 1 H 16 T 16384 2.41e-3 → 2.53e-3 for o, 2.63e-3 for dv); measured (stop 29, run 1): keeping them in
// float32 (twice the bytes written and read) took that shape to 2.65 ms fwd+bwd, no faster than unsplit (2.64).
struct JoinWalk {
  bf16* slots;
  unsigned* sigma;
  WalkSplit split;
  bool reverse;
};
struct JoinWalks {
  JoinWalk w[2];
};
constexpr int kJoinThreads = 256, kJoinQ = D / 8, kJoinRows = kJoinThreads / kJoinQ;
__global__ void __launch_bounds__(kJoinThreads) tcJoinKernel(JoinWalks walks, Heads hs, int64_t H, int64_t nC) {
  __shared__ float colSum[kJoinRows][D];
  __shared__ float warpMax[kJoinThreads / 32];
  const JoinWalk& jw = walks.w[blockIdx.z];
  int64_t len = jw.split.len, bh = blockIdx.y, BH = gridDim.y, i = len + blockIdx.x, p = i / len;
  int64_t c = jw.reverse ? nC - 1 - i : i;
  float lambda = hs.lambda[bh % H];
  float f[3];  // at most 4 parts: carries 0 .. p − 1
  for (int64_t qq = 0; qq < p; qq++) f[qq] = dpow(lambda, static_cast<float>(C * (i - (qq + 1) * len)));
  int x0 = threadIdx.x % kJoinQ * 8, row0 = threadIdx.x / kJoinQ;
  bf16* S = jw.slots + (bh * nC + c) * D * D;
  float abs[8] = {};
  for (int row = row0; row < D; row += kJoinRows) {
    uint4 raw = *reinterpret_cast<const uint4*>(S + row * D + x0);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
    float s[8];
#pragma unroll
    for (int e = 0; e < 4; e++) {
      float2 t = __bfloat1622float2(h[e]);
      s[2 * e] = t.x;
      s[2 * e + 1] = t.y;
    }
    for (int64_t qq = 0; qq < p; qq++) {
      const float* cq = jw.split.carry + (qq * BH + bh) * D * D + row * D + x0;
      float4 a = *reinterpret_cast<const float4*>(cq), b = *reinterpret_cast<const float4*>(cq + 4);
      s[0] += f[qq] * a.x, s[1] += f[qq] * a.y, s[2] += f[qq] * a.z, s[3] += f[qq] * a.w;
      s[4] += f[qq] * b.x, s[5] += f[qq] * b.y, s[6] += f[qq] * b.z, s[7] += f[qq] * b.w;
    }
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int e = 0; e < 4; e++) o[e] = __floats2bfloat162_rn(s[2 * e], s[2 * e + 1]);
    *reinterpret_cast<uint4*>(S + row * D + x0) = raw;
#pragma unroll
    for (int e = 0; e < 8; e++) abs[e] += fabsf(s[e]);
  }
  if (!jw.sigma) return;
#pragma unroll
  for (int e = 0; e < 8; e++) colSum[row0][x0 + e] = abs[e];
  __syncthreads();
  float m = 0;
  if (threadIdx.x < D) {
    for (int g = 0; g < kJoinRows; g++) m += colSum[g][threadIdx.x];
  }
  for (int w = 16; w > 0; w >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, w));
  if (threadIdx.x % 32 == 0) warpMax[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kJoinThreads / 32; w++) m = fmaxf(m, warpMax[w]);
    jw.sigma[bh * nC + c] = __float_as_uint(m);
  }
}

// Copies a bf16 [D, D] state into dst [D, LD] through cp.async (16-byte copies, all threads of the block); the
// caller commits and waits.
__device__ __forceinline__ void stateAsync(bf16* dst, const bf16* src) {
  constexpr int Q = D / 8;
  for (int e = threadIdx.x; e < D * Q; e += kTcThreads) {
    int i = e / Q, x = (e % Q) * 8;
    cpAsync16(dst + i * LD + x, src + i * D + x);
  }
}

// o and r of chunk c (grid (BH, nC), 8 warps): A = Q Kᵀ with γ^(i−j)/sq_i below the diagonal, den_i = max(Σ_j |A_ij|,
// 1, σ_c), o = (A / den) V + (γ^i / (sq_i den_i)) Q S_c. normalize false: sq = den = 1, r = 1.
__global__ void __launch_bounds__(256) tcOutputKernel(const float* q, const float* k, const float* v,
                                                      const bf16* slots, const unsigned* sigmas, Heads hs,
                                                      float* o, float* r, int64_t H, int64_t T, int64_t nC,
                                                      bool normalize) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // [C, LD], later Q scaled by γ^i / (sq_i den_i)
  bf16* Ks = Qs + C * LD;
  bf16* Vs = Ks + C * LD;
  bf16* Ss = Vs + C * LD;                     // [D, LD]
  bf16* Ab = Ss + D * LD;                     // [C, LDC]
  float* Af = reinterpret_cast<float*>(Ab + C * LDC);  // [C, LDF]
  float* den = Af + C * LDF;                           // [C]
  int64_t bh = blockIdx.x, c = blockIdx.y, c0 = c * C, P = H * D;
  float lambda = hs.lambda[bh % H];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float* qb = q + rowAt(bh, H, T, c0, D);
  stateAsync(Ss, slots + (bh * nC + c) * D * D);  // needed only for o: arrives behind A
  cpCommit();
  RowTile tq, tk, tv;  // q stays in registers for its second staging (scaled by den)
  tq.load(qb, P);
  tk.load(k + rowAt(bh, H, T, c0, D), P);
  tv.load(v + rowAt(bh, H, T, c0, D), P);
  tq.store<LD>(Qs, Unscaled{});
  tk.store<LD>(Ks, Unscaled{});
  tv.store<LD>(Vs, Unscaled{});
  __syncthreads();
  {  // A: warp w computes rows 16(w/2).., columns 32(w%2)..
    int i0 = (warp >> 1) * 16;
    for (int t = 0; t < 2; t++) {
      int j0 = (warp & 1) * 32 + t * 16;
      Acc a;
      wmma::fill_fragment(a, 0.0f);
      mmaRun<FragA, FragBT>(a, Qs + i0 * LD, LD, 1, Ks + j0 * LD, LD, 1, D);
      wmma::store_matrix_sync(Af + i0 * LDF + j0, a, LDF, wmma::mem_row_major);
    }
  }
  __syncthreads();
  // σ_c = max(1, max_y Σ_x |S_c[x, y]| / (γ Σ_{t<C} γ^t)) from the state pass's column-sum maximum.
  float sigma = normalize ? fmaxf(1.0f, __uint_as_float(sigmas[bh * nC + c]) /
                                            (expf(lambda) * decaySum(lambda, static_cast<float>(C))))
                          : 1.0f;
  for (int i = warp; i < C; i += kWarps) {
    float sq = normalize ? sqrtf(decaySum(lambda, static_cast<float>(i + 1))) : 1.0f;
    float a0 = lane <= i ? Af[i * LDF + lane] * dpow(lambda, static_cast<float>(i - lane)) / sq : 0.0f;
    float a1 = lane + 32 <= i ? Af[i * LDF + lane + 32] * dpow(lambda, static_cast<float>(i - lane - 32)) / sq : 0.0f;
    float s = fabsf(a0) + fabsf(a1);
    for (int w = 16; w > 0; w >>= 1) s += __shfl_xor_sync(0xffffffffu, s, w);
    float m = normalize ? fmaxf(fmaxf(s, 1.0f), sigma) : 1.0f;
    Ab[i * LDC + lane] = __float2bfloat16(a0 / m);
    Ab[i * LDC + lane + 32] = __float2bfloat16(a1 / m);
    if (lane == 0) {
      den[i] = dpow(lambda, static_cast<float>(i)) / (sq * m);
      r[bh * T + c0 + i] = normalize ? 1.0f / (sq * m) : 1.0f;
    }
  }
  __syncthreads();
  tq.store<LD>(Qs, [&](int, int i) { return den[i]; });
  cpWait<0>();
  __syncthreads();
  {  // o: warp w computes rows 16(w/2).., columns 64(w%2)..
    int i0 = (warp >> 1) * 16;
    for (int t = 0; t < 4; t++) {
      int y0 = (warp & 1) * 64 + t * 16;
      Acc a;
      wmma::fill_fragment(a, 0.0f);
      mmaRun<FragA, FragB>(a, Ab + i0 * LDC, LDC, 1, Vs + y0, LD, LD, C);
      mmaRun<FragA, FragB>(a, Qs + i0 * LD, LD, 1, Ss + y0, LD, LD, D);
      wmma::store_matrix_sync(o + rowAt(bh, H, T, c0 + i0, D) + y0, a, static_cast<unsigned>(P), wmma::mem_row_major);
    }
  }
}

// dq, dk, dv of chunk c (grid (BH, nC), 8 warps), with G = r ⊙ dO, M = (G Vᵀ) ∘ Γ, N = (Q Kᵀ) ∘ Γ (Γ_ij = γ^(i−j),
// j ≤ i): dq = M K + γ^i G Sᵀ, dk = Mᵀ Q + γ^(C−1−i) V Rᵀ, dv = Nᵀ G + γ^(C−1−i) K R.
__global__ void __launch_bounds__(256) tcGradKernel(const float* q, const float* k, const float* v, const float* r,
                                                    const float* dO, const bf16* Sslots, const bf16* Rslots,
                                                    Heads hs, float* dq, float* dk, float* dv, int64_t H, int64_t T,
                                                    int64_t nC) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // [C, LD] each
  bf16* Ks = Qs + C * LD;
  bf16* Vs = Ks + C * LD;
  bf16* Gs = Vs + C * LD;
  bf16* Vd = Gs + C * LD;  // γ^(C−1−i) V
  bf16* Ss = Vd + C * LD;  // [D, LD] each
  bf16* Rs = Ss + D * LD;
  bf16* Mb = Rs + D * LD;  // [C, LDC] each
  bf16* Nb = Mb + C * LDC;
  float* Mf = reinterpret_cast<float*>(Nb + C * LDC);  // [C, LDF] each; later γ^i G and γ^(C−1−i) K as [C, LD] bf16
  float* Nf = Mf + C * LDF;
  bf16* Gd = reinterpret_cast<bf16*>(Mf);
  bf16* Kd = reinterpret_cast<bf16*>(Nf);
  int64_t bh = blockIdx.x, c = blockIdx.y, c0 = c * C, P = H * D;
  float lambda = hs.lambda[bh % H];
  int warp = threadIdx.x >> 5;
  const float* rc = r + bh * T + c0;
  const float *qb = q + rowAt(bh, H, T, c0, D), *kb = k + rowAt(bh, H, T, c0, D);
  const float *vb = v + rowAt(bh, H, T, c0, D), *gb = dO + rowAt(bh, H, T, c0, D);
  auto tail = [&](int, int i) { return dpow(lambda, static_cast<float>(C - 1 - i)); };
  stateAsync(Ss, Sslots + (bh * nC + c) * D * D);  // needed only for the last products: arrive behind M and N
  stateAsync(Rs, Rslots + (bh * nC + c) * D * D);
  cpCommit();
  // k and g stay in registers for their second staging (γ^(C−1−i) K, γ^i G) into M's and N's floats.
  RowTile tk, tg;
  float rg[RowTile::N];  // r of each row this thread holds
  {
    RowTile tq, tv;
    tq.load(qb, P);
    tk.load(kb, P);
    tv.load(vb, P);
    tg.load(gb, P);
#pragma unroll
    for (int n = 0; n < RowTile::N; n++) rg[n] = rc[RowTile::row(n)];
    tq.store<LD>(Qs, Unscaled{});
    tk.store<LD>(Ks, Unscaled{});
    tv.store<LD>(Vs, Unscaled{});
    tv.store<LD>(Vd, tail);
    tg.store<LD>(Gs, [&](int n, int) { return rg[n]; });
  }
  __syncthreads();
  {  // M (warps 0-3) and N (warps 4-7): warp w computes rows 16(w%4).., all 64 columns.
    bool isN = warp >= 4;
    int i0 = (warp & 3) * 16;
    const bf16* A = isN ? Qs : Gs;
    const bf16* B = isN ? Ks : Vs;
    float* F = isN ? Nf : Mf;
    for (int t = 0; t < 4; t++) {
      Acc a;
      wmma::fill_fragment(a, 0.0f);
      mmaRun<FragA, FragBT>(a, A + i0 * LD, LD, 1, B + t * 16 * LD, LD, 1, D);
      wmma::store_matrix_sync(F + i0 * LDF + t * 16, a, LDF, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < C * C; e += blockDim.x) {
    int i = e / C, j = e % C;
    float d = j <= i ? dpow(lambda, static_cast<float>(i - j)) : 0.0f;
    Mb[i * LDC + j] = __float2bfloat16(Mf[i * LDF + j] * d);
    Nb[i * LDC + j] = __float2bfloat16(Nf[i * LDF + j] * d);
  }
  __syncthreads();
  tg.store<LD>(Gd, [&](int n, int i) { return rg[n] * dpow(lambda, static_cast<float>(i)); });
  tk.store<LD>(Kd, tail);
  cpWait<0>();
  __syncthreads();
  // Each output [C, D]: warp w computes rows 16(w/2).., columns 64(w%2)..
  int i0 = (warp >> 1) * 16;
  for (int t = 0; t < 4; t++) {
    int x0 = (warp & 1) * 64 + t * 16;
    Acc a;
    wmma::fill_fragment(a, 0.0f);
    mmaRun<FragA, FragB>(a, Mb + i0 * LDC, LDC, 1, Ks + x0, LD, LD, C);         // M K
    mmaRun<FragA, FragBT>(a, Gd + i0 * LD, LD, 1, Ss + x0 * LD, LD, 1, D);      // γ^i G Sᵀ
    wmma::store_matrix_sync(dq + rowAt(bh, H, T, c0 + i0, D) + x0, a, static_cast<unsigned>(P), wmma::mem_row_major);
    wmma::fill_fragment(a, 0.0f);
    mmaRun<FragAT, FragB>(a, Mb + i0, LDC, LDC, Qs + x0, LD, LD, C);           // Mᵀ Q
    mmaRun<FragA, FragBT>(a, Vd + i0 * LD, LD, 1, Rs + x0 * LD, LD, 1, D);      // γ^(C−1−i) V Rᵀ
    wmma::store_matrix_sync(dk + rowAt(bh, H, T, c0 + i0, D) + x0, a, static_cast<unsigned>(P), wmma::mem_row_major);
    wmma::fill_fragment(a, 0.0f);
    mmaRun<FragAT, FragB>(a, Nb + i0, LDC, LDC, Gs + x0, LD, LD, C);           // Nᵀ G
    mmaRun<FragA, FragB>(a, Kd + i0 * LD, LD, 1, Rs + x0, LD, LD, D);           // γ^(C−1−i) K R
    wmma::store_matrix_sync(dv + rowAt(bh, H, T, c0 + i0, D) + x0, a, static_cast<unsigned>(P), wmma::mem_row_major);
  }
}

constexpr size_t kOutputSmem = (3 * C * LD + D * LD + C * LDC) * sizeof(bf16) + (C * LDF + C) * sizeof(float);
constexpr size_t kGradSmem = (5 * C * LD + 2 * D * LD + 2 * C * LDC) * sizeof(bf16) + 2 * C * LDF * sizeof(float);
static_assert(C * LDF * sizeof(float) >= C * LD * sizeof(bf16), "γ^i G and γ^(C−1−i) K reuse M's and N's floats");

}  // namespace tc

// The tensor-core kernels take this call: K = V = 128, chunk 64, whole chunks, no initial state or segments.
bool tensorCoreShape(Dims d, int64_t C) {
  return d.K == tc::D && d.V == tc::D && C == tc::C && d.T > 0 && d.T % tc::C == 0;
}

// How a tensor-core state walk is spread over blocks: BV value columns a block and the walk in `parts` pieces of
// `len` chunks (tc::WalkSplit). The forward's walk runs three stages of prefetch (one block a multiprocessor) and
// wants ≥ 128 blocks; the backward's two walks run two stages (two blocks a multiprocessor) and want ≥ 256. BV = 32
// where the blocks reach that, splitting the walk (up to 4 parts) where they do not, then BV = 16. Measured (stop 29,
// run 2, bench/cuda/NOTES.md): at B 1 H 16 T 16384 unsplit (blocks of 16 columns walking 256 chunks) 2.56 ms
// fwd+bwd, split in two (blocks of 32 columns walking 128, as at B 2 H 16 T 8192) 2.32 and 2.33 in the passes
// around it; the forward's walk 0.65 → 0.41 ms, each join ~0.08 ms.
struct WalkPlan {
  int bv;
  int64_t parts, len;
};
WalkPlan walkPlan(Dims d, int64_t walks) {
  int64_t nC = d.T / tc::C, target = 128 * walks, blocks32 = walks * d.B * d.H * (tc::D / 32);
  int64_t parts = std::min<int64_t>({4, nC, std::max<int64_t>(1, (target + blocks32 - 1) / blocks32)});
  int64_t len = (nC + parts - 1) / parts;
  parts = (nC + len - 1) / len;
  return {blocks32 * parts >= target ? 32 : 16, parts, len};
}

// Floats of one split walk's scratch (the carries; none unsplit).
int64_t splitFloats(Dims d, const WalkPlan& p) { return (p.parts - 1) * d.B * d.H * tc::D * tc::D; }

int64_t tcForwardFloats(Dims d) {
  int64_t BH = d.B * d.H, nC = d.T / tc::C;
  return BH * nC * tc::D * tc::D / 2 + splitFloats(d, walkPlan(d, 1)) + BH * nC;  // bf16 states, split, σ
}

int64_t tcBackwardFloats(Dims d) {
  int64_t BH = d.B * d.H, nC = d.T / tc::C;
  return BH * nC * tc::D * tc::D + 2 * splitFloats(d, walkPlan(d, 2));  // S and R as bf16, each walk's split
}

// The states entering each chunk as bf16 [BH, nC, D, D] (one pass, tc::tcScanKernel, then tc::tcJoinKernel where
// the walk is split); sigma (forward, normalising) gets each chunk's column-sum maximum. Measured (stop 27, run 1):
// 16 columns with two stages (256 blocks at B 2 H 16, two a SM) took the forward 0.81 → 0.82 ms: not better than
// 32 columns with three.
template <int BV>
void tcScanLaunch(const float* X, const float* Y, const Heads& hs, tc::bf16* slots, unsigned* sigma, Dims d,
                  const tc::WalkSplit& split) {
  int64_t nC = d.T / tc::C;
  auto fn = tc::tcScanKernel<BV, 3>;
  constexpr size_t bytes = tc::ScanSmem<BV, 3>::bytes;
  smemOrThrow(bytes, "retention states (tensor cores)", reinterpret_cast<const void*>(fn));
  check(cudaFuncSetAttribute(reinterpret_cast<const void*>(fn), cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared),
        "retention states (tensor cores)");
  dim3 grid(tc::D / BV, static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(split.parts));
  fn<<<grid, tc::kScanThreads, bytes, stream()>>>(X, Y, hs, slots, sigma, d.H, d.T, nC, split);
  checkLaunch("retention states (tensor cores)");
}

// Joins the split walks (count 1 or 2, all with the same plan).
void tcJoin(const tc::JoinWalks& walks, int count, const Heads& hs, Dims d) {
  const tc::WalkSplit& s = walks.w[0].split;
  if (s.parts == 1) return;
  int64_t nC = d.T / tc::C;
  dim3 grid(static_cast<unsigned>(nC - s.len), static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(count));
  tc::tcJoinKernel<<<grid, 256, 0, stream()>>>(walks, hs, d.H, nC);
  checkLaunch("retention states join (tensor cores)");
}

// The forward's states S_c as bf16 in slots, σ_c in sigma (normalising); split: the walk's scratch.
void tcStates(const float* k, const float* v, const Heads& hs, tc::bf16* slots, unsigned* sigma, float* split, Dims d) {
  if (sigma) check(cudaMemsetAsync(sigma, 0, d.B * d.H * (d.T / tc::C) * sizeof(unsigned), stream()), "retention");
  WalkPlan p = walkPlan(d, 1);
  tc::WalkSplit s{p.parts, p.len, split};
  if (p.bv == 32) tcScanLaunch<32>(k, v, hs, slots, sigma, d, s);
  else tcScanLaunch<16>(k, v, hs, slots, sigma, d, s);
  tcJoin(tc::JoinWalks{{{slots, sigma, s, false}, {}}}, 1, hs, d);
}

// The backward's states S_c and R_c, both walks in one launch (tc::tcScanPairKernel), then the joins in one.
template <int BV>
void tcPairLaunch(const float* q, const float* k, const float* v, const float* r, const float* dO, const Heads& hs,
                  tc::bf16* S, tc::bf16* R, Dims d, const tc::WalkSplit& sS, const tc::WalkSplit& sR) {
  int64_t nC = d.T / tc::C;
  auto fn = tc::tcScanPairKernel<BV>;
  constexpr size_t bytes = tc::ScanSmem<BV, 2>::bytes;
  smemOrThrow(bytes, "retention backward states (tensor cores)", reinterpret_cast<const void*>(fn));
  check(cudaFuncSetAttribute(reinterpret_cast<const void*>(fn), cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared),
        "retention backward states (tensor cores)");
  dim3 grid(tc::D / BV, static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(2 * sS.parts));
  fn<<<grid, tc::kScanThreads, bytes, stream()>>>(q, k, v, r, dO, hs, S, R, d.H, d.T, nC, sS, sR);
  checkLaunch("retention backward states (tensor cores)");
}

void tcBackwardStates(const float* q, const float* k, const float* v, const float* r, const float* dO,
                      const Heads& hs, tc::bf16* S, tc::bf16* R, float* split, Dims d) {
  WalkPlan p = walkPlan(d, 2);
  tc::WalkSplit sS{p.parts, p.len, split}, sR{p.parts, p.len, split + splitFloats(d, p)};
  if (p.bv == 32) tcPairLaunch<32>(q, k, v, r, dO, hs, S, R, d, sS, sR);
  else tcPairLaunch<16>(q, k, v, r, dO, hs, S, R, d, sS, sR);
  tcJoin(tc::JoinWalks{{{S, nullptr, sS, false}, {R, nullptr, sR, true}}}, 2, hs, d);
}

// Chunkwise forward on tensor cores; ws (tcForwardFloats): the bf16 states, the walk's split scratch, then σ.
void tcForward(const float* q, const float* k, const float* v, const Heads& hs, float* o, float* r, float* ws, Dims d,
               bool normalize) {
  int64_t nC = d.T / tc::C, BH = d.B * d.H;
  auto* slots = reinterpret_cast<tc::bf16*>(ws);
  float* split = ws + BH * nC * tc::D * tc::D / 2;
  auto* sigma = reinterpret_cast<unsigned*>(split + splitFloats(d, walkPlan(d, 1)));
  tcStates(k, v, hs, slots, normalize ? sigma : nullptr, split, d);
  smemOrThrow(tc::kOutputSmem, "retention (tensor cores)", reinterpret_cast<const void*>(tc::tcOutputKernel));
  tc::tcOutputKernel<<<dim3(static_cast<unsigned>(BH), static_cast<unsigned>(nC)), 256, tc::kOutputSmem, stream()>>>(
      q, k, v, slots, sigma, hs, o, r, d.H, d.T, nC, normalize);
  checkLaunch("retention (chunkwise, tensor cores)");
}

// The states after each sequence of the launch (every element of finalState and finalScale).
void finalStates(const float* k, const float* v, const Heads& hs, Dims d, bool normalize, const SeqArgs& sa,
                 float* finalState, float* finalScale) {
  if (d.B * d.H == 0) return;
  stateKernel<<<dim3(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(std::max<int64_t>(d.K, 1))), 128, 0,
                stream()>>>(k, v, hs, finalState, finalScale, d.H, d.T, d.K, d.V, normalize, sa);
  checkLaunch("retention state");
}

// One launch's sequences (see SeqArgs), both forms: o, r and, when asked for, the states after them.
void forwardSequences(bool chunkwise, const float* q, const float* k, const float* v, const Heads& hs, float* o,
                      float* r, float* ws, Dims d, int64_t C, bool normalize, const SeqArgs& sa, float* finalState,
                      float* finalScale) {
  int64_t BH = d.B * d.H;
  if (BH > 0 && d.T > 0 && !chunkwise) {
    if (d.V > kParallelThreads * kParallelCols)
      throw CudaError("retention (parallel): value dims up to 512 on cuda, got " + std::to_string(d.V));
    dim3 grid(static_cast<unsigned>(BH), static_cast<unsigned>(d.T));
    parallelKernel<<<grid, kParallelThreads, 0, stream()>>>(q, k, v, hs, o, r, d.H, d.T, d.K, d.V, normalize, sa);
    checkLaunch("retention (parallel)");
  } else if (BH > 0 && d.T > 0) {
    int64_t Cn = C;  // the normalisers' chunk (sigma) even where the sequence is shorter
    C = clampChunk(C, d.T);
    int64_t nC = chunks(d.T, C);
    float* slots = ws;
    float* sigma = ws + BH * nC * d.K * d.V;
    states(k, v, nullptr, hs, slots, d, C, false, false, sa, normalize);
    if (normalize) {
      sigmaKernel<<<dim3(static_cast<unsigned>(BH), static_cast<unsigned>(nC)), kThreads, 0, stream()>>>(
          slots, hs, sigma, d.H, d.K, d.V, Cn, nC);
      checkLaunch("retention sigma");
    }
    size_t bytes = (2 * C * d.K + C * d.V + C * C + C) * sizeof(float);
    smemOrThrow(bytes, "retention (chunkwise)", reinterpret_cast<const void*>(chunkOutputKernel));
    chunkOutputKernel<<<dim3(static_cast<unsigned>(BH), static_cast<unsigned>(nC)), kThreads, bytes, stream()>>>(
        q, k, v, slots, sigma, hs, o, r, d.H, d.T, d.K, d.V, C, nC, sa.start, sa.stride, normalize);
    checkLaunch("retention (chunkwise)");
  }
  if (finalState) finalStates(k, v, hs, d, normalize, sa, finalState, finalScale);
}

}  // namespace

// Kernels: 0 parallel forward, 1 chunkwise forward, 2 parallel backward, 3 chunkwise backward, 4 state. tensorCores:
// the call may take the tensor-core kernels (retentionForward decides on more than the shape), so the scratch is
// the larger of the two paths'.
int64_t retentionWorkspace(int kernel, Dims d, int64_t C, bool tensorCores) {
  int64_t bh = d.B * d.H;
  if (kernel == 0 || kernel == 4 || d.T == 0) return 0;
  bool tc = tensorCores && tensorCoreShape(d, C) && bh > 0;
  C = clampChunk(C, d.T);
  int64_t nC = chunks(d.T, C), slots = bh * nC * d.K * d.V;
  int64_t floats = kernel == 1 ? slots + bh * nC : 3 * slots;
  return tc ? std::max(floats, kernel == 1 ? tcForwardFloats(d) : tcBackwardFloats(d)) : floats;
}

void retentionForward(bool chunkwise, const float* q, const float* k, const float* v, const double* gammas, float* o,
                      float* r, float* ws, Dims d, int64_t C, const RetentionRun& run) {
  Heads hs = headsOf(gammas, d.H);
  if (run.tensorCores && chunkwise && !run.initState && run.segments.empty() && tensorCoreShape(d, C) &&
      d.B * d.H > 0) {
    tcForward(q, k, v, hs, o, r, ws, d, run.normalize);
    if (run.finalState)
      finalStates(k, v, hs, d, run.normalize, SeqArgs{0, d.T, nullptr, nullptr}, run.finalState, run.finalScale);
    return;
  }
  if (run.segments.empty()) {
    SeqArgs sa{0, d.T, run.initState, run.initScale};
    forwardSequences(chunkwise, q, k, v, hs, o, r, ws, d, C, run.normalize, sa, run.finalState, run.finalScale);
    return;
  }
  // Packed segments of one batch row: one launch per segment, reusing the workspace (the stream orders them).
  int64_t start = 0, KV = d.K * d.V;
  for (size_t i = 0; i < run.segments.size(); i++) {
    int64_t n = run.segments[i], nh = static_cast<int64_t>(i) * d.H;
    SeqArgs sa{start, d.T, run.initState ? run.initState + nh * KV : nullptr,
               run.initScale ? run.initScale + nh : nullptr};
    forwardSequences(chunkwise, q, k, v, hs, o, r, ws, Dims{1, d.H, n, d.K, d.V}, C, run.normalize, sa,
                     run.finalState ? run.finalState + nh * KV : nullptr,
                     run.finalScale ? run.finalScale + nh : nullptr);
    start += n;
  }
}

void retentionBackward(const float* q, const float* k, const float* v, const double* gammas, const float* r,
                       const float* dO, float* dq, float* dk, float* dv, float* ws, Dims d, int64_t C,
                       bool tensorCores) {
  if (d.B * d.H * d.T == 0) return;
  Heads hs = headsOf(gammas, d.H);
  if (tensorCores && tensorCoreShape(d, C)) {
    int64_t nC = d.T / tc::C, BH = d.B * d.H;
    auto* S = reinterpret_cast<tc::bf16*>(ws);  // ws (tcBackwardFloats): S, R as bf16, then the walks' split scratch
    tc::bf16* R = S + BH * nC * tc::D * tc::D;
    tcBackwardStates(q, k, v, r, dO, hs, S, R, ws + BH * nC * tc::D * tc::D, d);
    smemOrThrow(tc::kGradSmem, "retention backward (tensor cores)", reinterpret_cast<const void*>(tc::tcGradKernel));
    tc::tcGradKernel<<<dim3(static_cast<unsigned>(BH), static_cast<unsigned>(nC)), 256, tc::kGradSmem, stream()>>>(
        q, k, v, r, dO, S, R, hs, dq, dk, dv, d.H, d.T, nC);
    checkLaunch("retention backward (tensor cores)");
    return;
  }
  C = clampChunk(C, d.T);
  int64_t nC = chunks(d.T, C);
  // Sᵀ and Rᵀ for dq and dk (read along x: coalesced), R for dv (read along y). Measured (v1 → v2, bench/cuda/NOTES.md):
  // reading S and R along x in the [K, V] layout cost about half of the backward.
  int64_t slots = d.B * d.H * nC * d.K * d.V;
  float *ST = ws, *R = ws + slots, *RT = ws + 2 * slots;
  SeqArgs whole{0, d.T, nullptr, nullptr};
  states(k, v, nullptr, hs, ST, d, C, false, true, whole, false);
  states(q, dO, r, hs, R, d, C, true, false, whole, false);
  states(q, dO, r, hs, RT, d, C, true, true, whole, false);
  size_t bytes = (2 * C * d.K + 2 * C * d.V + 2 * C * C) * sizeof(float);
  smemOrThrow(bytes, "retention backward", reinterpret_cast<const void*>(chunkGradKernel));
  chunkGradKernel<<<dim3(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(nC)), kThreads, bytes, stream()>>>(
      q, k, v, r, dO, ST, R, RT, hs, dq, dk, dv, d.H, d.T, d.K, d.V, C, nC);
  checkLaunch("retention backward");
}

void retentionStep(const float* q, const float* k, const float* v, const double* gammas, void* state, bool state16,
                   float* scale, float* o, int64_t B, int64_t H, int64_t K, int64_t V, bool normalize) {
  if (B * H == 0) return;
  Heads hs = headsOf(gammas, H);
  size_t smem = static_cast<size_t>(2 * K) * sizeof(float);
  if (smem > 48 * 1024) throw CudaError("retention step: head dimension K = " + std::to_string(K) + " over 6144");
  if (V > 0) {
    int P = state16 && V % 2 == 0 ? 2 : 1;  // columns a thread: __half2 rows need an even V (4-byte aligned rows)
    int64_t tile = kStepCols * P;
    dim3 grid(static_cast<unsigned>(B * H), static_cast<unsigned>((V + tile - 1) / tile));
    dim3 block(kStepCols, kStepGroups);
    auto* half = static_cast<__half*>(state);
    if (state16 && P == 2)
      stepKernel<__half, 2><<<grid, block, smem, stream()>>>(q, k, v, hs, half, scale, o, H, K, V, normalize);
    else if (state16)
      stepKernel<__half, 1><<<grid, block, smem, stream()>>>(q, k, v, hs, half, scale, o, H, K, V, normalize);
    else
      stepKernel<float, 1><<<grid, block, smem, stream()>>>(q, k, v, hs, static_cast<float*>(state), scale, o, H, K,
                                                            V, normalize);
    checkLaunch("retention step");
  }
  stepScaleKernel<<<static_cast<unsigned>((B * H + 255) / 256), 256, 0, stream()>>>(hs, scale, B * H, H);
  checkLaunch("retention step scale");
}

}  // namespace retnet::cuda
