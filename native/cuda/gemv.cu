// Products of a few float32 rows with a 16-bit weight, y [M, N] = x [M, K] · W [N, K]ᵀ (M ≤ 8): a decode step's
// linear layers. The cuBLAS path for them (session 4's profile of the 6.7B step at batch 1) cast x to bf16 in a
// kernel of its own, then ran a GEMM with a split-K reduce: three launches a product, the GEMM at ~1.9 TB/s on the
// 33-57 MB weights. Here one launch reads x as float32 (so x is not rounded, as on the host devices) and streams W
// once: each warp owns R weight rows, each lane reads 16 bytes (8 weights) of each row per step, kUnroll steps of
// loads in flight, the M × R dot products reduced across the warp at the end. x (M·K·4 bytes, L1/L2-resident) is read
// once per R rows: 2M/R bytes of x per byte of W from L1, so R grows with M (see launch).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <string>

#include "device.h"
#include "launch.h"

namespace retnet::cuda {

namespace {

constexpr int kGemvWarps = 8;

// RETNET_CUDA_PDL=0 launches gemv16 plainly (for measuring what the dependent launch gives).
bool pdlEnabled() {
  static const bool on = [] {
    const char* e = std::getenv("RETNET_CUDA_PDL");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

template <typename WT>
__device__ __forceinline__ void widen(uint32_t u, float& lo, float& hi);

template <>
__device__ __forceinline__ void widen<__nv_bfloat16>(uint32_t u, float& lo, float& hi) {
  lo = __uint_as_float(u << 16);
  hi = __uint_as_float(u & 0xffff0000u);
}

template <>
__device__ __forceinline__ void widen<__half>(uint32_t u, float& lo, float& hi) {
  __half2 h = *reinterpret_cast<const __half2*>(&u);
  float2 f = __half22float2(h);
  lo = f.x;
  hi = f.y;
}

// acc[m][r] += Σ_j x[m][8c + j] · w_r[j] for one 16-byte chunk c of each of the R rows.
template <typename WT, int M, int R>
__device__ __forceinline__ void chunk(const float* __restrict__ x, int64_t K, int64_t c, const uint4 (&w)[R],
                                      float (&acc)[M][R]) {
  float wf[R][8];
#pragma unroll
  for (int r = 0; r < R; r++) {
    widen<WT>(w[r].x, wf[r][0], wf[r][1]);
    widen<WT>(w[r].y, wf[r][2], wf[r][3]);
    widen<WT>(w[r].z, wf[r][4], wf[r][5]);
    widen<WT>(w[r].w, wf[r][6], wf[r][7]);
  }
#pragma unroll
  for (int m = 0; m < M; m++) {
    const float4* xm = reinterpret_cast<const float4*>(x + m * K + c * 8);
    float4 a = __ldg(xm), b = __ldg(xm + 1);
    float xs[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int j = 0; j < 8; j++) acc[m][r] = fmaf(xs[j], wf[r][j], acc[m][r]);
  }
}

template <typename WT, int M, int R, int U>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemvKernel(const float* __restrict__ x, const WT* __restrict__ w, float* __restrict__ y, int64_t N, int64_t K) {
  pdlTrigger();
  int lane = threadIdx.x & 31;
  int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5)) * R;
  if (n0 >= N) {
    pdlWait();
    return;
  }
  const uint4* rows[R];
#pragma unroll
  for (int r = 0; r < R; r++) rows[r] = reinterpret_cast<const uint4*>(w + min(n0 + r, N - 1) * K);
  float acc[M][R];
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[m][r] = 0;
  int64_t chunks = K / 8, c = lane;
  // The first U chunks of every row are loaded before pdlWait (W does not depend on the kernels before this one), so
  // with a dependent launch they overlap the previous kernel's tail; x is read after it.
  if (c + (U - 1) * 32 < chunks) {
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int r = 0; r < R; r++) wv[u][r] = __ldcs(rows[r] + c + u * 32);
    pdlWait();
#pragma unroll
    for (int u = 0; u < U; u++) chunk<WT, M, R>(x, K, c + u * 32, wv[u], acc);
    c += U * 32;
  } else {
    pdlWait();
  }
  // U chunks of every row loaded before any is used: U·R 16-byte loads in flight per lane.
  for (; c + (U - 1) * 32 < chunks; c += U * 32) {
    uint4 wv[U][R];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int r = 0; r < R; r++) wv[u][r] = __ldcs(rows[r] + c + u * 32);  // streamed: W is read once
#pragma unroll
    for (int u = 0; u < U; u++) chunk<WT, M, R>(x, K, c + u * 32, wv[u], acc);
  }
  for (; c < chunks; c += 32) {
    uint4 wv[R];
#pragma unroll
    for (int r = 0; r < R; r++) wv[r] = __ldcs(rows[r] + c);
    chunk<WT, M, R>(x, K, c, wv, acc);
  }
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float s = acc[m][r];
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0 && n0 + r < N) y[m * N + n0 + r] = s;
    }
}

