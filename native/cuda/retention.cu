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

// Offset of row t of head (b, h) in a [B, T, H, W] tensor.
__device__ __forceinline__ int64_t rowAt(int64_t bh, int64_t H, int64_t T, int64_t t, int64_t W) {
  return (((bh / H) * T + t) * H + bh % H) * W;
}

// ---- recurrent step: one block per (b, h), one thread per value column y ----
__global__ void stepKernel(const float* q, const float* k, const float* v, Heads hs, float* state, float* scale,
                           float* o, int64_t H, int64_t K, int64_t V, bool normalize) {
  int64_t bh = blockIdx.x;
  float g = expf(hs.lambda[bh % H]);
  float prev = scale[bh], next = prev * g + 1.0f;
  float decay = normalize ? sqrtf(prev) * g / sqrtf(next) : g, inv = normalize ? 1.0f / sqrtf(next) : 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) scale[bh] = next;
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    float vy = v[bh * V + y] * inv, acc = 0;
    float* S = state + bh * K * V + y;
    for (int64_t x = 0; x < K; x++) {
      float s = S[x * V] * decay + k[bh * K + x] * vy;
      S[x * V] = s;
      acc += q[bh * K + x] * s;
    }
    o[bh * V + y] = acc;
  }
}

// ---- parallel forward: one block per (b·H + h, n), 128 threads; the scores A_n· in tiles of 256 ----
// U_n's columns are accumulated tile by tile (thread t owns columns t, t + 128, ...; V ≤ 512) and divided by the clamped
// absolute row sum c at the end, so no buffer grows with T.
constexpr int kParallelThreads = 128, kParallelTile = 256, kParallelCols = 4;

__global__ void parallelKernel(const float* q, const float* k, const float* v, Heads hs, float* o, float* r,
                               int64_t H, int64_t T, int64_t K, int64_t V, bool normalize) {
  __shared__ float A[kParallelTile];
  int64_t bh = blockIdx.x, n = blockIdx.y;
  float lambda = hs.lambda[bh % H];
  float sq = normalize ? sqrtf(decaySum(lambda, static_cast<float>(n + 1))) : 1.0f;
  const float* qn = q + rowAt(bh, H, T, n, K);
  float abs = 0, acc[kParallelCols] = {0, 0, 0, 0};
  for (int64_t m0 = 0; m0 <= n; m0 += kParallelTile) {
    int64_t len = min(static_cast<int64_t>(kParallelTile), n + 1 - m0);
    for (int64_t t = threadIdx.x; t < len; t += blockDim.x) {
      const float* km = k + rowAt(bh, H, T, m0 + t, K);
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
      for (int64_t t = 0; t < len; t++) s += A[t] * v[rowAt(bh, H, T, m0 + t, V) + y];
      acc[c] += s;
    }
    __syncthreads();
  }
  abs = blockSum(abs);
  float cl = normalize ? fminf(fmaxf(abs, 1.0f), 5e4f) : 1.0f;
#pragma unroll
  for (int c = 0; c < kParallelCols; c++) {
    int64_t y = threadIdx.x + c * int64_t(kParallelThreads);
    if (y < V) o[rowAt(bh, H, T, n, V) + y] = acc[c] / cl;
  }
  if (threadIdx.x == 0) r[bh * T + n] = 1.0f / (sq * cl);
}

// ---- chunk-local state: Δ[x, y] = Σ_{j<L} w_j X_j[x] Y_j[y] (rY_j scales Y_j when given), written to slot dst ----
// Transposed writes Δ as [V, K] (Δᵀ[y, x]), the layout in which the backward reads it along x.
// Forward: X = k, Y = v, w_j = γ^(C−j), into slot c + 1. Reverse: X = q, Y = r ⊙ dO, w_j = γ^(j+1), into slot c − 1.
// One block per (b·H + h, chunk, 32-row slab of x); rows of the chunk staged through shared memory.
template <bool Reverse, bool Transposed>
__global__ void localStateKernel(const float* X, const float* Y, const float* rY, Heads hs, float* slots, int64_t H,
                                 int64_t T, int64_t K, int64_t V, int64_t C, int64_t nC) {
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
    Xs[e] = x < xs ? X[rowAt(bh, H, T, c0 + j, K) + x0 + x] * w : 0.0f;
  }
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t j = e / V, y = e % V;
    Ys[e] = Y[rowAt(bh, H, T, c0 + j, V) + y] * (rY ? rY[bh * T + c0 + j] : 1.0f);
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

