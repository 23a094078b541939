{
  "targets": [
    {
      "target_name": "retnet_cpu",
      "sources": ["<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f=>f.endsWith('.cc')).sort().map(f=>'native/cpu/'+f).join(' ')\")"],
      "include_dirs": ["native/common", "<!(node -p \"require('node-addon-api').include_dir\")", "/usr/include/x86_64-linux-gnu/openblas-pthread"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-lopenblas"]
    }
  ]
}
