// Elementwise kernels, the broadcast-undoing row sum, layout moves and dtype conversions. Grid-stride loops over
// 64-bit indices; the formulas are the CPU kernels' (native/cpu: exact-erf GELU, SiLU, ReLU).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "device.h"
#include "launch.h"

namespace retnet::cuda {

namespace {

__global__ void binaryKernel(int op, const float* a, const float* b, float* out, int64_t n, int64_t m) {
  pdlTrigger();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float y = b[i % m];
    out[i] = op == 0 ? a[i] + y : a[i] * y;
  }
}

__global__ void scaleKernel(const float* a, float* out, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = alpha * a[i];
}

__global__ void fillKernel(float* x, float value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = value;
}

// out[j] = Σ_r g[r·m + j]: 32 columns per block, 8 row groups each summing a strided share in double, then the
// groups combined in shared memory (deterministic: no atomics).
__global__ void sumRowsKernel(const float* g, float* out, int64_t rows, int64_t m) {
  __shared__ double part[8][33];
  int64_t j = blockIdx.x * 32 + threadIdx.x;
  double s = 0;
  if (j < m)
    for (int64_t r = threadIdx.y; r < rows; r += 8) s += g[r * m + j];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < m) {
    double t = 0;
    for (int y = 0; y < 8; y++) t += part[y][threadIdx.x];
    out[j] = static_cast<float>(t);
  }
}

__device__ float act(int kind, float x) {
  if (kind == 0) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
  if (kind == 1) return x / (1.0f + expf(-x));
  return x > 0.0f ? x : 0.0f;
}

__device__ float actGrad(int kind, float x) {
  if (kind == 0) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return cdf + x * pdf;
  }
  if (kind == 1) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
  }
  return x > 0.0f ? 1.0f : 0.0f;
}

__global__ void activationKernel(int kind, const float* x, float* out, int64_t n) {
  pdlTrigger();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = act(kind, x[i]);
}

__global__ void activationBackwardKernel(int kind, const float* x, const float* g, float* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = g[i] * actGrad(kind, x[i]);
}

struct PermuteArgs {
  int rank;
  int64_t outShape[8];
  int64_t inStride[8];  // input stride of each output dim
};

__global__ void permuteKernel(const uint32_t* x, uint32_t* out, int64_t n, PermuteArgs p) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < n; o += int64_t(gridDim.x) * blockDim.x) {
    int64_t rest = o, src = 0;
    for (int d = p.rank - 1; d >= 0; d--) {
      int64_t i = rest % p.outShape[d];
      rest /= p.outShape[d];
      src += i * p.inStride[d];
    }
    out[o] = x[src];
  }
}

__global__ void copyBlocksKernel(const uint32_t* src, int64_t srcOff, int64_t srcStride, uint32_t* dst,
                                 int64_t dstOff, int64_t dstStride, int64_t blocks, int64_t len) {
  int64_t n = blocks * len;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t b = i / len, j = i % len;
    dst[dstOff + b * dstStride + j] = src[srcOff + b * srcStride + j];
  }
}

__device__ float load(DType t, const void* x, int64_t i) {
  if (t == DType::F32) return static_cast<const float*>(x)[i];
  if (t == DType::BF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(x)[i]);
  return __half2float(static_cast<const __half*>(x)[i]);
}

__global__ void convertKernel(DType from, const void* x, DType to, void* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = load(from, x, i);
    if (to == DType::F32) static_cast<float*>(out)[i] = v;
    else if (to == DType::BF16) static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
    else static_cast<__half*>(out)[i] = __float2half_rn(v);
  }
}

// x ≈ hi + lo in the 16-bit dtype `to`: hi = round(x), lo = round(x − hi), written as hi's n values then lo's.
__global__ void splitKernel(const float* x, DType to, void* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = x[i];
    if (to == DType::BF16) {
      __nv_bfloat16 hi = __float2bfloat16_rn(v);
      static_cast<__nv_bfloat16*>(out)[i] = hi;
      static_cast<__nv_bfloat16*>(out)[n + i] = __float2bfloat16_rn(v - __bfloat162float(hi));
    } else {
      __half hi = __float2half_rn(v);
      static_cast<__half*>(out)[i] = hi;
      static_cast<__half*>(out)[n + i] = __float2half_rn(v - __half2float(hi));
    }
  }
}

}  // namespace

void split16(const float* x, DType to, void* out, int64_t n) {
  if (n == 0) return;
  if (to == DType::F32) throw CudaError("split16: the parts are bfloat16 or float16");
  splitKernel<<<gridFor(n), kThreads, 0, stream()>>>(x, to, out, n);
  checkLaunch("split16");
}