// In place over slots [BH, nC, K, V]: forward S_0 = 0, S_c = γ^C S_{c−1} + Δ_c; reverse from the last slot down.
template <bool Reverse>
__global__ void scanKernel(float* slots, Heads hs, int64_t H, int64_t KV, int64_t C, int64_t nC) {
  int64_t bh = blockIdx.y;
  int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= KV) return;
  float decay = dpow(hs.lambda[bh % H], static_cast<float>(C));
  float* s = slots + bh * nC * KV + e;
  float acc = 0;
  for (int64_t i = 0; i < nC; i++) {
    int64_t c = Reverse ? nC - 1 - i : i;
    acc = i == 0 ? 0.0f : acc * decay + s[c * KV];
    s[c * KV] = acc;
  }
}

// σ_c = max(1, max_y Σ_x |S_c[x, y]| / (γ Σ_{t<C} γ^t)), one block per (bh, c).
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
__global__ void chunkOutputKernel(const float* q, const float* k, const float* v, const float* slots,
                                  const float* sigma, Heads hs, float* o, float* r, int64_t H, int64_t T, int64_t K,
                                  int64_t V, int64_t C, int64_t nC) {
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
    Qs[e] = q[rowAt(bh, H, T, c0 + j, K) + x];
    Ks[e] = k[rowAt(bh, H, T, c0 + j, K) + x];
  }
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t j = e / V, y = e % V;
    Vs[e] = v[rowAt(bh, H, T, c0 + j, V) + y];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < L * L; e += blockDim.x) {
    int64_t i = e / L, j = e % L;
    float a = 0;
    if (j <= i) {
      for (int64_t x = 0; x < K; x++) a += Qs[i * K + x] * Ks[j * K + x];
      float sq = sqrtf(decaySum(lambda, static_cast<float>(i + 1)));
      a *= dpow(lambda, static_cast<float>(i - j)) / sq;
    }
    As[i * L + j] = a;
  }
  __syncthreads();
  float sig = sigma[bh * nC + c];
  // One warp per row for the absolute row sums.
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int64_t i = warp; i < L; i += warps) {
    float s = 0;
    for (int64_t j = lane; j <= i; j += 32) s += fabsf(As[i * L + j]);
    for (int w = 16; w > 0; w >>= 1) s += __shfl_xor_sync(0xffffffffu, s, w);
    if (lane == 0) {
      float sq = sqrtf(decaySum(lambda, static_cast<float>(i + 1)));
      float m = fmaxf(fmaxf(s, 1.0f), sig);
      den[i] = m;
      r[bh * T + c0 + i] = 1.0f / (sq * m);
    }
  }
  __syncthreads();
  const float* S = slots + (bh * nC + c) * K * V;
  for (int64_t e = threadIdx.x; e < L * V; e += blockDim.x) {
    int64_t i = e / V, y = e % V;
    float inner = 0, cross = 0;
    for (int64_t j = 0; j <= i; j++) inner += As[i * L + j] * Vs[j * V + y];
    for (int64_t x = 0; x < K; x++) cross += Qs[i * K + x] * S[x * V + y];
    float sq = sqrtf(decaySum(lambda, static_cast<float>(i + 1)));
    // inner is U's intra-chunk part over sqrt(S_i) already (A holds the 1/sq); the cross part γ^i q_n S_c gets it here.
    o[rowAt(bh, H, T, c0 + i, V) + y] = (inner + cross * dpow(lambda, static_cast<float>(i)) / sq) / den[i];
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

// The state after T rows for the recurrent form: S = Σ_m γ^(T−1−m) k_mᵀ v_m / sqrt(s), s = Σ_{t<T} γ^t.
__global__ void stateKernel(const float* k, const float* v, Heads hs, float* state, float* scale, int64_t H,
                            int64_t T, int64_t K, int64_t V, bool normalize) {
  int64_t bh = blockIdx.x, x = blockIdx.y;
  float lambda = hs.lambda[bh % H];
  float s = decaySum(lambda, static_cast<float>(T));
  float inv = normalize ? 1.0f / sqrtf(s) : 1.0f;
  if (x == 0 && threadIdx.x == 0) scale[bh] = s;
  if (x >= K) return;
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    float acc = 0;
    for (int64_t m = 0; m < T; m++)
      acc += dpow(lambda, static_cast<float>(T - 1 - m)) * k[rowAt(bh, H, T, m, K) + x] * v[rowAt(bh, H, T, m, V) + y];
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
                 float* slots, Dims d, int64_t C, int64_t nC) {
  smemOrThrow(bytes, "retention", reinterpret_cast<const void*>(localStateKernel<Reverse, Transposed>));
  localStateKernel<Reverse, Transposed>
      <<<grid, kThreads, bytes, stream()>>>(X, Y, rY, hs, slots, d.H, d.T, d.K, d.V, C, nC);
}

void states(const float* X, const float* Y, const float* rY, const Heads& hs, float* slots, Dims d, int64_t C,
            bool reverse, bool transposed) {
  int64_t nC = chunks(d.T, C);
  dim3 grid(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(nC), static_cast<unsigned>((d.K + 31) / 32));
  size_t bytes = (C * 32 + C * d.V) * sizeof(float);
  if (reverse && transposed) localStates<true, true>(grid, bytes, X, Y, rY, hs, slots, d, C, nC);
  else if (reverse) localStates<true, false>(grid, bytes, X, Y, rY, hs, slots, d, C, nC);
  else if (transposed) localStates<false, true>(grid, bytes, X, Y, rY, hs, slots, d, C, nC);
  else localStates<false, false>(grid, bytes, X, Y, rY, hs, slots, d, C, nC);
  checkLaunch("retention local states");
  dim3 sg(static_cast<unsigned>((d.K * d.V + kThreads - 1) / kThreads), static_cast<unsigned>(d.B * d.H));
  if (reverse) scanKernel<true><<<sg, kThreads, 0, stream()>>>(slots, hs, d.H, d.K * d.V, C, nC);
  else scanKernel<false><<<sg, kThreads, 0, stream()>>>(slots, hs, d.H, d.K * d.V, C, nC);
  checkLaunch("retention scan");
}

}  // namespace

