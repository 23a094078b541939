// Node-API entry of the CUDA addon (retnet_cuda.node): device memory, copies and every kernel, with arguments
// checked before a launch. Device pointers travel as JavaScript numbers (user-space addresses fit in 53 bits); each
// is looked up among the allocator's live blocks and must have room for what the kernel touches, so a bad call is a
// JavaScript TypeError, never a device fault. Argument order of each function: see its registration comment.
#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "codes.h"
#include "common.h"
#include "device.h"

namespace retnet {

std::vector<std::pair<std::string, KernelFn>>& kernelRegistry() {
  static std::vector<std::pair<std::string, KernelFn>> registry;
  return registry;
}

namespace {

using codes::AttentionWork;
using codes::RetentionWork;
using cuda::CudaError;
using cuda::Dims;

int64_t code(AttentionWork w) { return static_cast<int64_t>(w); }
int64_t code(RetentionWork w) { return static_cast<int64_t>(w); }

// A device pointer argument with room for `bytes` from it.
void* dev(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t bytes) {
  double v = num(info, i, what);
  if (v < 0 || v != static_cast<double>(static_cast<uint64_t>(v)))
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a device pointer"};
  void* p = reinterpret_cast<void*>(static_cast<uintptr_t>(v));
  if (bytes <= 0) return p;
  size_t span = cuda::spanFrom(p);
  if (span < static_cast<size_t>(bytes))
    throw ArgError{std::string(what) + ": the device buffer holds " + std::to_string(span) + " bytes from there, " +
                   std::to_string(bytes) + " needed"};
  return p;
}

float* f(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t n) {
  return static_cast<float*>(dev(info, i, what, n * 4));
}

int32_t* ints(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t n) {
  return static_cast<int32_t*>(dev(info, i, what, n * 4));
}

// Like guard (common.h), also turning CUDA failures into JavaScript errors.
Napi::Value run(const Napi::CallbackInfo& info, const std::function<void()>& body) {
  try {
    return guard(info, body);
  } catch (const CudaError& e) {
    Napi::Error::New(info.Env(), e.what()).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
}

// A device int32 set to INT32_MAX, lowered by a kernel to the first bad position; read back after the launch.
struct BadIndex {
  int32_t* p;
  BadIndex() : p(static_cast<int32_t*>(cuda::allocate(4))) {
    int32_t init = INT32_MAX;
    cuda::check(cudaMemcpyAsync(p, &init, 4, cudaMemcpyHostToDevice, cuda::stream()), "cudaMemcpyAsync");
  }
  int32_t read() const {
    int32_t v = 0;
    cuda::check(cudaMemcpyAsync(&v, p, 4, cudaMemcpyDeviceToHost, cuda::stream()), "cudaMemcpyAsync");
    cuda::check(cudaStreamSynchronize(cuda::stream()), "cudaStreamSynchronize");
    return v;
  }
  ~BadIndex() { cuda::release(p); }
};

Dims dims(const Napi::CallbackInfo& info, size_t at) {
  return {dim(info, at, "B"), dim(info, at + 1, "H"), dim(info, at + 2, "T"), dim(info, at + 3, "K"),
          dim(info, at + 4, "V")};
}

std::vector<double> gammas(const Napi::CallbackInfo& info, size_t i, int64_t H, const char* kernel) {
  auto g = f64(info, i, "gammas");
  require(g, H, kernel, "gammas");
  std::vector<double> out(g.data, g.data + H);
  for (double x : out)
    if (!(x > 0.0 && x < 1.0)) throw ArgError{std::string(kernel) + ": every decay gamma must lie in (0, 1)"};
  return out;
}

// ---- device, memory, copies ----

// available() -> null, or why no CUDA device can be used.
Napi::Value Available(const Napi::CallbackInfo& info) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return Napi::String::New(info.Env(), std::string("no CUDA device: ") + cudaGetErrorString(e));
  }
  if (n == 0) return Napi::String::New(info.Env(), "no CUDA device");
  return info.Env().Null();
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  run(info, [&] {
    int device = 0, driver = 0, runtime = 0, blas = 0;
    cuda::check(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp p{};
    cuda::check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    cuda::check(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
    cuda::check(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
    cublasGetVersion(static_cast<cublasHandle_t>(cuda::cublasHandle()), &blas);
    o.Set("name", Napi::String::New(env, p.name));
    o.Set("computeCapability", Napi::String::New(env, std::to_string(p.major) + "." + std::to_string(p.minor)));
    o.Set("multiprocessors", Napi::Number::New(env, p.multiProcessorCount));
    o.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(p.totalGlobalMem)));
    o.Set("l2Bytes", Napi::Number::New(env, p.l2CacheSize));
    o.Set("driver", Napi::Number::New(env, driver));
    o.Set("runtime", Napi::Number::New(env, runtime));
    o.Set("cublas", Napi::Number::New(env, blas));
    o.Set("compiledFor", Napi::String::New(env, RETNET_CUDA_ARCHS));
  });
  return o;
}

// alloc(bytes) -> pointer
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  double p = 0;
  Napi::Value r = run(info, [&] { p = static_cast<double>(reinterpret_cast<uintptr_t>(cuda::allocate(dim(info, 0, "bytes")))); });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), p);
}

