// The ceiling for bench/gemm.ts: cblas_sgemm and memcpy called directly from C, with the thread count and timing
// rule of the TypeScript side (bench/lib.ts `measure`). Prints one JSON object per line. bench/gemm.ts compiles it:
//   cc -O2 -fopenmp gemm_direct.c -lopenblas
// Usage: gemm_direct THREADS WARMUP MIN_TIME_MS MIN_SAMPLES SAMPLE_TARGET_MS COPY_MIB N...
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

struct timing_rule {
  int warmup, min_samples;
  double min_time_ms, sample_target_ms;
};

struct timing {
  int samples, calls_per_sample;
  double ms_median, ms_min;
};

static int compare_doubles(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

// Same rule as bench/lib.ts `measure`: warm-up calls (the last timed to size a batch of about sample_target_ms),
// then batches until min_time_ms has passed and min_samples were taken; per-call median and minimum.
static struct timing measure(void (*fn)(void*), void* arg, struct timing_rule r) {
  double single = 0;
  for (int i = 0; i < (r.warmup > 1 ? r.warmup : 1); i++) {
    double t0 = now_ms();
    fn(arg);
    single = now_ms() - t0;
  }
  double est = single > 1e-6 ? single : 1e-6;
  int calls = (int)(r.sample_target_ms / est + 0.999999);
  if (calls < 1) calls = 1;
  int cap = 64, n = 0;
  double* per_call = malloc(sizeof(double) * cap);
  double start = now_ms();
  while (n < r.min_samples || now_ms() - start < r.min_time_ms) {
    double t0 = now_ms();
    for (int i = 0; i < calls; i++) fn(arg);
    if (n == cap) per_call = realloc(per_call, sizeof(double) * (cap *= 2));
    per_call[n++] = (now_ms() - t0) / calls;
  }
  qsort(per_call, n, sizeof(double), compare_doubles);
  struct timing t = {n, calls, n % 2 ? per_call[n / 2] : (per_call[n / 2 - 1] + per_call[n / 2]) / 2, per_call[0]};
  free(per_call);
  return t;
}

struct gemm_args {
  int n;
  float *a, *b, *c;
};

static void run_gemm(void* p) {
  struct gemm_args* g = p;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n, 0.0f, g->c,
              g->n);
}

struct copy_args {
  size_t bytes;
  int chunks;
  char *src, *dst;
};

static void run_memcpy(void* p) {
  struct copy_args* c = p;
  memcpy(c->dst, c->src, c->bytes);
}

// The copy split into equal chunks over the OpenMP threads, as the addon's copyBlocks does.
static void run_memcpy_threads(void* p) {
  struct copy_args* c = p;
  size_t chunk = c->bytes / c->chunks;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < c->chunks; i++) memcpy(c->dst + i * chunk, c->src + i * chunk, chunk);
}

// The input values bench/gemm.ts uses too: small, exact, no denormals.
static void fill(float* x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = (float)((int)(i % 17) - 8) * 0.125f;
}

static void print_timing(struct timing t) {
  printf("\"samples\":%d,\"calls_per_sample\":%d,\"ms_median\":%.6g,\"ms_min\":%.6g}\n", t.samples, t.calls_per_sample,
         t.ms_median, t.ms_min);
}

int main(int argc, char** argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s THREADS WARMUP MIN_TIME_MS MIN_SAMPLES SAMPLE_TARGET_MS COPY_MIB N...\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[1]);
  struct timing_rule rule = {atoi(argv[2]), atoi(argv[4]), atof(argv[3]), atof(argv[5])};
  size_t copy_bytes = (size_t)atoi(argv[6]) << 20;
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
  printf("{\"kind\":\"info\",\"blas_core\":\"%s\",\"blas_config\":\"%s\",\"threads\":%d}\n", openblas_get_corename(),
         openblas_get_config(), openblas_get_num_threads());
  fflush(stdout);

  for (int i = 7; i < argc; i++) {
    int n = atoi(argv[i]);
    size_t count = (size_t)n * n;
    struct gemm_args g = {n, malloc(count * 4), malloc(count * 4), malloc(count * 4)};
    if (!g.a || !g.b || !g.c) {
      fprintf(stderr, "gemm_direct: out of memory at n=%d\n", n);
      return 1;
    }
    fill(g.a, count);
    fill(g.b, count);
    memset(g.c, 0, count * 4);
    printf("{\"kind\":\"gemm\",\"n\":%d,", n);
    print_timing(measure(run_gemm, &g, rule));
    fflush(stdout);
    free(g.a);
    free(g.b);
    free(g.c);
  }

  if (copy_bytes > 0) {
    struct copy_args c = {copy_bytes, 64, malloc(copy_bytes), malloc(copy_bytes)};
    if (!c.src || !c.dst) {
      fprintf(stderr, "gemm_direct: out of memory for the copy\n");
      return 1;
    }
    memset(c.src, 1, copy_bytes);
    memset(c.dst, 0, copy_bytes);
    printf("{\"kind\":\"memcpy\",\"threads\":1,\"bytes\":%zu,", copy_bytes);
    print_timing(measure(run_memcpy, &c, rule));
    printf("{\"kind\":\"memcpy\",\"threads\":%d,\"bytes\":%zu,", threads, copy_bytes);
    print_timing(measure(run_memcpy_threads, &c, rule));
    free(c.src);
    free(c.dst);
  }
  return 0;
}