template <typename WT, int M>
void launch(const float* x, const void* w, float* y, int64_t N, int64_t K) {
  // x from L1 per chunk: 2M/R bytes for each byte of W. Run 1 (session 5) at N 16384, K 4096 with R 4, U 2 for M 8:
  // 1.78 TB/s, against 3.03 at M 1 (R 2, U 4) and cuBLAS's 2.69 at M 8; so R 8 from M 5 (x:W 2:1, as at M 1).
  constexpr int R = M <= 2 ? 2 : M <= 4 ? 4 : 8;
  constexpr int U = M <= 2 ? 4 : M <= 4 ? 2 : 1;
  int64_t warps = (N + R - 1) / R;
  unsigned blocks = static_cast<unsigned>((warps + kGemvWarps - 1) / kGemvWarps);
  // A dependent launch (launch.h): the weight loads start while the kernel before finishes.
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(kGemvWarps * 32);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdlEnabled() && triggered() ? 1 : 0;
  check(cudaLaunchKernelEx(&cfg, gemvKernel<WT, M, R, U>, x, static_cast<const WT*>(w), y, N, K), "gemv16 launch");
  setTriggered(true);
}

template <typename WT>
void dispatch(int64_t M, const float* x, const void* w, float* y, int64_t N, int64_t K) {
  switch (M) {
    case 1: return launch<WT, 1>(x, w, y, N, K);
    case 2: return launch<WT, 2>(x, w, y, N, K);
    case 3: return launch<WT, 3>(x, w, y, N, K);
    case 4: return launch<WT, 4>(x, w, y, N, K);
    case 5: return launch<WT, 5>(x, w, y, N, K);
    case 6: return launch<WT, 6>(x, w, y, N, K);
    case 7: return launch<WT, 7>(x, w, y, N, K);
    case 8: return launch<WT, 8>(x, w, y, N, K);
    default: throw CudaError("gemv16: at most " + std::to_string(kGemvMaxRows) + " rows, got " + std::to_string(M));
  }
}

}  // namespace

bool gemv16Fits(int64_t M, int64_t K, const void* x, const void* w) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return M >= 1 && M <= kGemvMaxRows && K > 0 && K % 8 == 0 && aligned(x) && aligned(w);
}

void gemv16(DType wt, const float* x, const void* w, float* y, int64_t M, int64_t N, int64_t K) {
  if (N == 0) return;
  if (!gemv16Fits(M, K, x, w)) throw CudaError("gemv16: needs 1..8 rows, K a multiple of 8 and 16-byte alignment");
  if (wt == DType::BF16)
    dispatch<__nv_bfloat16>(M, x, w, y, N, K);
  else if (wt == DType::F16)
    dispatch<__half>(M, x, w, y, N, K);
  else
    throw CudaError("gemv16: the weight is bfloat16 or float16");
}

}  // namespace retnet::cuda