// free(pointer)
Napi::Value Free(const Napi::CallbackInfo& info) {
  return run(info, [&] { cuda::release(dev(info, 0, "pointer", 0)); });
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  cuda::MemoryStats s = cuda::memoryStats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("liveBytes", static_cast<double>(s.liveBytes));
  o.Set("cachedBytes", static_cast<double>(s.cachedBytes));
  o.Set("graphBytes", static_cast<double>(s.graphBytes));
  o.Set("reservedBytes", static_cast<double>(s.reservedBytes));
  o.Set("peakReservedBytes", static_cast<double>(s.peakReserved));
  o.Set("mallocs", static_cast<double>(s.mallocs));
  return o;
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) { return run(info, [&] { cuda::emptyCache(); }); }

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    cuda::requireNotCapturing("synchronize");
    cuda::check(cudaStreamSynchronize(cuda::stream()), "cudaStreamSynchronize");
  });
}

// graphBegin(): what is queued from now on is captured into a graph instead of run (context.cu).
Napi::Value GraphBegin(const Napi::CallbackInfo& info) {
  return run(info, [&] { cuda::graphBegin(); });
}

// graphEnd(keep) -> the graph's id (keep), or 0 with the capture discarded.
Napi::Value GraphEnd(const Napi::CallbackInfo& info) {
  int id = 0;
  Napi::Value r = run(info, [&] { id = cuda::graphEnd(flag(info, 0, "keep")); });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), id);
}

// graphLaunch(id): queues one replay of the graph.
Napi::Value GraphLaunch(const Napi::CallbackInfo& info) {
  return run(info, [&] { cuda::graphLaunch(static_cast<int>(dim(info, 0, "id"))); });
}

// graphDestroy(id) -> the bytes of the blocks the graph held, now back in the cache.
Napi::Value GraphDestroy(const Napi::CallbackInfo& info) {
  size_t bytes = 0;
  Napi::Value r = run(info, [&] { bytes = cuda::graphDestroy(static_cast<int>(dim(info, 0, "id"))); });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), static_cast<double>(bytes));
}

// profile(on): starts or stops the profiler's collection range (`ncu --profile-from-start off` profiles only the
// kernels launched inside it); a no-op when no profiler is attached.
Napi::Value Profile(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    bool on = info.Length() > 0 && info[0].ToBoolean().Value();
    cuda::requireNotCapturing("profile");
    cuda::check(cudaStreamSynchronize(cuda::stream()), "cudaStreamSynchronize");
    cuda::check(on ? cudaProfilerStart() : cudaProfilerStop(), "cudaProfilerStart/Stop");
  });
}

// The bytes of a typed array argument.
std::pair<uint8_t*, size_t> bytesOf(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsTypedArray())
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a typed array"};
  auto a = info[i].As<Napi::TypedArray>();
  return {static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(), a.ByteLength()};
}

// write(pointer, typedArray): host -> device, ordered after the queued kernels. The source is staged before the call
// returns (pageable memory), so the array may change afterwards.
Napi::Value Write(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    cuda::requireNotCapturing("write");  // a captured copy would read the host array again at every replay
    auto [src, n] = bytesOf(info, 1, "data");
    void* p = dev(info, 0, "pointer", static_cast<int64_t>(n));
    if (n) cuda::check(cudaMemcpyAsync(p, src, n, cudaMemcpyHostToDevice, cuda::stream()), "write");
  });
}

// read(pointer, typedArray): device -> host after every queued kernel (a synchronisation).
Napi::Value Read(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    cuda::requireNotCapturing("read");
    auto [dst, n] = bytesOf(info, 1, "out");
    void* p = dev(info, 0, "pointer", static_cast<int64_t>(n));
    if (n) cuda::check(cudaMemcpyAsync(dst, p, n, cudaMemcpyDeviceToHost, cuda::stream()), "read");
    cuda::check(cudaStreamSynchronize(cuda::stream()), "read");
  });
}

// readAsync(pointer, bytes) -> Promise<ArrayBuffer>: the copy is queued on the stream into pinned memory and the
// promise settles from a worker thread that waits for it, so the event loop keeps running meanwhile.
class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, void* src, size_t bytes)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), bytes_(bytes) {
    cuda::check(cudaMallocHost(&pinned_, std::max<size_t>(bytes, 1)), "cudaMallocHost");
    cuda::check(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate");
    if (bytes) cuda::check(cudaMemcpyAsync(pinned_, src, bytes, cudaMemcpyDeviceToHost, cuda::stream()), "readAsync");
    cuda::check(cudaEventRecord(done_, cuda::stream()), "cudaEventRecord");
  }
  ~ReadWorker() override {
    cudaEventDestroy(done_);
    cudaFreeHost(pinned_);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    cudaError_t e = cudaEventSynchronize(done_);
    if (e != cudaSuccess) SetError(std::string("readAsync: ") + cudaGetErrorString(e));
  }
  void OnOK() override {
    Napi::ArrayBuffer out = Napi::ArrayBuffer::New(Env(), bytes_);
    if (bytes_) std::memcpy(out.Data(), pinned_, bytes_);
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  size_t bytes_;
  void* pinned_ = nullptr;
  cudaEvent_t done_ = nullptr;
};

Napi::Value ReadAsync(const Napi::CallbackInfo& info) {
  ReadWorker* w = nullptr;
  Napi::Value r = run(info, [&] {
    cuda::requireNotCapturing("readAsync");
    int64_t n = dim(info, 1, "bytes");
    w = new ReadWorker(info.Env(), dev(info, 0, "pointer", n), static_cast<size_t>(n));
  });
  if (!w) return r;
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// copy(dst, src, bytes): device -> device on the stream.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t n = dim(info, 2, "bytes");
    void* d = dev(info, 0, "dst", n);
    void* s = dev(info, 1, "src", n);
    if (n) cuda::check(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice, cuda::stream()), "copy");
  });
}

