// Work split over attention/retention heads (or finer work items), with scratch carved from a caller-provided
// workspace: the TypeScript backend allocates it as a tensor, so the engine's memory accounting sees every byte a
// kernel uses. With at least as many items as threads, each thread takes whole items and calls single-threaded BLAS;
// otherwise items run one after the other and OpenBLAS threads each product.
#pragma once

#include <cblas.h>

#include "common.h"

namespace retnet {

// Row-major C = alpha op(A) op(B) + beta C; K == 0 is an explicit empty sum (BLAS would leave C untouched).
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
              ldb, beta, C, ldc);
}

// Scratch slots needed for `items` work items: one per thread when items run in parallel, else one.
inline int64_t workSlots(int64_t items) {
  int threads = omp_get_max_threads();
  return items >= threads && threads > 1 ? threads : 1;
}

// Hands out consecutive pieces of one slot of the workspace.
struct Carve {
  float* next;
  float* take(int64_t n) {
    float* p = next;
    next += n;
    return p;
  }
};

// Runs body(item, scratch) for every item in [0, items), scratch being the running thread's slot of `perItem`
// floats. Items are handed out dynamically, in order, so callers put the most expensive ones first.
template <typename Body>
void forEachItem(int64_t items, float* workspace, int64_t perItem, Body body) {
  if (workSlots(items) > 1) {
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < items; i++) body(i, Carve{workspace + omp_get_thread_num() * perItem});
    openblas_set_num_threads(saved);
  } else {
    for (int64_t i = 0; i < items; i++) body(i, Carve{workspace});
  }
}

inline void requireWorkspace(const Span<float>& ws, int64_t items, int64_t perItem, const char* kernel) {
  require(ws, workSlots(items) * perItem, kernel, "workspace");
}

}  // namespace retnet
