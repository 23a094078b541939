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
#include <type_traits>

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

// gemvMma (bf16 W, 5-8 rows of x, K a multiple of 32): the same product on tensor cores, for the rows where the
// FFMA kernel above is bound by its instructions (at M 8: 8 FMAs and an L1 read of x per weight). Block = MT
// (kMmaTiles) tiles of 16 weight rows (the A tiles of mma.m16n8k16), its 8 warps splitting K (warp w takes the 32-wide
// K blocks w, w + 8, ..., U = kMmaSteps of them in flight) and adding their partial products in shared memory in a
// fixed order; x [M ≤ 8, K] is the B tile, as bf16 hi + lo parts (x − hi rounded again: 2^-17 relative, as split16),
// so two products per K step, and each split serves the MT tiles. Each lane loads 16 bytes (8 consecutive k) of its
// two rows of each tile: as the sum runs over k, A and B take k in the same permuted order (lane t of a quad holds k
// 8t..8t+7 of the block; logical k 2t, 2t+1, 2t+8, 2t+9 of a 16-step are physical 8t..8t+3, then 8t+4..8t+7 for the
// second step), so W is read in whole 16-byte pieces.
// MT × U measured at the 6.7B step, batch 8, 8k (stop 28 run 3, ncu-free medians of 20, one call): 1×4 9.18 ms,
// 1×2 8.81, 1×8 8.94, 2×1 9.31, 2×2 8.28, 2×4 8.71, 4×1 10.35, 4×2 8.88. At N 16384 alone 4×1 and 4×2 streamed
// fastest (2.68 TB/s against 2.52 for 2×2), but the 4096-row products then have 64 blocks for 132 SMs.
constexpr int kMmaTiles = 2, kMmaSteps = 2;

__device__ __forceinline__ void mmaBf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack2(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) | (static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}

// x's four values (k in order) as bf16 hi parts (h0: the first two, h1: the last two) and lo parts.
__device__ __forceinline__ void splitX(float4 x, uint32_t& h0, uint32_t& h1, uint32_t& l0, uint32_t& l1) {
  __nv_bfloat16 hx = __float2bfloat16(x.x), hy = __float2bfloat16(x.y), hz = __float2bfloat16(x.z),
                hw = __float2bfloat16(x.w);
  h0 = pack2(hx, hy);
  h1 = pack2(hz, hw);
  l0 = pack2(__float2bfloat16(x.x - __bfloat162float(hx)), __float2bfloat16(x.y - __bfloat162float(hy)));
  l1 = pack2(__float2bfloat16(x.z - __bfloat162float(hz)), __float2bfloat16(x.w - __bfloat162float(hw)));
}

// c[m] += W[rows 16m + g, 16m + g + 8 of the block; 32-wide K block] · x[row g; same block]ᵀ for each of the MT
// tiles: ca[m][u], cb[m][u] the lane's 8 weights of those rows; x0, x1 its 8 values of x, split once for all tiles.
__device__ __forceinline__ void mmaBlock(float (&c)[kMmaTiles][4], const uint4 (&ca)[kMmaTiles][kMmaSteps],
                                         const uint4 (&cb)[kMmaTiles][kMmaSteps], int u, float4 x0, float4 x1) {
  uint32_t h0, h1, l0, l1, h2, h3, l2, l3;
  splitX(x0, h0, h1, l0, l1);
  splitX(x1, h2, h3, l2, l3);
#pragma unroll
  for (int m = 0; m < kMmaTiles; m++) {
    uint4 wa = ca[m][u], wb = cb[m][u];
    mmaBf16(c[m], wa.x, wb.x, wa.y, wb.y, h0, h1);
    mmaBf16(c[m], wa.x, wb.x, wa.y, wb.y, l0, l1);
    mmaBf16(c[m], wa.z, wb.z, wa.w, wb.w, h2, h3);
    mmaBf16(c[m], wa.z, wb.z, wa.w, wb.w, l2, l3);
  }
}

