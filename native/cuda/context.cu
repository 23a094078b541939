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

// The blocks a graph owns: those freed while it was captured (its intermediates), which its replays write.
using Blocks = std::multimap<size_t, void*>;  // rounded bytes -> block

struct Allocator {
  std::mutex mu;
  std::map<uintptr_t, size_t> live;  // block start -> rounded bytes
  Blocks cached;                      // free blocks
  Blocks* capture = nullptr;          // while a graph is captured: the blocks freed since it began
  size_t liveBytes = 0, cachedBytes = 0, graphBytes = 0, peakReserved = 0, mallocs = 0;
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
  // During a capture, a block the capture freed is taken first: replays run the launches in capture order, so it is
  // free at this point of every replay too.
  auto own = a.capture ? a.capture->find(rounded) : Blocks::iterator();
  auto it = a.cached.find(rounded);
  if (a.capture && own != a.capture->end()) {
    p = own->second;
    a.capture->erase(own);
    a.graphBytes -= rounded;
  } else if (it != a.cached.end()) {
    p = it->second;
    a.cached.erase(it);
    a.cachedBytes -= rounded;
  } else {
    context();
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess && !a.capture) {  // cudaFree may synchronise, which a capture must not
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
  a.peakReserved = std::max(a.peakReserved, a.liveBytes + a.cachedBytes + a.graphBytes);
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
  // on the same stream, so reuse is safe without a synchronisation. A block freed during a capture is the graph's.
  if (a.capture) {
    a.capture->emplace(bytes, p);
    a.graphBytes += bytes;
  } else {
    a.cached.emplace(bytes, p);
    a.cachedBytes += bytes;
  }
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
  return {a.liveBytes, a.cachedBytes, a.graphBytes, a.liveBytes + a.cachedBytes + a.graphBytes, a.peakReserved,
          a.mallocs};
}

void emptyCache() {
  Allocator& a = allocator();
  requireNotCapturing("emptyCache");
  check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  std::lock_guard<std::mutex> lock(a.mu);
  freeCached(a);
}

// ---- graphs ----
// A decode step is ~650 launches from JavaScript at ~7-11 µs of host time each, more than its kernels take on the
// device (bench/cuda/NOTES.md, stop 27). Captured once, it is replayed by one cudaGraphLaunch. The capture runs in
// relaxed mode (cudaMalloc is allowed; nothing frees to the driver during it). Blocks it frees stay the graph's
// until the graph is destroyed.

namespace {
struct Graph {
  cudaGraphExec_t exec;
  Blocks blocks;
};
std::unordered_map<int, Graph> graphs;  // the JavaScript thread only, like the stream
int nextGraph = 1;
bool capturingNow = false;
Blocks captureBlocks;

void returnBlocks(Blocks& blocks) {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  for (auto& [bytes, p] : blocks) {
    a.cached.emplace(bytes, p);
    a.cachedBytes += bytes;
    a.graphBytes -= bytes;
  }
  blocks.clear();
}
}  // namespace

bool capturing() { return capturingNow; }

void requireNotCapturing(const char* what) {
  if (capturingNow) throw CudaError(std::string(what) + ": not allowed while a graph is being captured");
}

void graphBegin() {
  requireNotCapturing("graphBegin");
  {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mu);
    a.capture = &captureBlocks;
  }
  lastTriggered = false;  // the graph's first kernel has no kernel of ours before it
  cudaError_t e = cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed);
  if (e != cudaSuccess) {
    allocator().capture = nullptr;
    check(e, "cudaStreamBeginCapture");
  }
  capturingNow = true;
}

int graphEnd(bool keep) {
  if (!capturingNow) throw CudaError("graphEnd: no graph is being captured");
  capturingNow = false;
  cudaGraph_t g = nullptr;
  cudaError_t ended = cudaStreamEndCapture(stream(), &g);
  {
    Allocator& a = allocator();
    std::lock_guard<std::mutex> lock(a.mu);
    a.capture = nullptr;
  }
  lastTriggered = false;
  cudaGraphExec_t exec = nullptr;
  cudaError_t made = ended == cudaSuccess && keep ? cudaGraphInstantiate(&exec, g, 0) : cudaSuccess;
  if (g) cudaGraphDestroy(g);
  if (ended != cudaSuccess || made != cudaSuccess || !keep) {
    cudaGetLastError();
    returnBlocks(captureBlocks);  // nothing captured ever ran, so nothing queued uses them
    if (!keep) return 0;
    check(ended != cudaSuccess ? ended : made, ended != cudaSuccess ? "cudaStreamEndCapture" : "cudaGraphInstantiate");
  }
  int id = nextGraph++;
  graphs.emplace(id, Graph{exec, std::move(captureBlocks)});
  captureBlocks.clear();
  return id;
}

void graphLaunch(int id) {
  requireNotCapturing("graphLaunch");
  auto it = graphs.find(id);
  if (it == graphs.end()) throw CudaError("graphLaunch: no graph " + std::to_string(id));
  check(cudaGraphLaunch(it->second.exec, stream()), "cudaGraphLaunch");
}

size_t graphDestroy(int id) {
  auto it = graphs.find(id);
  if (it == graphs.end()) return 0;
  size_t bytes = 0;
  for (auto& [b, p] : it->second.blocks) bytes += b;
  // A replay still queued keeps the executable alive until it completes (the driver defers the release); the blocks'
  // next users are queued after it on the same stream.
  cudaGraphExecDestroy(it->second.exec);
  returnBlocks(it->second.blocks);
  graphs.erase(it);
  return bytes;
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
