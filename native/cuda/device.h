// The CUDA device's C++ side: one context (a stream, a cuBLAS handle), the caching allocator and the launch
// wrappers of every kernel, as plain functions on device pointers. The Node-API glue (addon.cc) is the only caller;
// it validates every pointer against the allocator's live blocks before a launch, so a kernel never sees a span
// that runs past its buffer. All launches go to the one stream in order, so kernels need no extra synchronisation.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace retnet::cuda {

// A CUDA or cuBLAS failure, turned into a JavaScript error by the glue.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(cudaError_t e, const char* what);
// Whether the last thing queued on the stream was one of our kernels that runs pdlTrigger() (launch.h) and writes
// only float32 (rmsNorm, binary, activation, gemv16): only then is gemv16 launched dependently, so its early weight
// loads can never race a kernel or copy that writes 16-bit data. check() (every launch and copy goes through it) and
// gemm() clear it; those kernels' wrappers set it after their launch.
void setTriggered(bool on);
bool triggered();
// Checks the launch that just happened (a bad configuration shows here, not at the next synchronisation).
void checkLaunch(const char* kernel);

cudaStream_t stream();
void* cublasHandle();

// ---- memory (memory.cu) ----
struct MemoryStats {
  size_t liveBytes;      // bytes of live blocks (what tensors hold, rounded to the allocator's granule)
  size_t cachedBytes;    // freed blocks kept for reuse
  size_t graphBytes;     // blocks held by captured graphs (their intermediates)
  size_t reservedBytes;  // everything taken from cudaMalloc: live + cached + graph
  size_t peakReserved;
  size_t mallocs;        // cudaMalloc calls so far
};
void* allocate(size_t bytes);
void release(void* p);
// Bytes from p to the end of the live block holding p, or 0 when p is in no live block.
size_t spanFrom(const void* p);
MemoryStats memoryStats();
// Returns every cached block to the driver.
void emptyCache();

// ---- graphs (context.cu) ----
// graphBegin() starts capturing what is queued on the stream instead of running it; graphEnd(true) ends the capture
// and returns the graph's id (graphEnd(false) discards it and returns 0); graphLaunch(id) queues one replay;
// graphDestroy(id) frees it and returns the bytes of the blocks it held. While capturing, nothing may synchronise or
// copy from host memory (requireNotCapturing throws naming the call).
void graphBegin();
int graphEnd(bool keep);
void graphLaunch(int id);
size_t graphDestroy(int id);
bool capturing();
void requireNotCapturing(const char* what);

// ---- products (gemm.cu) ----
enum class DType : int { F32 = 0, BF16 = 1, F16 = 2 };
// Row-major C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b] over `batch` entries (strides in elements; 0 shares one
// matrix). A and B are of dtype dt, C of outDt (dt itself, or F32 for 16-bit operands). fp32 accumulation; tf32
// tensor cores for fp32 inputs only when `tf32`.
void gemm(DType dt, DType outDt, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
          int64_t lda, int64_t strideA, const void* B, int64_t ldb, int64_t strideB, float beta, void* C, int64_t ldc,
          int64_t strideC, int64_t batch, bool tf32);

// y [M, N] = x [M, K] · W [N, K]ᵀ for a few float32 rows and a 16-bit weight (gemv.cu): one launch, x not rounded,
// W streamed once. gemv16Fits says whether the shape and pointers suit it (else the caller takes gemm).
constexpr int kGemvMaxRows = 8;
bool gemv16Fits(int64_t M, int64_t K, const void* x, const void* w);
void gemv16(DType wt, const float* x, const void* w, float* y, int64_t M, int64_t N, int64_t K);

// ---- elementwise, reductions, layout (elementwise.cu) ----
void binary(int op, const float* a, const float* b, float* out, int64_t n, int64_t m);
void scale(const float* a, float* out, float alpha, int64_t n);
void sumRows(const float* g, float* out, int64_t rows, int64_t m);
void activation(int kind, const float* x, float* out, int64_t n);
void activationBackward(int kind, const float* x, const float* g, float* dx, int64_t n);
void permute(const uint32_t* x, uint32_t* out, int rank, const int64_t* shape, const int* perm);
void copyBlocks(const uint32_t* src, int64_t srcOff, int64_t srcStride, uint32_t* dst, int64_t dstOff,
                int64_t dstStride, int64_t blocks, int64_t len);
void fill(float* x, float value, int64_t n);
// Conversions between stored dtypes (float32 <-> bfloat16/float16 bit patterns).
void convert(DType from, const void* x, DType to, void* out, int64_t n);
// out [2n] of dtype `to` (bfloat16 or float16) = hi, lo with x ≈ hi + lo (hi = x rounded, lo = the rest rounded):
// a float32 operand as two 16-bit ones, for weight products that keep x's float32 precision on tensor cores.
void split16(const float* x, DType to, void* out, int64_t n);

// ---- normalisation, softmax, losses, embedding, optimizer (norm.cu) ----
// RMSNorm over rows, gated by silu(z) where z is given (RetNet's per-head norm; null: plain RMSNorm). dz with z.
void rmsNorm(const float* x, const float* z, const float* w, float* y, float* rstd, int64_t rows, int64_t cols,
             float eps);
