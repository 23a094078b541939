// The ceiling for bench/gemm.ts: cblas_sgemm and memcpy called directly from C. bench/gemm.ts compiles it
//   cc -O2 -fopenmp gemm_direct.c -lopenblas
// and drives it over stdin, so that its batches alternate with the TypeScript side's under one timing rule
// (bench/lib.ts `measureEach`): both see the same machine at the same moments. Usage: gemm_direct THREADS, then one
// command per line, each answered by one JSON line on stdout:
//   gemm N CALLS                 CALLS products of n x n by n x n (fp32, row-major, beta = 0) -> {"ms": ...}
//   memcpy BYTES CHUNKS CALLS    CALLS copies of BYTES, split in CHUNKS over the threads    -> {"ms": ...}
// Buffers are allocated on first use and kept while the size stays the same; inputs hold the values gemm.ts uses.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Small exact values, no denormals: element i is ((i mod 17) - 8) / 8, as in bench/gemm.ts.
static void fill(float* x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = (float)((int)(i % 17) - 8) * 0.125f;
}

static void* checked_malloc(size_t bytes) {
  void* p = malloc(bytes);
  if (!p) {
    fprintf(stderr, "gemm_direct: cannot allocate %zu bytes\n", bytes);
    exit(1);
  }
  return p;
}

static int gemm_n = 0;
static float *gemm_a, *gemm_b, *gemm_c;

static double run_gemm(int n, long calls) {
  if (n != gemm_n) {
    free(gemm_a);
    free(gemm_b);
    free(gemm_c);
    size_t count = (size_t)n * n;
    gemm_a = checked_malloc(count * sizeof(float));
    gemm_b = checked_malloc(count * sizeof(float));
    gemm_c = checked_malloc(count * sizeof(float));
    fill(gemm_a, count);
    fill(gemm_b, count);
    memset(gemm_c, 0, count * sizeof(float));
    gemm_n = n;
  }
  double t0 = now_ms();
  for (long i = 0; i < calls; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, gemm_a, n, gemm_b, n, 0.0f, gemm_c, n);
  return now_ms() - t0;
}

static size_t copy_bytes = 0;
static char *copy_src, *copy_dst;

// One chunk is a single memcpy on one thread; more chunks are spread over the OpenMP threads, as the addon's
// copyBlocks does with its blocks.
static double run_memcpy(size_t bytes, int chunks, long calls) {
  if (bytes != copy_bytes) {
    free(copy_src);
    free(copy_dst);
    copy_src = checked_malloc(bytes);
    copy_dst = checked_malloc(bytes);
    memset(copy_src, 1, bytes);
    memset(copy_dst, 0, bytes);
    copy_bytes = bytes;
  }
  size_t chunk = bytes / chunks;
  double t0 = now_ms();
  for (long i = 0; i < calls; i++) {
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int c = 0; c < chunks; c++) memcpy(copy_dst + c * chunk, copy_src + c * chunk, chunk);
  }
  return now_ms() - t0;
}

int main(int argc, char** argv) {
  if (argc != 2 || atoi(argv[1]) < 1) {
    fprintf(stderr, "usage: %s THREADS  (then commands on stdin: 'gemm N CALLS', 'memcpy BYTES CHUNKS CALLS')\n",
            argv[0]);
    return 2;
  }
  int threads = atoi(argv[1]);
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
  printf("{\"blas_core\":\"%s\",\"blas_config\":\"%s\",\"threads\":%d}\n", openblas_get_corename(),
         openblas_get_config(), openblas_get_num_threads());
  fflush(stdout);

  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    int n, chunks;
    long calls;
    size_t bytes;
    if (sscanf(line, "gemm %d %ld", &n, &calls) == 2 && n > 0 && calls > 0)
      printf("{\"ms\":%.6f}\n", run_gemm(n, calls));
    else if (sscanf(line, "memcpy %zu %d %ld", &bytes, &chunks, &calls) == 3 && bytes > 0 && chunks > 0 &&
             bytes % chunks == 0 && calls > 0)
      printf("{\"ms\":%.6f}\n", run_memcpy(bytes, chunks, calls));
    else {
      fprintf(stderr, "gemm_direct: bad command '%s'\n", line);
      return 2;
    }
    fflush(stdout);
  }
  return 0;
}