// fill(x, value, n)
Napi::Value Fill(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t n = dim(info, 2, "n");
    cuda::fill(f(info, 0, "x", n), static_cast<float>(num(info, 1, "value")), n);
  });
}

// convert(fromDtype, x, toDtype, out, n): dtype codes 0 float32, 1 bfloat16, 2 float16.
Napi::Value Convert(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t from = dim(info, 0, "from"), to = dim(info, 2, "to"), n = dim(info, 4, "n");
    if (from > 2 || to > 2) throw ArgError{"convert: dtype codes are 0 (float32), 1 (bfloat16), 2 (float16)"};
    auto size = [](int64_t t) { return t == 0 ? 4 : 2; };
    cuda::convert(static_cast<cuda::DType>(from), dev(info, 1, "x", n * size(from)), static_cast<cuda::DType>(to),
                  dev(info, 3, "out", n * size(to)), n);
  });
}

// split16(x, toDtype, out, n): out [2n] of dtype 1 (bfloat16) or 2 (float16) = hi then lo, x ≈ hi + lo.
Napi::Value Split16(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t to = dim(info, 1, "to"), n = dim(info, 3, "n");
    if (to != 1 && to != 2) throw ArgError{"split16: the parts' dtype code is 1 (bfloat16) or 2 (float16)"};
    cuda::split16(f(info, 0, "x", n), static_cast<cuda::DType>(to), dev(info, 2, "out", 2 * n * 2), n);
  });
}

// ---- kernels ----

// gemm(dtype, transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch, tf32,
//      outDtype): A and B of dtype, C of outDtype (the same, or float32 for 16-bit operands; default: dtype).
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t dt = dim(info, 0, "dtype");
    int64_t odt = info.Length() > 19 ? dim(info, 19, "outDtype") : dt;
    if (dt > 2 || odt > 2) throw ArgError{"gemm: dtype codes are 0 (float32), 1 (bfloat16), 2 (float16)"};
    if (odt != dt && odt != 0) throw ArgError{"gemm: the output is of the operands' dtype or float32"};
    bool ta = flag(info, 1, "transA"), tb = flag(info, 2, "transB");
    int64_t M = dim(info, 3, "M"), N = dim(info, 4, "N"), K = dim(info, 5, "K");
    float alpha = static_cast<float>(num(info, 6, "alpha")), beta = static_cast<float>(num(info, 13, "beta"));
    int64_t lda = dim(info, 8, "lda"), sA = dim(info, 9, "strideA"), ldb = dim(info, 11, "ldb");
    int64_t sB = dim(info, 12, "strideB"), ldc = dim(info, 15, "ldc"), sC = dim(info, 16, "strideC");
    int64_t batch = dim(info, 17, "batch");
    bool tf32 = flag(info, 18, "tf32");
    // Bytes each operand's last batch entry reaches: ((rows − 1)·ld + cols) elements.
    auto extent = [&](int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t es) {
      if (rows == 0 || cols == 0 || batch == 0) return int64_t(0);
      if (ld < cols) throw ArgError{"gemm: a leading dimension is shorter than its row"};
      return ((batch - 1) * stride + (rows - 1) * ld + cols) * es;
    };
    int64_t es = dt == 0 ? 4 : 2, eo = odt == 0 ? 4 : 2;
    const void* A = dev(info, 7, "A", extent(ta ? K : M, ta ? M : K, lda, sA, es));
    const void* B = dev(info, 10, "B", extent(tb ? N : K, tb ? K : N, ldb, sB, es));
    void* C = dev(info, 14, "C", extent(M, N, ldc, sC, eo));
    cuda::gemm(static_cast<cuda::DType>(dt), static_cast<cuda::DType>(odt), ta, tb, M, N, K, alpha, A, std::max<int64_t>(lda, 1), sA, B,
               std::max<int64_t>(ldb, 1), sB, beta, C, std::max<int64_t>(ldc, 1), sC, batch, tf32);
  });
}
RETNET_KERNEL("gemm", Gemm);

// gemv16(dtype, x, w, y, M, N, K) -> whether it ran: y [M, N] float32 = x [M, K] float32 · w [N, K]ᵀ of dtype
// (1 bfloat16, 2 float16) when gemv16Fits (M ≤ 8, K a multiple of 8, aligned); false (nothing launched) otherwise.
Napi::Value Gemv16(const Napi::CallbackInfo& info) {
  bool ran = false;
  Napi::Value r = run(info, [&] {
    int64_t dt = dim(info, 0, "dtype"), M = dim(info, 4, "M"), N = dim(info, 5, "N"), K = dim(info, 6, "K");
    if (dt != 1 && dt != 2) throw ArgError{"gemv16: the weight's dtype code is 1 (bfloat16) or 2 (float16)"};
    const float* x = f(info, 1, "x", M * K);
    const void* w = dev(info, 2, "w", N * K * 2);
    float* y = f(info, 3, "y", M * N);
    if (!cuda::gemv16Fits(M, K, x, w)) return;
    cuda::gemv16(static_cast<cuda::DType>(dt), x, w, y, M, N, K);
    ran = true;
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Boolean::New(info.Env(), ran);
}
RETNET_KERNEL("gemv16", Gemv16);

// binary(op, a, b, out, n, m)
Napi::Value Binary(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t op = dim(info, 0, "op"), n = dim(info, 4, "n"), m = dim(info, 5, "m");
    if (op >= codes::kBinaryOpCount) throw ArgError{"binary: unknown op"};
    if (n > 0 && (m == 0 || n % m != 0)) throw ArgError{"binary: broadcast length must divide the length"};
    cuda::binary(static_cast<int>(op), f(info, 1, "a", n), f(info, 2, "b", m), f(info, 3, "out", n), n, m);
  });
}
RETNET_KERNEL("binary", Binary);

