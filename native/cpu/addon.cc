// Module entry: exports every registered kernel plus the thread/BLAS controls used by `retnet info`.
#include <cblas.h>

#include <cstdlib>

#include "common.h"

namespace retnet {

std::vector<std::pair<std::string, KernelFn>>& kernelRegistry() {
  static std::vector<std::pair<std::string, KernelFn>> registry;
  return registry;
}

// One thread count for both our OpenMP kernels and OpenBLAS. They never run at the same time (a kernel finishes
// before the next BLAS call starts), so each may use every thread without oversubscription.
static void setThreads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    int64_t n = dim(info, 0, "threads");
    if (n < 1) throw ArgError{"setThreads: thread count must be at least 1"};
    setThreads(static_cast<int>(n));
  });
}

static Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("blas", Napi::String::New(env, "OpenBLAS"));
  o.Set("blasConfig", Napi::String::New(env, openblas_get_config()));
  o.Set("blasCoreType", Napi::String::New(env, openblas_get_corename()));
  o.Set("blasThreads", Napi::Number::New(env, openblas_get_num_threads()));
  o.Set("threads", Napi::Number::New(env, omp_get_max_threads()));
  o.Set("openmp", Napi::Number::New(env, _OPENMP));
  o.Set("compiler", Napi::String::New(env, __VERSION__));
  // Which build of binding.gyp this is (baseline or avx2), and what the CPU has (CPUID through libgcc): the loader
  // (src/backend/cpu/load.ts) loads the avx2 build when x86-64-v3 is there.
  o.Set("variant", Napi::String::New(env, RETNET_CPU_VARIANT));
#if defined(__x86_64__)
  o.Set("cpuX86_64V3", Napi::Boolean::New(env, __builtin_cpu_supports("x86-64-v3")));
#else
  o.Set("cpuX86_64V3", Napi::Boolean::New(env, false));
#endif
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (auto& [name, fn] : kernelRegistry()) exports.Set(name, Napi::Function::New(env, fn, name));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  return exports;
}

}  // namespace retnet

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return retnet::Init(env, exports); }

NODE_API_MODULE(retnet_cpu, InitAddon)
