// Node-API bindings of the low-precision products (lowp.h) and the read-bandwidth probe the lowp benchmark uses.
//   lowpGemv(format, isa, N, K, B, W, scales, x, y, workspace)
//       y [B, N] = x [B, K] · Wᵀ for W in `format` (lowp.h codes: 0 f32, 1 bf16, 2 int8, 3 q4, 4 f16) with the variant `isa`
//       (-1: the fastest this CPU has). W, scales: typed arrays over the stored bytes (scales empty for f32/bf16).
//   lowpGemvShared(format, isa, K, B, x, workspace, N_0, W_0, scales_0, y_0, N_1, W_1, scales_1, y_1, ...)
//       y_i [B, N_i] = x [B, K] · W_iᵀ for weights of one format and K sharing x (lowp.h gemvShared: x prepared once,
//       one job for the threads). workspace: lowpWorkspace(format, isa, B, K) bytes, as for one product.
//   lowpWorkspace(format, isa, B, K) -> bytes of workspace lowpGemv needs (a Uint8Array of at least that many).
//   lowpTiled(format, N, K, R, W, scales, x, y, tiles), lowpTiledFloats(N, K): the same product for more rows, through
//       float32 tiles of W and sgemm (tiles: a Float32Array of lowpTiledFloats floats).
//   lowpVariants() -> {format: [isa names this CPU can run]}, lowpBest() -> {format: isa name}
//   streamRead(bytes: Uint8Array, threads) -> a float depending on every byte (time it for GB/s).
// Threads: the count setThreads chose (omp_get_max_threads), through the chunk-claiming pool of workers.h.
#include <string>
#include <vector>

#include "common.h"
#include "lowp.h"

namespace retnet {
namespace {

struct Bytes {
  const uint8_t* data;
  size_t length;
};

Bytes bytesOf(const Napi::CallbackInfo& info, size_t i, const char* what) {
  TypedArg a;
  if (!typedArg(info, i, &a))
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a typed array"};
  size_t size = 1;
  switch (a.type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array: size = 1; break;
    case napi_int16_array:
    case napi_uint16_array: size = 2; break;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array: size = 4; break;
    default: size = 8; break;  // float64, bigint64, biguint64
  }
  return {static_cast<const uint8_t*>(a.data), a.length * size};
}

lowp::Format formatOf(const Napi::CallbackInfo& info, size_t i) {
  int64_t f = dim(info, i, "format");
  if (f > 4)
    throw ArgError{"lowp: format must be 0 (f32), 1 (bf16), 2 (int8), 3 (q4) or 4 (f16), got " + std::to_string(f)};
  return static_cast<lowp::Format>(f);
}

lowp::Isa isaOf(const Napi::CallbackInfo& info, size_t i, lowp::Format f) {
  double v = num(info, i, "isa");
  if (v == -1) return lowp::Isa::best;
  if (v != 0 && v != 1 && v != 2 && v != 3 && v != 4) throw ArgError{"lowp: isa must be -1, 0, 1, 2, 3 or 4"};
  auto isa = static_cast<lowp::Isa>(static_cast<int>(v));
  if (!lowp::hasVariant(f, isa))
    throw ArgError{std::string("lowp: no ") + lowp::isaName(isa) + " variant for this format"};
  if (!lowp::cpuHas(isa)) throw ArgError{std::string("lowp: this CPU cannot run the ") + lowp::isaName(isa) + " variant"};
  return isa;
}

// The weight of a call: W and its scales (arguments i, i + 1), checked against the bytes the format needs.
lowp::Weights weightsOf(const Napi::CallbackInfo& info, size_t i, lowp::Format f, int64_t N, int64_t K,
                        const char* kernel) {
  Bytes w = bytesOf(info, i, "W"), s = bytesOf(info, i + 1, "scales");
  int64_t Kp = lowp::q4PaddedK(K), data = 0, scales = 0;
  switch (f) {
    case lowp::Format::f32: data = 4 * N * K; break;
    case lowp::Format::bf16:
    case lowp::Format::f16: data = 2 * N * K; break;
    case lowp::Format::int8: data = N * K, scales = 4 * N; break;
    case lowp::Format::q4: data = N * Kp / 2, scales = 2 * N * (Kp / lowp::kQ4Block); break;
  }
  if (static_cast<int64_t>(w.length) != data || static_cast<int64_t>(s.length) != scales)
    throw ArgError{std::string(kernel) + ": W holds " + std::to_string(w.length) + " bytes and scales " +
                   std::to_string(s.length) + ", a [" + std::to_string(N) + ", " + std::to_string(K) +
                   "] weight needs " + std::to_string(data) + " and " + std::to_string(scales)};
  return {f, N, K, w.data, s.length > 0 ? s.data : nullptr};
}

Napi::Value LowpGemv(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    lowp::Format f = formatOf(info, 0);
    lowp::Isa isa = isaOf(info, 1, f);
    int64_t N = dim(info, 2, "N"), K = dim(info, 3, "K"), B = dim(info, 4, "B");
    lowp::Weights wt = weightsOf(info, 5, f, N, K, "lowpGemv");
    auto x = f32(info, 7, "x"), y = f32(info, 8, "y");
    Bytes ws = bytesOf(info, 9, "workspace");
    require(x, B * K, "lowpGemv", "x");
    require(y, B * N, "lowpGemv", "y");
    int64_t need = lowp::workspaceBytes(f, isa, B, K);
    if (static_cast<int64_t>(ws.length) < need)
      throw ArgError{"lowpGemv: workspace holds " + std::to_string(ws.length) + " bytes, needs " + std::to_string(need)};
    lowp::gemv(wt, x.data, B, y.data, N, const_cast<uint8_t*>(ws.data), isa, omp_get_max_threads());
  });
}
RETNET_KERNEL("lowpGemv", LowpGemv);