// Kernels: 0 parallel forward, 1 chunkwise forward, 2 parallel backward, 3 chunkwise backward, 4 state.
int64_t retentionWorkspace(int kernel, Dims d, int64_t C) {
  int64_t bh = d.B * d.H;
  if (kernel == 0 || kernel == 4 || d.T == 0) return 0;
  C = clampChunk(C, d.T);
  int64_t nC = chunks(d.T, C), slots = bh * nC * d.K * d.V;
  return kernel == 1 ? slots + bh * nC : 3 * slots;
}

void retentionParallel(const float* q, const float* k, const float* v, const double* gammas, float* o, float* r,
                       float*, Dims d, bool normalize) {
  if (d.B * d.H * d.T == 0) return;
  if (d.V > kParallelThreads * kParallelCols)
    throw CudaError("retention (parallel): value dims up to 512 on cuda, got " + std::to_string(d.V));
  Heads hs = headsOf(gammas, d.H);
  dim3 grid(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(d.T));
  parallelKernel<<<grid, kParallelThreads, 0, stream()>>>(q, k, v, hs, o, r, d.H, d.T, d.K, d.V, normalize);
  checkLaunch("retention (parallel)");
}

void retentionChunkwise(const float* q, const float* k, const float* v, const double* gammas, float* o, float* r,
                        float* ws, Dims d, int64_t C) {
  if (d.B * d.H * d.T == 0) return;
  Heads hs = headsOf(gammas, d.H);
  C = clampChunk(C, d.T);
  int64_t nC = chunks(d.T, C);
  float* slots = ws;
  float* sigma = ws + d.B * d.H * nC * d.K * d.V;
  states(k, v, nullptr, hs, slots, d, C, false, false);
  sigmaKernel<<<dim3(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(nC)), kThreads, 0, stream()>>>(
      slots, hs, sigma, d.H, d.K, d.V, C, nC);
  checkLaunch("retention sigma");
  size_t bytes = (2 * C * d.K + C * d.V + C * C + C) * sizeof(float);
  smemOrThrow(bytes, "retention (chunkwise)", reinterpret_cast<const void*>(chunkOutputKernel));
  chunkOutputKernel<<<dim3(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(nC)), kThreads, bytes,
                      stream()>>>(q, k, v, slots, sigma, hs, o, r, d.H, d.T, d.K, d.V, C, nC);
  checkLaunch("retention (chunkwise)");
}

