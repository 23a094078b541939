// Shared helpers for the retnet native addon: argument access, kernel registry, threading.
//
// Every kernel works on caller-owned typed arrays (the TypeScript backend allocates all outputs), so the addon never
// owns memory and the engine's byte accounting stays exact. Kernels check buffer lengths before touching memory:
// a bad call is a JavaScript exception, never an out-of-bounds write.
#pragma once

#include <napi.h>
#include <omp.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "codes.h"

namespace retnet {

using KernelFn = Napi::Value (*)(const Napi::CallbackInfo&);

// Each kernel file registers its functions with a static Registrar, so adding a kernel family means adding one file.
std::vector<std::pair<std::string, KernelFn>>& kernelRegistry();

struct Registrar {
  Registrar(const char* name, KernelFn fn) { kernelRegistry().emplace_back(name, fn); }
};

#define RETNET_KERNEL(name, fn) static ::retnet::Registrar registrar_##fn(name, fn)

// Thrown inside argument helpers; caught once per call by the KERNEL_GUARD wrapper and turned into a JS TypeError.
struct ArgError {
  std::string message;
};

template <typename T>
struct Span {
  T* data;
  size_t length;
};

// Typed-array and number arguments are read with one Node-API call each (napi_get_typedarray_info, which also
// answers whether the value is a typed array at all; napi_get_value_double / _bool, which fail on other types): the
// node-addon-api wrappers (IsTypedArray, As<TypedArray>().TypedArrayType(), As<Float32Array>()) took four, and a
// decode step makes ~15 small calls per layer, most of whose time is argument handling (addon.binary on 2048 floats:
// 1.08 µs per call before).
struct TypedArg {
  napi_typedarray_type type;
  void* data;     // the first element (the buffer's data plus the view's byte offset)
  size_t length;  // elements
};

// Argument i as a typed array, or false when it is missing or not one.
inline bool typedArg(const Napi::CallbackInfo& info, size_t i, TypedArg* out) {
  if (i >= info.Length()) return false;
  return napi_get_typedarray_info(info.Env(), info[i], &out->type, &out->length, &out->data, nullptr, nullptr) ==
         napi_ok;
}

template <typename T>
inline Span<T> typedOf(const Napi::CallbackInfo& info, size_t i, const char* what, napi_typedarray_type type,
                       const char* typeName) {
  TypedArg a;
  if (!typedArg(info, i, &a) || a.type != type)
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be " + typeName};
  return {static_cast<T*>(a.data), a.length};
}

inline Span<float> f32(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return typedOf<float>(info, i, what, napi_float32_array, "a Float32Array");
}

inline Span<double> f64(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return typedOf<double>(info, i, what, napi_float64_array, "a Float64Array");
}

inline Span<int32_t> i32(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return typedOf<int32_t>(info, i, what, napi_int32_array, "an Int32Array");
}

inline double num(const Napi::CallbackInfo& info, size_t i, const char* what) {
  double v;
  if (i >= info.Length() || napi_get_value_double(info.Env(), info[i], &v) != napi_ok)
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a number"};
  return v;
}

inline int64_t dim(const Napi::CallbackInfo& info, size_t i, const char* what) {
  double v = num(info, i, what);
  if (v < 0 || v != static_cast<double>(static_cast<int64_t>(v)))
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a non-negative integer"};
  return static_cast<int64_t>(v);
}

inline bool flag(const Napi::CallbackInfo& info, size_t i, const char* what) {
  bool v;
  if (i >= info.Length() || napi_get_value_bool(info.Env(), info[i], &v) != napi_ok)
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a boolean"};
  return v;
}

// Throws unless a buffer holds at least `need` elements.
template <typename T>
inline void require(const Span<T>& s, int64_t need, const char* kernel, const char* what) {
  if (need < 0 || s.length < static_cast<size_t>(need))
    throw ArgError{std::string(kernel) + ": " + what + " holds " + std::to_string(s.length) + " elements, needs " +
                   std::to_string(need)};
}

// Runs a kernel body and converts argument errors into a JS TypeError.
inline Napi::Value guard(const Napi::CallbackInfo& info, const std::function<void()>& body) {
  try {
    body();
  } catch (const ArgError& e) {
    Napi::TypeError::New(info.Env(), e.message).ThrowAsJavaScriptException();
  }
  return info.Env().Undefined();
}

// Work below this many elements runs on one thread: waking the pool costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

// f(i) for i in [0, n): split over OpenMP's threads (static schedule) when `parallel`, else a plain loop on the calling
// thread. `#pragma omp parallel for if (false)` still starts a team of one through libgomp (GOMP_parallel): 0.36
// against 0.09 µs for an add of 2048 floats (g++ -O3, OMP_WAIT_POLICY=passive, this 2-core Zen 5), and a decode step's
// small kernels (norms, rotations, elementwise) all run below kParallelGrain, ~15 calls per layer.
template <class F>
inline void parallelFor(int64_t n, bool parallel, const F& f) {
  if (!parallel) {
    for (int64_t i = 0; i < n; i++) f(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) f(i);
}

}  // namespace retnet