// scale(a, out, alpha, n)
Napi::Value Scale(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t n = dim(info, 3, "n");
    cuda::scale(f(info, 0, "a", n), f(info, 1, "out", n), static_cast<float>(num(info, 2, "alpha")), n);
  });
}
RETNET_KERNEL("scale", Scale);

// sumRows(g, out, rows, m)
Napi::Value SumRows(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 2, "rows"), m = dim(info, 3, "m");
    cuda::sumRows(f(info, 0, "g", rows * m), f(info, 1, "out", m), rows, m);
  });
}
RETNET_KERNEL("sumRows", SumRows);

// activation(kind, x, out, n); activationBackward(kind, x, g, dx, n): kind 0 GELU (erf), 1 SiLU, 2 ReLU.
Napi::Value Activation(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t kind = dim(info, 0, "kind"), n = dim(info, 3, "n");
    if (kind >= codes::kActivationCount) throw ArgError{"activation: unknown kind"};
    cuda::activation(static_cast<int>(kind), f(info, 1, "x", n), f(info, 2, "out", n), n);
  });
}
RETNET_KERNEL("activation", Activation);

Napi::Value ActivationBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t kind = dim(info, 0, "kind"), n = dim(info, 4, "n");
    if (kind >= codes::kActivationCount) throw ArgError{"activationBackward: unknown kind"};
    cuda::activationBackward(static_cast<int>(kind), f(info, 1, "x", n), f(info, 2, "g", n), f(info, 3, "dx", n), n);
  });
}
RETNET_KERNEL("activationBackward", ActivationBackward);

// rmsNorm(x, w | 0, y, rstd, rows, cols, eps)
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 4, "rows"), cols = dim(info, 5, "cols");
    bool hasW = num(info, 1, "w") != 0;
    cuda::rmsNorm(f(info, 0, "x", rows * cols), nullptr, hasW ? f(info, 1, "w", cols) : nullptr,
                  f(info, 2, "y", rows * cols), f(info, 3, "rstd", rows), rows, cols,
                  static_cast<float>(num(info, 6, "eps")));
  });
}
RETNET_KERNEL("rmsNorm", RmsNorm);

// gatedRmsNorm(x, gate, w | 0, y, rstd, rows, cols, eps)
Napi::Value GatedRmsNorm(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 5, "rows"), cols = dim(info, 6, "cols");
    bool hasW = num(info, 2, "w") != 0;
    cuda::rmsNorm(f(info, 0, "x", rows * cols), f(info, 1, "gate", rows * cols), hasW ? f(info, 2, "w", cols) : nullptr,
                  f(info, 3, "y", rows * cols), f(info, 4, "rstd", rows), rows, cols,
                  static_cast<float>(num(info, 7, "eps")));
  });
}
RETNET_KERNEL("gatedRmsNorm", GatedRmsNorm);

// rmsNormBackward(x, w | 0, rstd, g, dx, dw | 0, rows, cols)
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 6, "rows"), cols = dim(info, 7, "cols");
    bool hasW = num(info, 1, "w") != 0;
    cuda::rmsNormBackward(f(info, 0, "x", rows * cols), nullptr, hasW ? f(info, 1, "w", cols) : nullptr,
                          f(info, 2, "rstd", rows), f(info, 3, "g", rows * cols), f(info, 4, "dx", rows * cols),
                          nullptr, hasW ? f(info, 5, "dw", cols) : nullptr, rows, cols);
  });
}
RETNET_KERNEL("rmsNormBackward", RmsNormBackward);

// gatedRmsNormBackward(x, gate, w | 0, rstd, g, dx, dgate, dw | 0, rows, cols)
Napi::Value GatedRmsNormBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 8, "rows"), cols = dim(info, 9, "cols");
    bool hasW = num(info, 2, "w") != 0;
    cuda::rmsNormBackward(f(info, 0, "x", rows * cols), f(info, 1, "gate", rows * cols),
                          hasW ? f(info, 2, "w", cols) : nullptr, f(info, 3, "rstd", rows), f(info, 4, "g", rows * cols),
                          f(info, 5, "dx", rows * cols), f(info, 6, "dgate", rows * cols),
                          hasW ? f(info, 7, "dw", cols) : nullptr, rows, cols);
  });
}
RETNET_KERNEL("gatedRmsNormBackward", GatedRmsNormBackward);

// layerNorm(x, w, b, y, mean, rstd, rows, cols, eps)
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 6, "rows"), cols = dim(info, 7, "cols");
    cuda::layerNorm(f(info, 0, "x", rows * cols), f(info, 1, "w", cols), f(info, 2, "b", cols),
                    f(info, 3, "y", rows * cols), f(info, 4, "mean", rows), f(info, 5, "rstd", rows), rows, cols,
                    static_cast<float>(num(info, 8, "eps")));
  });
}
RETNET_KERNEL("layerNorm", LayerNorm);