void retentionBackward(const float* q, const float* k, const float* v, const double* gammas, const float* r,
                       const float* dO, float* dq, float* dk, float* dv, float* ws, Dims d, int64_t C) {
  if (d.B * d.H * d.T == 0) return;
  Heads hs = headsOf(gammas, d.H);
  C = clampChunk(C, d.T);
  int64_t nC = chunks(d.T, C);
  // Sᵀ and Rᵀ for dq and dk (read along x: coalesced), R for dv (read along y). Measured (v1 → v2, bench/cuda/NOTES.md):
  // reading S and R along x in the [K, V] layout cost about half of the backward.
  int64_t slots = d.B * d.H * nC * d.K * d.V;
  float *ST = ws, *R = ws + slots, *RT = ws + 2 * slots;
  states(k, v, nullptr, hs, ST, d, C, false, true);
  states(q, dO, r, hs, R, d, C, true, false);
  states(q, dO, r, hs, RT, d, C, true, true);
  size_t bytes = (2 * C * d.K + 2 * C * d.V + 2 * C * C) * sizeof(float);
  smemOrThrow(bytes, "retention backward", reinterpret_cast<const void*>(chunkGradKernel));
  chunkGradKernel<<<dim3(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(nC)), kThreads, bytes, stream()>>>(
      q, k, v, r, dO, ST, R, RT, hs, dq, dk, dv, d.H, d.T, d.K, d.V, C, nC);
  checkLaunch("retention backward");
}

void retentionStep(const float* q, const float* k, const float* v, const double* gammas, float* state, float* scale,
                   float* o, int64_t B, int64_t H, int64_t K, int64_t V, bool normalize) {
  if (B * H == 0) return;
  Heads hs = headsOf(gammas, H);
  stepKernel<<<static_cast<unsigned>(B * H), static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(32, (V + 31) / 32 * 32), 1024)), 0,
               stream()>>>(q, k, v, hs, state, scale, o, H, K, V, normalize);
  checkLaunch("retention step");
}

void retentionState(const float* k, const float* v, const double* gammas, float* state, float* scale, float*, Dims d,
                    bool normalize) {
  if (d.B * d.H == 0 || d.T == 0) return;  // the zeroed outputs are the empty state (scale 0)
  Heads hs = headsOf(gammas, d.H);
  stateKernel<<<dim3(static_cast<unsigned>(d.B * d.H), static_cast<unsigned>(std::max<int64_t>(d.K, 1))), 128, 0, stream()>>>(
      k, v, hs, state, scale, d.H, d.T, d.K, d.V, normalize);
  checkLaunch("retention state");
}

}  // namespace retnet::cuda
