{
  # The cpu addon, built portable: nothing here depends on the build machine's CPU (no -march=native), so a prebuilt
  # binary (scripts/prebuild.mjs) and a source build inside a container both run on any CPU of their architecture.
  # On x86-64 it is built twice, from the same sources (docs/kernels.md, "Instruction sets"):
  #   retnet_cpu.node       -march=x86-64 (SSE2): runs on every x86-64 CPU;
  #   avx2/retnet_cpu_avx2.node  -march=x86-64-v3 (AVX2, FMA, F16C, BMI2): the compiler's vectorised loops at 8 floats.
  # src/backend/cpu/load.ts loads the first, asks it whether the CPU has x86-64-v3 (CPUID through
  # __builtin_cpu_supports) and then loads the second. Each is a whole shared object, so no inline function compiled
  # for AVX2 can be picked by the linker for the baseline (as mixing per-file flags in one object would allow). The
  # low-precision kernels (native/cpu/lowp_avx2.cc, lowp_avx512.cc) carry their own target pragmas and are chosen at
  # run time inside either build (native/cpu/lowp.cc), so AVX-512 BF16/VNNI is used where the CPU has it.
  # OpenBLAS (Debian's DYNAMIC_ARCH build) picks its kernels for the CPU at run time by itself.
  # -fvisibility=hidden: only the Node-API entry points are exported. With default visibility every non-static
  # function of a shared object may be interposed, so GCC calls it through the PLT and never inlines it: the bf16 ->
  # float32 conversion of lowp's tile path cost a call per element (dequantising a [4096, 1024] bf16 weight took
  # 13.5 ms against 2.2 ms hidden, 1 thread).
  # The rpath $ORIGIN lets a prebuilt binary find the OpenBLAS, libgfortran, libquadmath and libgomp copies that
  # scripts/prebuild.mjs puts beside it; a source build finds the system's.
  "target_defaults": {
    "sources": ["<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f=>f.endsWith('.cc')).sort().map(f=>'native/cpu/'+f).join(' ')\")"],
    "include_dirs": ["native/common", "<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
    "cflags_cc": [
      "<!@(pkg-config --cflags openblas)", "-std=c++17", "-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
      "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"
    ],
    "ldflags": ["-fopenmp", "-Wl,-rpath,'$$ORIGIN'"],
    "libraries": ["<!@(pkg-config --libs openblas)"]
  },
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "retnet_cpu",
          "defines": ["RETNET_CPU_VARIANT=\"baseline\""],
          "cflags_cc": ["-march=x86-64", "-mtune=generic"]
        },
        {
          "target_name": "retnet_cpu_avx2",
          "product_dir": "<(PRODUCT_DIR)/avx2",
          "defines": ["RETNET_CPU_VARIANT=\"avx2\""],
          "cflags_cc": ["-march=x86-64-v3", "-mtune=generic"],
          "ldflags": ["-Wl,-rpath,'$$ORIGIN/..'"]
        }
      ]
    }, {
      "targets": [
        {
          "target_name": "retnet_cpu",
          "defines": ["RETNET_CPU_VARIANT=\"baseline\""]
        }
      ]
    }]
  ]
}