// layerNormBackward(x, w, mean, rstd, g, dx, dw, db, rows, cols)
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 8, "rows"), cols = dim(info, 9, "cols");
    cuda::layerNormBackward(f(info, 0, "x", rows * cols), f(info, 1, "w", cols), f(info, 2, "mean", rows),
                            f(info, 3, "rstd", rows), f(info, 4, "g", rows * cols), f(info, 5, "dx", rows * cols),
                            f(info, 6, "dw", cols), f(info, 7, "db", cols), rows, cols);
  });
}
RETNET_KERNEL("layerNormBackward", LayerNormBackward);

// softmax(x, y, rows, cols); softmaxBackward(y, g, dx, rows, cols)
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 2, "rows"), cols = dim(info, 3, "cols");
    cuda::softmax(f(info, 0, "x", rows * cols), f(info, 1, "y", rows * cols), rows, cols);
  });
}
RETNET_KERNEL("softmax", Softmax);

Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t rows = dim(info, 3, "rows"), cols = dim(info, 4, "cols");
    cuda::softmaxBackward(f(info, 0, "y", rows * cols), f(info, 1, "g", rows * cols), f(info, 2, "dx", rows * cols),
                          rows, cols);
  });
}
RETNET_KERNEL("softmaxBackward", SoftmaxBackward);

// crossEntropy(logits, targets, loss, lse, N, V, ignoreIndex) -> -1, or the first row whose target is out of range.
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  int32_t badAt = -1;
  Napi::Value r = run(info, [&] {
    cuda::requireNotCapturing("crossEntropy");  // its result is read back
    int64_t N = dim(info, 4, "N"), V = dim(info, 5, "V");
    BadIndex bad;
    cuda::crossEntropy(f(info, 0, "logits", N * V), ints(info, 1, "targets", N), f(info, 2, "loss", N),
                       f(info, 3, "lse", N), N, V, static_cast<int32_t>(num(info, 6, "ignoreIndex")), bad.p);
    int32_t v = bad.read();
    badAt = v == INT32_MAX ? -1 : v;
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), badAt);
}
RETNET_KERNEL("crossEntropy", CrossEntropy);

// crossEntropyBackward(logits, targets, lse, g, dx, N, V, ignoreIndex)
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t N = dim(info, 5, "N"), V = dim(info, 6, "V");
    cuda::crossEntropyBackward(f(info, 0, "logits", N * V), ints(info, 1, "targets", N), f(info, 2, "lse", N),
                               f(info, 3, "g", N), f(info, 4, "dx", N * V), N, V,
                               static_cast<int32_t>(num(info, 7, "ignoreIndex")));
  });
}
RETNET_KERNEL("crossEntropyBackward", CrossEntropyBackward);

// embedding(table, ids, out, n, D, V) -> -1, or the first position whose id is out of range.
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  int32_t badAt = -1;
  Napi::Value r = run(info, [&] {
    int64_t n = dim(info, 3, "n"), D = dim(info, 4, "D"), V = dim(info, 5, "V");
    const float* table = f(info, 0, "table", V * D);
    const int32_t* ids = ints(info, 1, "ids", n);
    float* out = f(info, 2, "out", n * D);
    // Captured, the ids are checked by whoever writes them before each replay (the kernel still writes NaN rows for
    // ids out of range, never reading outside the table).
    if (cuda::capturing()) return cuda::embedding(table, ids, out, n, D, V, nullptr);
    BadIndex bad;
    cuda::embedding(table, ids, out, n, D, V, bad.p);
    int32_t v = bad.read();
    badAt = v == INT32_MAX ? -1 : v;
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), badAt);
}
RETNET_KERNEL("embedding", Embedding);

// embeddingBackward(g, ids, out, n, D, V): out [V, D] zero-filled first here.
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t n = dim(info, 3, "n"), D = dim(info, 4, "D"), V = dim(info, 5, "V");
    float* out = f(info, 2, "out", V * D);
    cuda::fill(out, 0.0f, V * D);
    cuda::embeddingBackward(f(info, 0, "g", n * D), ints(info, 1, "ids", n), out, n, D, V);
  });
}
RETNET_KERNEL("embeddingBackward", EmbeddingBackward);

// permute(x, out, shape Int32Array, perm Int32Array): 4-byte elements, rank ≤ 8.
Napi::Value Permute(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    auto shape = i32(info, 2, "shape");
    auto perm = i32(info, 3, "perm");
    if (shape.length > 8 || perm.length != shape.length) throw ArgError{"permute: rank ≤ 8 and one perm entry a dim"};
    int64_t s[8], n = 1;
    int p[8];
    for (size_t d = 0; d < shape.length; d++) {
      s[d] = shape.data[d];
      p[d] = perm.data[d];
      if (p[d] < 0 || static_cast<size_t>(p[d]) >= shape.length) throw ArgError{"permute: perm entry out of range"};
      n *= s[d];
    }
    cuda::permute(static_cast<const uint32_t*>(dev(info, 0, "x", n * 4)),
                  static_cast<uint32_t*>(dev(info, 1, "out", n * 4)), static_cast<int>(shape.length), s, p);
  });
}
RETNET_KERNEL("permute", Permute);

