// The device context: one stream and one cuBLAS handle, made on first use, and the caching allocator.
//
// Allocator: cudaMalloc and cudaFree synchronise the device and cost tens of microseconds, and a training or decoding
// loop frees and re-allocates the same sizes every step, so freed blocks are kept by size and handed out again. Sizes
// are rounded up to a 512-byte granule (the alignment cuBLAS and 16-byte vector loads want). When cudaMalloc fails,
// the cache is emptied and the allocation tried once more. The engine's MemoryTracker counts the bytes of live
// tensors; memoryStats() reports what the allocator holds beside them (cached, reserved), so both are exact.
#include <cublas_v2.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "device.h"

namespace retnet::cuda {

namespace {
bool lastTriggered = false;  // the one stream is fed from the JavaScript thread only
}  // namespace

void setTriggered(bool on) { lastTriggered = on; }
bool triggered() { return lastTriggered; }

void check(cudaError_t e, const char* what) {
  lastTriggered = false;
  if (e != cudaSuccess) throw CudaError(std::string(what) + ": " + cudaGetErrorString(e));
}

void checkLaunch(const char* kernel) { check(cudaGetLastError(), kernel); }

namespace {

struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
};

Context& context() {
  static Context c = [] {
    Context x;
    check(cudaStreamCreateWithFlags(&x.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    if (cublasCreate(&x.blas) != CUBLAS_STATUS_SUCCESS) throw CudaError("cublasCreate failed");
    cublasSetStream(x.blas, x.stream);
    return x;
  }();
  return c;
}

constexpr size_t kGranule = 512;

struct Allocator {
  std::mutex mu;
  std::map<uintptr_t, size_t> live;                   // block start -> rounded bytes
  std::multimap<size_t, void*> cached;                 // rounded bytes -> free block
  size_t liveBytes = 0, cachedBytes = 0, peakReserved = 0, mallocs = 0;
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed: blocks may be released during process exit
  return *a;
}

void freeCached(Allocator& a) {
  for (auto& [bytes, p] : a.cached) cudaFree(p);
  a.cached.clear();
  a.cachedBytes = 0;
}

}  // namespace

cudaStream_t stream() { return context().stream; }
void* cublasHandle() { return context().blas; }

void* allocate(size_t bytes) {
  Allocator& a = allocator();
  size_t rounded = (std::max<size_t>(bytes, 1) + kGranule - 1) / kGranule * kGranule;
  std::lock_guard<std::mutex> lock(a.mu);
  void* p = nullptr;
  auto it = a.cached.find(rounded);
  if (it != a.cached.end()) {
    p = it->second;
    a.cached.erase(it);
    a.cachedBytes -= rounded;
  } else {
    context();
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
      cudaGetLastError();
      freeCached(a);
      e = cudaMalloc(&p, rounded);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t freeB = 0, totalB = 0;
      cudaMemGetInfo(&freeB, &totalB);
      throw CudaError("cuda: out of device memory allocating " + std::to_string(bytes) + " bytes (" +
                      std::to_string(a.liveBytes) + " live, " + std::to_string(freeB) + " free of " +
                      std::to_string(totalB) + ")");
    }
    a.mallocs++;
  }
  a.live.emplace(reinterpret_cast<uintptr_t>(p), rounded);
  a.liveBytes += rounded;
  a.peakReserved = std::max(a.peakReserved, a.liveBytes + a.cachedBytes);
  return p;
}

void release(void* p) {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(reinterpret_cast<uintptr_t>(p));
  if (it == a.live.end()) throw CudaError("cuda: release of a pointer that is not a live block");
  size_t bytes = it->second;
  a.live.erase(it);
  a.liveBytes -= bytes;
  // Kernels still queued on the stream may read the block: the next user of a cached block is ordered after them
  // on the same stream, so reuse is safe without a synchronisation.
  a.cached.emplace(bytes, p);
  a.cachedBytes += bytes;
}

size_t spanFrom(const void* p) {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  uintptr_t x = reinterpret_cast<uintptr_t>(p);
  auto it = a.live.upper_bound(x);
  if (it == a.live.begin()) return 0;
  --it;
  if (x >= it->first + it->second) return 0;
  return it->first + it->second - x;
}

MemoryStats memoryStats() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return {a.liveBytes, a.cachedBytes, a.liveBytes + a.cachedBytes, a.peakReserved, a.mallocs};
}

void emptyCache() {
  Allocator& a = allocator();
  check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  std::lock_guard<std::mutex> lock(a.mu);
  freeCached(a);
}

// ---- GEMM through cuBLAS ----
// cuBLAS is column-major: a row-major C = op(A)·op(B) is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, i.e. the same call with
// the operands swapped and M, N exchanged; the row-major leading dimensions pass through unchanged.
void gemm(DType dt, DType outDt, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
          int64_t lda, int64_t strideA, const void* B, int64_t ldb, int64_t strideB, float beta, void* C, int64_t ldc,
          int64_t strideC, int64_t batch, bool tf32) {
  if (M == 0 || N == 0 || batch == 0) return;
  lastTriggered = false;
  cublasHandle_t h = context().blas;
  auto type = [](DType d) { return d == DType::F32 ? CUDA_R_32F : d == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F; };
  cudaDataType_t t = type(dt), tc = type(outDt);
  cublasComputeType_t ct = dt == DType::F32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N, opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasStatus_t s = cublasGemmStridedBatchedEx(
      h, opB, opA, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B, t, static_cast<int>(ldb),
      strideB, A, t, static_cast<int>(lda), strideA, &beta, C, tc, static_cast<int>(ldc), strideC,
      static_cast<int>(batch), ct, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS)
    throw CudaError("cublasGemmStridedBatchedEx failed (status " + std::to_string(static_cast<int>(s)) + ", M=" +
                    std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + ")");
}

}  // namespace retnet::cuda