void rmsNormBackward(const float* x, const float* z, const float* w, const float* rstd, const float* g, float* dx,
                     float* dz, float* dw, int64_t rows, int64_t cols);
void layerNorm(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t rows,
               int64_t cols, float eps);
void layerNormBackward(const float* x, const float* w, const float* mean, const float* rstd, const float* g,
                       float* dx, float* dw, float* db, int64_t rows, int64_t cols);
void softmax(const float* x, float* y, int64_t rows, int64_t cols);
void softmaxBackward(const float* y, const float* g, float* dx, int64_t rows, int64_t cols);
// Out-of-range targets/ids lower *bad (device int32, set to INT32_MAX first) to the smallest offending position, for
// the caller to report (their outputs are NaN); embedding's bad may be null (a captured graph: the ids are checked
// on the host before each replay).
void crossEntropy(const float* logits, const int32_t* targets, float* loss, float* lse, int64_t N, int64_t V,
                  int32_t ignoreIndex, int32_t* bad);
void crossEntropyBackward(const float* logits, const int32_t* targets, const float* lse, const float* g, float* dx,
                          int64_t N, int64_t V, int32_t ignoreIndex);
void embedding(const float* table, const int32_t* ids, float* out, int64_t n, int64_t D, int64_t V, int32_t* bad);
// out [V, D] must be zeroed.
void embeddingBackward(const float* g, const int32_t* ids, float* out, int64_t n, int64_t D, int64_t V);
struct AdamWArgs {
  float lr, beta1, beta2, eps, weightDecay, gradScale, c1, c2;
};
// One launch for up to 256 parameter tensors (host arrays of device pointers and element counts; the table travels
// in the launch's parameters, so nothing is copied first).
void adamwMany(float* const* params, const float* const* grads, float* const* m, float* const* v,
               const int64_t* sizes, int count, AdamWArgs a);
// Σ x² into *out (device double), accumulated in double.
void sumSquares(const float* x, int64_t n, double* out);

// ---- rotary, retention, attention (sequence.cu) ----
// halves: pairs (i, i + K/2) (fla's rotate_half) instead of (2j, 2j + 1) (torchscale's theta_shift).
void rotary(const float* x, const float* cos, const float* sin, float* y, int64_t B, int64_t T, int64_t H, int64_t K,
            bool perBatch, bool halves, bool inverse);
struct Dims {
  int64_t B, H, T, K, V;
};
// Scratch floats each kernel needs (callers allocate it, so the engine's accounting sees it); tensorCores as the
// kernel call's.
int64_t retentionWorkspace(int kernel, Dims d, int64_t C, bool tensorCores);
// The state-carrying part of a forward call (docs/retention.md): the states the sequences continue (S̃₀ [N, H, K, V],
// s₀ [N, H]; null: empty), where the states after them go (null: not asked for), the packed segments of a batch of
// one row (lengths summing to T; empty: one sequence per batch row), and normalize false (the fla variant: no
// normalisers, o = U and r = 1).
struct RetentionRun {
  const float* initState;
  const float* initScale;
  float* finalState;
  float* finalScale;
  std::vector<int64_t> segments;
  bool normalize;
  // The chunkwise products on bf16 tensor cores (float32 accumulation) where the shape allows (K = V = 128, C = 64,
  // whole chunks, no initial state or segments); else the float32 kernels.
  bool tensorCores;
};
// The parallel (chunkwise false) or chunkwise form.
void retentionForward(bool chunkwise, const float* q, const float* k, const float* v, const double* gammas, float* o,
                      float* r, float* ws, Dims d, int64_t C, const RetentionRun& run);
void retentionBackward(const float* q, const float* k, const float* v, const double* gammas, const float* r,
                       const float* dO, float* dq, float* dk, float* dv, float* ws, Dims d, int64_t C,
                       bool tensorCores);
// state: float32, or float16 (state16: read as float32, stored rounded to nearest even).
void retentionStep(const float* q, const float* k, const float* v, const double* gammas, void* state, bool state16,
                   float* scale, float* o, int64_t B, int64_t H, int64_t K, int64_t V, bool normalize);
int64_t attentionWorkspace(int kernel, Dims d);
void attentionNaive(const float* q, const float* k, const float* v, float* o, float* p, Dims d);
void attentionNaiveBackward(const float* q, const float* k, const float* v, const float* p, const float* dO,
                            float* dq, float* dk, float* dv, float* ws, Dims d);
void attentionFlash(const float* q, const float* k, const float* v, float* o, float* lse, Dims d);
void attentionFlashBackward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                            const float* dO, float* dq, float* dk, float* dv, float* ws, Dims d);
// The tiled flash kernels (flash.cu) for the shapes flashTiled accepts (K, V ≤ 128); backward after D is computed.
bool flashTiled(Dims d);
void flashTiledForward(const float* q, const float* k, const float* v, float* o, float* lse, Dims d);
void flashTiledBackward(const float* q, const float* k, const float* v, const float* lse, const float* dO,
                        const float* D, float* dq, float* dk, float* dv, Dims d);
// ws: attentionWorkspace(4, {B, H, T = C, K, V}) floats.
void attentionDecode(const float* q, const float* kc, const float* vc, const int32_t* lengths, float* o, float* ws,
                     int64_t B, int64_t H, int64_t C, int64_t K, int64_t V);

}  // namespace retnet::cuda
