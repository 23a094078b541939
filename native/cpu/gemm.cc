// GEMM through OpenBLAS: C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b], row-major, for b in [0, batch).
// Offsets and strides let one call address per-head slices of a larger tensor without copies.
#include <cblas.h>

#include "common.h"

namespace retnet {

// Elements needed to hold `batch` row-major matrices of rows x cols with leading dimension ld at the given stride.
static int64_t extent(int64_t offset, int64_t batch, int64_t stride, int64_t rows, int64_t cols, int64_t ld) {
  if (batch == 0 || rows == 0 || cols == 0) return 0;
  return offset + (batch - 1) * stride + (rows - 1) * ld + cols;
}

// sgemm(transA, transB, M, N, K, alpha, A, offA, lda, strideA, B, offB, ldb, strideB, beta, C, offC, ldc, strideC,
//       batch)
static Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    bool ta = flag(info, 0, "transA"), tb = flag(info, 1, "transB");
    int64_t M = dim(info, 2, "M"), N = dim(info, 3, "N"), K = dim(info, 4, "K");
    float alpha = static_cast<float>(num(info, 5, "alpha"));
    auto A = f32(info, 6, "A");
    int64_t offA = dim(info, 7, "offA"), lda = dim(info, 8, "lda"), strideA = dim(info, 9, "strideA");
    auto B = f32(info, 10, "B");
    int64_t offB = dim(info, 11, "offB"), ldb = dim(info, 12, "ldb"), strideB = dim(info, 13, "strideB");
    float beta = static_cast<float>(num(info, 14, "beta"));
    auto C = f32(info, 15, "C");
    int64_t offC = dim(info, 16, "offC"), ldc = dim(info, 17, "ldc"), strideC = dim(info, 18, "strideC");
    int64_t batch = dim(info, 19, "batch");
    int64_t aRows = ta ? K : M, aCols = ta ? M : K, bRows = tb ? N : K, bCols = tb ? K : N;
    if (lda < (aCols > 0 ? aCols : 1) || ldb < (bCols > 0 ? bCols : 1) || ldc < (N > 0 ? N : 1))
      throw ArgError{"sgemm: leading dimension smaller than the row length"};
    require(A, extent(offA, batch, strideA, aRows, aCols, lda), "sgemm", "A");
    require(B, extent(offB, batch, strideB, bRows, bCols, ldb), "sgemm", "B");
    require(C, extent(offC, batch, strideC, M, N, ldc), "sgemm", "C");
    if (M == 0 || N == 0) return;
    for (int64_t b = 0; b < batch; b++) {
      float* c = C.data + offC + b * strideC;
      if (K == 0) {  // BLAS leaves C untouched for K == 0 only when beta == 1; make the empty sum explicit.
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = 0; j < N; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        continue;
      }
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                  A.data + offA + b * strideA, lda, B.data + offB + b * strideB, ldb, beta, c, ldc);
    }
  });
}
RETNET_KERNEL("sgemm", Sgemm);

}  // namespace retnet