// copyBlocks(src, srcOff, srcStride, dst, dstOff, dstStride, blocks, len): 4-byte elements.
Napi::Value CopyBlocks(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t so = dim(info, 1, "srcOff"), ss = dim(info, 2, "srcStride"), dO = dim(info, 4, "dstOff");
    int64_t ds = dim(info, 5, "dstStride"), blocks = dim(info, 6, "blocks"), len = dim(info, 7, "len");
    int64_t needS = blocks == 0 || len == 0 ? 0 : so + (blocks - 1) * ss + len;
    int64_t needD = blocks == 0 || len == 0 ? 0 : dO + (blocks - 1) * ds + len;
    cuda::copyBlocks(static_cast<const uint32_t*>(dev(info, 0, "src", needS * 4)), so, ss,
                     static_cast<uint32_t*>(dev(info, 3, "dst", needD * 4)), dO, ds, blocks, len);
  });
}
RETNET_KERNEL("copyBlocks", CopyBlocks);

// adamw(params[], grads[], m[], v[], sizes[], lr, beta1, beta2, eps, weightDecay, step, gradScale): arrays of device
// pointers (numbers) and element counts; one launch per 256 tensors.
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    auto list = [&](size_t i, const char* what) {
      if (i >= info.Length() || !info[i].IsArray()) throw ArgError{std::string(what) + " must be an array"};
      return info[i].As<Napi::Array>();
    };
    Napi::Array P = list(0, "params"), G = list(1, "grads"), M = list(2, "m"), Vv = list(3, "v"), S = list(4, "sizes");
    uint32_t n = P.Length();
    if (G.Length() != n || M.Length() != n || Vv.Length() != n || S.Length() != n)
      throw ArgError{"adamw: params, grads, m, v and sizes must have one entry per tensor"};
    int64_t step = dim(info, 10, "step");
    if (step < 1) throw ArgError{"adamw: step counts from 1"};
    double lr = num(info, 5, "lr"), b1 = num(info, 6, "beta1"), b2 = num(info, 7, "beta2");
    cuda::AdamWArgs a{static_cast<float>(lr), static_cast<float>(b1), static_cast<float>(b2),
                      static_cast<float>(num(info, 8, "eps")), static_cast<float>(num(info, 9, "weightDecay")),
                      static_cast<float>(num(info, 11, "gradScale")),
                      static_cast<float>(1.0 / (1.0 - std::pow(b1, static_cast<double>(step)))),
                      static_cast<float>(1.0 / (1.0 - std::pow(b2, static_cast<double>(step))))};
    std::vector<float*> pp(n), pm(n), pv(n);
    std::vector<const float*> pg(n);
    std::vector<int64_t> sizes(n);
    auto ptr = [&](Napi::Array& arr, uint32_t i, int64_t size, const char* what) {
      Napi::Value x = arr.Get(i);
      if (!x.IsNumber()) throw ArgError{std::string("adamw: ") + what + " entries must be device pointers"};
      double d = x.As<Napi::Number>().DoubleValue();
      void* p = reinterpret_cast<void*>(static_cast<uintptr_t>(d));
      if (cuda::spanFrom(p) < static_cast<size_t>(size) * 4)
        throw ArgError{std::string("adamw: ") + what + " " + std::to_string(i) + " is smaller than its size"};
      return static_cast<float*>(p);
    };
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value s = S.Get(i);
      if (!s.IsNumber()) throw ArgError{"adamw: sizes must be numbers"};
      sizes[i] = static_cast<int64_t>(s.As<Napi::Number>().DoubleValue());
      pp[i] = ptr(P, i, sizes[i], "param");
      pg[i] = ptr(G, i, sizes[i], "grad");
      pm[i] = ptr(M, i, sizes[i], "m");
      pv[i] = ptr(Vv, i, sizes[i], "v");
    }
    cuda::adamwMany(pp.data(), pg.data(), pm.data(), pv.data(), sizes.data(), static_cast<int>(n), a);
  });
}
RETNET_KERNEL("adamw", AdamW);

// sumSquares(x, n) -> number (a synchronisation)
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  double total = 0;
  Napi::Value r = run(info, [&] {
    cuda::requireNotCapturing("sumSquares");
    int64_t n = dim(info, 1, "n");
    double* acc = static_cast<double*>(cuda::allocate(8));
    try {
      cuda::sumSquares(f(info, 0, "x", n), n, acc);
      cuda::check(cudaMemcpyAsync(&total, acc, 8, cudaMemcpyDeviceToHost, cuda::stream()), "sumSquares");
      cuda::check(cudaStreamSynchronize(cuda::stream()), "sumSquares");
    } catch (...) {
      cuda::release(acc);
      throw;
    }
    cuda::release(acc);
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), total);
}
RETNET_KERNEL("sumSquares", SumSquares);

// rotary(x, cos, sin, y, B, T, H, K, perBatch, inverse, halves)
Napi::Value Rotary(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t B = dim(info, 4, "B"), T = dim(info, 5, "T"), H = dim(info, 6, "H"), K = dim(info, 7, "K");
    bool perBatch = flag(info, 8, "perBatch");
    if (K % 2 != 0) throw ArgError{"rotary: head dim must be even"};
    int64_t table = (perBatch ? B : 1) * T * K;
    cuda::rotary(f(info, 0, "x", B * T * H * K), f(info, 1, "cos", table), f(info, 2, "sin", table),
                 f(info, 3, "y", B * T * H * K), B, T, H, K, perBatch, flag(info, 10, "halves"),
                 flag(info, 9, "inverse"));
  });
}
RETNET_KERNEL("rotary", Rotary);

