// Runs when `npm install` found no prebuilt binary that loads here (prebuilds/ covers linux-x64 with glibc; see
// docs/packaging.md) and the source build failed too: the library still works on the reference backend, so the install
// succeeds, and `retnet info` and the first use report the missing addon.
console.warn(
  'retnet: no prebuilt native addon fits this system and building it from source failed, so retnet falls back to ' +
    'the much slower reference backend. Fix: install a C++ compiler, make, python3, pkg-config and OpenBLAS ' +
    "(Debian: apt-get install g++ make python3 pkg-config libopenblas-dev), then run 'npm rebuild retnet'.",
);