__global__ void __launch_bounds__(kGemvWarps * 32)
    gemvMmaKernel(const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, float* __restrict__ y, int M,
                  int64_t N, int64_t K) {
  pdlTrigger();
  __shared__ float part[kGemvWarps][16 * kMmaTiles][8];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  int64_t n0 = static_cast<int64_t>(blockIdx.x) * 16 * kMmaTiles, blocks = K / 32;
  const uint4* ra[kMmaTiles];
  const uint4* rb[kMmaTiles];
#pragma unroll
  for (int m = 0; m < kMmaTiles; m++) {
    ra[m] = reinterpret_cast<const uint4*>(w + min(n0 + 16 * m + g, N - 1) * K) + t;
    rb[m] = reinterpret_cast<const uint4*>(w + min(n0 + 16 * m + g + 8, N - 1) * K) + t;
  }
  const float4* xr = reinterpret_cast<const float4*>(x + min(g, M - 1) * K) + 2 * t;
  float keep = g < M ? 1.0f : 0.0f;  // B's columns past M are zero
  float c[kMmaTiles][4] = {};
  uint4 wa[kMmaTiles][kMmaSteps], wb[kMmaTiles][kMmaSteps];
  auto loadW = [&](int64_t kb) {
#pragma unroll
    for (int u = 0; u < kMmaSteps; u++)
#pragma unroll
      for (int m = 0; m < kMmaTiles; m++) {
        int64_t j = kb + u * kGemvWarps;
        wa[m][u] = j < blocks ? __ldcs(ra[m] + j * 4) : make_uint4(0, 0, 0, 0);  // streamed: W is read once
        wb[m][u] = j < blocks ? __ldcs(rb[m] + j * 4) : make_uint4(0, 0, 0, 0);
      }
  };
  // The first weight loads are issued before pdlWait (W does not depend on the kernels before this one); each later
  // round's loads are issued before the round before is used.
  loadW(warp);
  pdlWait();
  for (int64_t kb = warp; kb < blocks; kb += kMmaSteps * kGemvWarps) {
    float4 x0[kMmaSteps], x1[kMmaSteps];
    uint4 ca[kMmaTiles][kMmaSteps], cb[kMmaTiles][kMmaSteps];
#pragma unroll
    for (int u = 0; u < kMmaSteps; u++) {
      int64_t j = kb + u * kGemvWarps;
      float4 zero = make_float4(0, 0, 0, 0);
      x0[u] = j < blocks ? __ldg(xr + j * 8) : zero;
      x1[u] = j < blocks ? __ldg(xr + j * 8 + 1) : zero;
      x0[u] = make_float4(x0[u].x * keep, x0[u].y * keep, x0[u].z * keep, x0[u].w * keep);
      x1[u] = make_float4(x1[u].x * keep, x1[u].y * keep, x1[u].z * keep, x1[u].w * keep);
#pragma unroll
      for (int m = 0; m < kMmaTiles; m++) {
        ca[m][u] = wa[m][u];
        cb[m][u] = wb[m][u];
      }
    }
    loadW(kb + kMmaSteps * kGemvWarps);
#pragma unroll
    for (int u = 0; u < kMmaSteps; u++) mmaBlock(c, ca, cb, u, x0[u], x1[u]);
  }
  // c[m]: rows g and g + 8 of the block's m-th 16, columns (x rows) 2t and 2t + 1.
#pragma unroll
  for (int m = 0; m < kMmaTiles; m++) {
    part[warp][16 * m + g][2 * t] = c[m][0];
    part[warp][16 * m + g][2 * t + 1] = c[m][1];
    part[warp][16 * m + g + 8][2 * t] = c[m][2];
    part[warp][16 * m + g + 8][2 * t + 1] = c[m][3];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < 16 * kMmaTiles * 8; e += kGemvWarps * 32) {
    int n = e >> 3, m = e & 7;
    float s = 0;
#pragma unroll
    for (int v = 0; v < kGemvWarps; v++) s += part[v][n][m];
    if (m < M && n0 + n < N) y[m * N + n0 + n] = s;
  }
}

// A dependent launch (launch.h): the weight loads start while the kernel before finishes.
template <typename Kernel, typename... Args>
void launchDependent(Kernel kernel, unsigned blocks, Args... args) {
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
  check(cudaLaunchKernelEx(&cfg, kernel, args...), "gemv16 launch");
  setTriggered(true);
}

template <typename WT, int M>
void launch(const float* x, const void* w, float* y, int64_t N, int64_t K) {
  // x from L1 per chunk: 2M/R bytes for each byte of W. Run 1 (session 5) at N 16384, K 4096 with R 4, U 2 for M 8:
  // 1.78 TB/s, against 3.03 at M 1 (R 2, U 4) and cuBLAS's 2.69 at M 8; so R 8 from M 5 (x:W 2:1, as at M 1).
  constexpr int R = M <= 2 ? 2 : M <= 4 ? 4 : 8;
  constexpr int U = M <= 2 ? 4 : M <= 4 ? 2 : 1;
  int64_t warps = (N + R - 1) / R;
  unsigned blocks = static_cast<unsigned>((warps + kGemvWarps - 1) / kGemvWarps);
  launchDependent(gemvKernel<WT, M, R, U>, blocks, x, static_cast<const WT*>(w), y, N, K);
}

// gemvMma from 5 rows: at 2 and 4 rows it streamed 2.28 and 2.23 TB/s against the FFMA kernel's 2.52 and 2.50
// (N 16384, K 4096; stop 28, runs 1-2).
constexpr int kMmaMinRows = 5;

template <typename WT>
void dispatch(int64_t M, const float* x, const void* w, float* y, int64_t N, int64_t K) {
  if (std::is_same_v<WT, __nv_bfloat16> && M >= kMmaMinRows && K % 32 == 0) {
    launchDependent(gemvMmaKernel, static_cast<unsigned>((N + 16 * kMmaTiles - 1) / (16 * kMmaTiles)), x,
                    static_cast<const __nv_bfloat16*>(w), y, static_cast<int>(M), N, K);
    return;
  }
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