// retentionWorkspace(kernel, B, H, T, K, V, C, tensorCores) -> floats of scratch
Napi::Value RetentionWorkspace(const Napi::CallbackInfo& info) {
  int64_t n = 0;
  Napi::Value r = run(info, [&] {
    int64_t kernel = dim(info, 0, "kernel");
    if (kernel >= codes::kRetentionWorkCount) throw ArgError{"retentionWorkspace: unknown kernel"};
    n = cuda::retentionWorkspace(static_cast<int>(kernel), dims(info, 1), std::max<int64_t>(1, dim(info, 6, "C")),
                                 flag(info, 7, "tensorCores"));
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}
RETNET_KERNEL("retentionWorkspace", RetentionWorkspace);

// A device pointer argument that may be 0 (none); otherwise with room for n floats.
float* optional(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t n) {
  return num(info, i, what) == 0 ? nullptr : f(info, i, what, n);
}

// retentionForward(work ParallelForward | ChunkwiseForward, q, k, v, gammas, o, r, ws, initState, initScale,
// finalState, finalScale, segments, B, H, T, K, V, C, normalize, tensorCores): the state pointers 0 for none,
// segments a Float64Array of lengths (empty: one sequence per batch row).
Napi::Value RetentionForward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t form = dim(info, 0, "work");
    if (form != code(RetentionWork::ParallelForward) && form != code(RetentionWork::ChunkwiseForward))
      throw ArgError{"retentionForward: work must be a forward kernel"};
    Dims d = dims(info, 13);
    int64_t C = dim(info, 18, "C");
    bool chunkwise = form == code(RetentionWork::ChunkwiseForward);
    if (chunkwise && C < 1) throw ArgError{"retention: chunk size must be at least 1"};
    auto g = gammas(info, 4, d.H, "retention");
    cuda::RetentionRun rr{nullptr, nullptr, nullptr, nullptr, {}, flag(info, 19, "normalize"),
                          flag(info, 20, "tensorCores")};
    auto seg = f64(info, 12, "segments");
    if (seg.length > 0) {
      if (d.B != 1) throw ArgError{"retentionForward: segments need a batch of one row"};
      int64_t total = 0;
      for (size_t i = 0; i < seg.length; i++) {
        double n = seg.data[i];
        if (!(n >= 0 && n == std::floor(n))) throw ArgError{"retentionForward: segment lengths must be integers >= 0"};
        rr.segments.push_back(static_cast<int64_t>(n));
        total += static_cast<int64_t>(n);
      }
      if (total != d.T) throw ArgError{"retentionForward: segment lengths must sum to T"};
    }
    int64_t N = rr.segments.empty() ? d.B : static_cast<int64_t>(rr.segments.size());
    int64_t nq = d.B * d.T * d.H * d.K, nv = d.B * d.T * d.H * d.V, nState = N * d.H * d.K * d.V;
    rr.initState = optional(info, 8, "initState", nState);
    rr.initScale = optional(info, 9, "initScale", N * d.H);
    rr.finalState = optional(info, 10, "finalState", nState);
    rr.finalScale = optional(info, 11, "finalScale", N * d.H);
    if (!rr.initState != !rr.initScale || !rr.finalState != !rr.finalScale)
      throw ArgError{"retentionForward: a state and its scale come together"};
    int64_t ws = cuda::retentionWorkspace(static_cast<int>(form), d, C, rr.tensorCores);
    const float *q = f(info, 1, "q", nq), *k = f(info, 2, "k", nq), *v = f(info, 3, "v", nv);
    float *o = f(info, 5, "o", nv), *r = f(info, 6, "r", d.B * d.H * d.T), *w = f(info, 7, "workspace", ws);
    cuda::retentionForward(chunkwise, q, k, v, g.data(), o, r, w, d, C, rr);
  });
}
RETNET_KERNEL("retentionForward", RetentionForward);

// retentionBackward(q, k, v, gammas, r, dO, dq, dk, dv, ws, B, H, T, K, V, C, tensorCores): every form's gradient,
// chunkwise.
Napi::Value RetentionBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    Dims d = dims(info, 10);
    int64_t C = std::max<int64_t>(1, dim(info, 15, "C"));
    auto g = gammas(info, 3, d.H, "retention backward");
    int64_t nq = d.B * d.T * d.H * d.K, nv = d.B * d.T * d.H * d.V;
    bool tensorCores = flag(info, 16, "tensorCores");
    int64_t ws = cuda::retentionWorkspace(static_cast<int>(RetentionWork::ChunkwiseBackward), d, C, tensorCores);
    cuda::retentionBackward(f(info, 0, "q", nq), f(info, 1, "k", nq), f(info, 2, "v", nv), g.data(),
                            f(info, 4, "r", d.B * d.H * d.T), f(info, 5, "dO", nv), f(info, 6, "dq", nq),
                            f(info, 7, "dk", nq), f(info, 8, "dv", nv), f(info, 9, "workspace", ws), d, C,
                            tensorCores);
  });
}
RETNET_KERNEL("retentionBackward", RetentionBackward);