void binary(int op, const float* a, const float* b, float* out, int64_t n, int64_t m) {
  if (n == 0) return;
  binaryKernel<<<gridFor(n), kThreads, 0, stream()>>>(op, a, b, out, n, m);
  checkLaunch("binary");
  setTriggered(true);
}

void scale(const float* a, float* out, float alpha, int64_t n) {
  if (n == 0) return;
  scaleKernel<<<gridFor(n), kThreads, 0, stream()>>>(a, out, alpha, n);
  checkLaunch("scale");
}

void fill(float* x, float value, int64_t n) {
  if (n == 0) return;
  fillKernel<<<gridFor(n), kThreads, 0, stream()>>>(x, value, n);
  checkLaunch("fill");
}

void sumRows(const float* g, float* out, int64_t rows, int64_t m) {
  if (m == 0) return;
  sumRowsKernel<<<static_cast<unsigned>((m + 31) / 32), dim3(32, 8), 0, stream()>>>(g, out, rows, m);
  checkLaunch("sumRows");
}

void activation(int kind, const float* x, float* out, int64_t n) {
  if (n == 0) return;
  activationKernel<<<gridFor(n), kThreads, 0, stream()>>>(kind, x, out, n);
  checkLaunch("activation");
  setTriggered(true);
}

void activationBackward(int kind, const float* x, const float* g, float* dx, int64_t n) {
  if (n == 0) return;
  activationBackwardKernel<<<gridFor(n), kThreads, 0, stream()>>>(kind, x, g, dx, n);
  checkLaunch("activationBackward");
}

void permute(const uint32_t* x, uint32_t* out, int rank, const int64_t* shape, const int* perm) {
  PermuteArgs p{};
  p.rank = rank;
  int64_t inStride[8], s = 1, n = 1;
  for (int d = rank - 1; d >= 0; d--) {
    inStride[d] = s;
    s *= shape[d];
  }
  for (int d = 0; d < rank; d++) {
    p.outShape[d] = shape[perm[d]];
    p.inStride[d] = inStride[perm[d]];
    n *= shape[d];
  }
  if (n == 0) return;
  permuteKernel<<<gridFor(n), kThreads, 0, stream()>>>(x, out, n, p);
  checkLaunch("permute");
}

void copyBlocks(const uint32_t* src, int64_t srcOff, int64_t srcStride, uint32_t* dst, int64_t dstOff,
                int64_t dstStride, int64_t blocks, int64_t len) {
  if (blocks * len == 0) return;
  copyBlocksKernel<<<gridFor(blocks * len), kThreads, 0, stream()>>>(src, srcOff, srcStride, dst, dstOff, dstStride,
                                                                     blocks, len);
  checkLaunch("copyBlocks");
}

void convert(DType from, const void* x, DType to, void* out, int64_t n) {
  if (n == 0) return;
  convertKernel<<<gridFor(n), kThreads, 0, stream()>>>(from, x, to, out, n);
  checkLaunch("convert");
}

}  // namespace retnet::cuda

namespace retnet::cuda {

namespace {

// Rotation of pairs (2j, 2j+1) (torchscale's theta_shift) or (i, i+K/2) (fla's rotate_half): x [B, T, H, K]; cos,
// sin [T, K] or [B, T, K], read at the pair's first index.
__global__ void rotaryKernel(const float* x, const float* cs, const float* sn, float* y, int64_t B, int64_t T,
                             int64_t H, int64_t K, bool perBatch, bool halves, float sign) {
  int64_t pairs = B * T * H * (K / 2);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    int64_t j = p % (K / 2), row = p / (K / 2);  // row = (b·T + n)·H + h
    int64_t a = halves ? j : 2 * j, off = halves ? K / 2 : 1;  // the pair (a, a + off)
    int64_t bt = row / H, n = bt % T, b = bt / T;
    int64_t table = ((perBatch ? b * T : 0) + n) * K + a;
    float c = cs[table], s = sign * sn[table];
    float x0 = x[row * K + a], x1 = x[row * K + a + off];
    y[row * K + a] = x0 * c - x1 * s;
    y[row * K + a + off] = x1 * c + x0 * s;
  }
}

}  // namespace

void rotary(const float* x, const float* cos, const float* sin, float* y, int64_t B, int64_t T, int64_t H, int64_t K,
            bool perBatch, bool halves, bool inverse) {
  int64_t pairs = B * T * H * (K / 2);
  if (pairs == 0) return;
  rotaryKernel<<<gridFor(pairs), kThreads, 0, stream()>>>(x, cos, sin, y, B, T, H, K, perBatch, halves,
                                                          inverse ? -1.0f : 1.0f);
  checkLaunch("rotary");
}

}  // namespace retnet::cuda