Napi::Value LowpGemvShared(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    lowp::Format f = formatOf(info, 0);
    lowp::Isa isa = isaOf(info, 1, f);
    int64_t K = dim(info, 2, "K"), B = dim(info, 3, "B");
    auto x = f32(info, 4, "x");
    Bytes ws = bytesOf(info, 5, "workspace");
    require(x, B * K, "lowpGemvShared", "x");
    if (info.Length() < 10 || (info.Length() - 6) % 4 != 0)
      throw ArgError{"lowpGemvShared: after the workspace come (N, W, scales, y) for each weight, at least one"};
    const int64_t count = static_cast<int64_t>(info.Length() - 6) / 4;
    std::vector<lowp::Weights> wts;
    std::vector<float*> ys;
    for (int64_t i = 0; i < count; i++) {
      const size_t at = 6 + 4 * static_cast<size_t>(i);
      int64_t N = dim(info, at, "N");
      wts.push_back(weightsOf(info, at + 1, f, N, K, "lowpGemvShared"));
      auto y = f32(info, at + 3, "y");
      require(y, B * N, "lowpGemvShared", "y");
      ys.push_back(y.data);
    }
    int64_t need = lowp::workspaceBytes(f, isa, B, K);
    if (static_cast<int64_t>(ws.length) < need)
      throw ArgError{"lowpGemvShared: workspace holds " + std::to_string(ws.length) + " bytes, needs " +
                     std::to_string(need)};
    lowp::gemvShared(wts.data(), count, x.data, B, ys.data(), const_cast<uint8_t*>(ws.data), isa,
                     omp_get_max_threads());
  });
}
RETNET_KERNEL("lowpGemvShared", LowpGemvShared);

// lowpTiled(format, N, K, R, W, scales, x, y, tiles): y [R, N] = x [R, K] · Wᵀ through float32 tiles and sgemm
// (lowp.h tiledProduct); tiles: a Float32Array of lowpTiledFloats(N, K) floats.
Napi::Value LowpTiled(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    lowp::Format f = formatOf(info, 0);
    int64_t N = dim(info, 1, "N"), K = dim(info, 2, "K"), R = dim(info, 3, "R");
    lowp::Weights wt = weightsOf(info, 4, f, N, K, "lowpTiled");
    auto x = f32(info, 6, "x"), y = f32(info, 7, "y"), tiles = f32(info, 8, "tiles");
    require(x, R * K, "lowpTiled", "x");
    require(y, R * N, "lowpTiled", "y");
    int threads = omp_get_max_threads();
    require(tiles, lowp::tiledFloats(N, K, threads), "lowpTiled", "tiles");
    if (R == 0 || N == 0) return;
    lowp::tiledProduct(wt, x.data, R, y.data, tiles.data, threads);
  });
}
RETNET_KERNEL("lowpTiled", LowpTiled);

Napi::Value LowpTiledFloats(const Napi::CallbackInfo& info) {
  int64_t floats = 0;
  Napi::Value r = guard(info, [&] {
    floats = lowp::tiledFloats(dim(info, 0, "N"), dim(info, 1, "K"), omp_get_max_threads());
  });
  return info.Env().IsExceptionPending() ? r : Napi::Number::New(info.Env(), static_cast<double>(floats));
}
RETNET_KERNEL("lowpTiledFloats", LowpTiledFloats);

Napi::Value LowpWorkspace(const Napi::CallbackInfo& info) {
  int64_t bytes = 0;
  Napi::Value r = guard(info, [&] {
    lowp::Format f = formatOf(info, 0);
    bytes = lowp::workspaceBytes(f, isaOf(info, 1, f), dim(info, 2, "B"), dim(info, 3, "K"));
  });
  return info.Env().IsExceptionPending() ? r : Napi::Number::New(info.Env(), static_cast<double>(bytes));
}
RETNET_KERNEL("lowpWorkspace", LowpWorkspace);

const char* kFormatNames[] = {"f32", "bf16", "int8", "q4", "f16"};

Napi::Value LowpVariants(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  for (int fi = 0; fi < 5; fi++) {
    auto f = static_cast<lowp::Format>(fi);
    Napi::Array a = Napi::Array::New(env);
    uint32_t n = 0;
    for (lowp::Isa isa :
         {lowp::Isa::scalar, lowp::Isa::avx2, lowp::Isa::avx512bf16, lowp::Isa::avx512vnni, lowp::Isa::avx512})
      if (lowp::hasVariant(f, isa) && lowp::cpuHas(isa)) a.Set(n++, Napi::String::New(env, lowp::isaName(isa)));
    o.Set(kFormatNames[fi], a);
  }
  return o;
}
RETNET_KERNEL("lowpVariants", LowpVariants);

Napi::Value LowpBest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  for (int fi = 0; fi < 5; fi++)
    o.Set(kFormatNames[fi], Napi::String::New(env, lowp::isaName(lowp::bestIsa(static_cast<lowp::Format>(fi)))));
  return o;
}
RETNET_KERNEL("lowpBest", LowpBest);

Napi::Value StreamRead(const Napi::CallbackInfo& info) {
  float s = 0.0f;
  Napi::Value r = guard(info, [&] {
    Bytes b = bytesOf(info, 0, "bytes");
    int64_t t = dim(info, 1, "threads");
    s = lowp::streamRead(b.data, static_cast<int64_t>(b.length), t < 1 ? 1 : static_cast<int>(t));
  });
  return info.Env().IsExceptionPending() ? r : Napi::Number::New(info.Env(), s);
}
RETNET_KERNEL("streamRead", StreamRead);

}  // namespace
}  // namespace retnet
