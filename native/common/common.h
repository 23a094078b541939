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

inline Span<float> f32(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a Float32Array"};
  auto a = info[i].As<Napi::Float32Array>();
  return {a.Data(), a.ElementLength()};
}

inline Span<double> f64(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a Float64Array"};
  auto a = info[i].As<Napi::Float64Array>();
  return {a.Data(), a.ElementLength()};
}

inline Span<int32_t> i32(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be an Int32Array"};
  auto a = info[i].As<Napi::Int32Array>();
  return {a.Data(), a.ElementLength()};
}

inline double num(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a number"};
  return info[i].As<Napi::Number>().DoubleValue();
}

inline int64_t dim(const Napi::CallbackInfo& info, size_t i, const char* what) {
  double v = num(info, i, what);
  if (v < 0 || v != static_cast<double>(static_cast<int64_t>(v)))
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a non-negative integer"};
  return static_cast<int64_t>(v);
}

inline bool flag(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsBoolean())
    throw ArgError{std::string("argument ") + std::to_string(i) + " (" + what + ") must be a boolean"};
  return info[i].As<Napi::Boolean>().Value();
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

}  // namespace retnet