// retentionStep(q, k, v, gammas, state, scale, o, B, H, K, V, normalize, state16): state float32, or float16 bits
// (state16).
Napi::Value RetentionStep(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t B = dim(info, 7, "B"), H = dim(info, 8, "H"), K = dim(info, 9, "K"), V = dim(info, 10, "V");
    auto g = gammas(info, 3, H, "retentionStep");
    bool state16 = flag(info, 12, "state16");
    cuda::retentionStep(f(info, 0, "q", B * H * K), f(info, 1, "k", B * H * K), f(info, 2, "v", B * H * V), g.data(),
                        dev(info, 4, "state", B * H * K * V * (state16 ? 2 : 4)), state16, f(info, 5, "scale", B * H),
                        f(info, 6, "o", B * H * V), B, H, K, V, flag(info, 11, "normalize"));
  });
}
RETNET_KERNEL("retentionStep", RetentionStep);

// attentionWorkspace(kernel, B, H, T, K, V) -> floats of scratch
Napi::Value AttentionWorkspace(const Napi::CallbackInfo& info) {
  int64_t n = 0;
  Napi::Value r = run(info, [&] {
    int64_t kernel = dim(info, 0, "kernel");
    if (kernel >= codes::kAttentionWorkCount) throw ArgError{"attentionWorkspace: unknown kernel"};
    n = cuda::attentionWorkspace(static_cast<int>(kernel), dims(info, 1));
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}
RETNET_KERNEL("attentionWorkspace", AttentionWorkspace);

// attentionForward(work NaiveForward | FlashForward, q, k, v, o, stats, B, H, T, K, V)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t w = dim(info, 0, "work");
    bool naive = w == code(AttentionWork::NaiveForward);
    if (!naive && w != code(AttentionWork::FlashForward)) throw ArgError{"attentionForward: work must be a forward kernel"};
    Dims d = dims(info, 6);
    int64_t nq = d.B * d.T * d.H * d.K, nv = d.B * d.T * d.H * d.V, bht = d.B * d.H * d.T;
    const float *q = f(info, 1, "q", nq), *k = f(info, 2, "k", nq), *v = f(info, 3, "v", nv);
    float* o = f(info, 4, "o", nv);
    if (naive) cuda::attentionNaive(q, k, v, o, f(info, 5, "p", bht * d.T), d);
    else cuda::attentionFlash(q, k, v, o, f(info, 5, "lse", bht), d);
  });
}
RETNET_KERNEL("attentionForward", AttentionForward);

// attentionBackward(work NaiveBackward | FlashBackward, q, k, v, o, stats, dO, dq, dk, dv, ws, B, H, T, K, V)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t w = dim(info, 0, "work");
    bool naive = w == code(AttentionWork::NaiveBackward);
    if (!naive && w != code(AttentionWork::FlashBackward)) throw ArgError{"attentionBackward: work must be a backward kernel"};
    Dims d = dims(info, 11);
    int64_t nq = d.B * d.T * d.H * d.K, nv = d.B * d.T * d.H * d.V, bht = d.B * d.H * d.T;
    const float *q = f(info, 1, "q", nq), *k = f(info, 2, "k", nq), *v = f(info, 3, "v", nv);
    const float* g = f(info, 6, "dO", nv);
    float *dq = f(info, 7, "dq", nq), *dk = f(info, 8, "dk", nq), *dv = f(info, 9, "dv", nv);
    float* ws = f(info, 10, "workspace", bht);
    if (naive) cuda::attentionNaiveBackward(q, k, v, f(info, 5, "p", bht * d.T), g, dq, dk, dv, ws, d);
    else cuda::attentionFlashBackward(q, k, v, f(info, 4, "o", nv), f(info, 5, "lse", bht), g, dq, dk, dv, ws, d);
  });
}
RETNET_KERNEL("attentionBackward", AttentionBackward);

// attentionDecode(q, kCache, vCache, lengths (device int32 [B]), o, ws, B, H, C, K, V): ws holds
// attentionWorkspace(4, B, H, C, K, V) floats.
Napi::Value AttentionDecode(const Napi::CallbackInfo& info) {
  return run(info, [&] {
    int64_t B = dim(info, 6, "B"), H = dim(info, 7, "H"), C = dim(info, 8, "C"), K = dim(info, 9, "K");
    int64_t V = dim(info, 10, "V");
    cuda::attentionDecode(f(info, 0, "q", B * H * K), f(info, 1, "kCache", B * H * C * K),
                          f(info, 2, "vCache", B * H * C * V), ints(info, 3, "lengths", B), f(info, 4, "o", B * H * V),
                          f(info, 5, "ws", cuda::attentionWorkspace(4, cuda::Dims{B, H, C, K, V})), B, H, C, K, V);
  });
}
RETNET_KERNEL("attentionDecode", AttentionDecode);

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (auto& [name, fn] : kernelRegistry()) exports.Set(name, Napi::Function::New(env, fn, name));
  const std::pair<const char*, KernelFn> device[] = {
      {"available", Available}, {"info", Info},     {"alloc", Alloc},         {"free", Free},
      {"memory", Memory},       {"emptyCache", EmptyCache}, {"synchronize", Synchronize}, {"profile", Profile}, {"write", Write},
      {"read", Read},           {"readAsync", ReadAsync},   {"copy", Copy},   {"fill", Fill},
      {"convert", Convert},     {"split16", Split16}, {"graphBegin", GraphBegin}, {"graphEnd", GraphEnd},
      {"graphLaunch", GraphLaunch}, {"graphDestroy", GraphDestroy}};
  for (auto& [name, fn] : device) exports.Set(name, Napi::Function::New(env, fn, name));
  return exports;
}

}  // namespace retnet

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return retnet::Init(env, exports); }

NODE_API_MODULE(retnet_cuda, InitAddon)
