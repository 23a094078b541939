// Multi-scale retention kernels (paper §2.1-2.2; torchscale/architecture/retnet.py, MultiScaleRetention's
// parallel_forward, chunk_recurrent_forward and recurrent_forward).
// Layouts are time-major, as the projections produce them: q, k [B, T, H, K]; v, o [B, T, H, V]; r [B, H, T];
// state [B, H, K, V]; scale [B, H]. One head's rows are strided (stride H·K or H·V), which BLAS takes as a leading
// dimension, so no permute is ever needed. Scratch memory is a caller-provided workspace (see retentionWorkspace) so
// that the engine's memory accounting includes it.
// Every form computes o_n = r_n · U_n, U_n = Σ_{m≤n} γ^(n−m) (q_n·k_m) v_m, with a detached per-row factor r_n, so
// the backward kernels take r and differentiate U only (docs/retention.md). Each forward kernel takes a `normalize`
// flag: false drops torchscale's normalisers (r_n = 1, state S_t = γ S_{t−1} + k_tᵀ v_t: fla's retention,
// fla-spec §4.3), where every form is the same function.
#include <algorithm>
#include <cmath>
#include <vector>

#include "heads.h"

namespace retnet {

namespace {

using Work = codes::RetentionWork;

// Floats of scratch one head needs.
int64_t workspacePerHead(Work w, int64_t T, int64_t K, int64_t V, int64_t C) {
  int64_t c = std::max<int64_t>(1, std::min(C, T));
  switch (w) {
    case Work::ParallelForward: return T * T;
    case Work::ChunkwiseForward: return c * c + 2 * c * V + K * V;
    case Work::ParallelBackward: return T * V + T * T;
    case Work::ChunkwiseBackward: return T * V + c * c + 2 * K * V + 2 * c * K + c * V;
    case Work::State: return T * K;
  }
  return 0;
}

// γ^e for e in [0, n), as exp(e·ln γ) (torchscale builds its masks that way).
std::vector<double> powers(double gamma, int64_t n) {
  std::vector<double> p(n);
  double lambda = std::log(gamma);
  for (int64_t e = 0; e < n; e++) p[e] = std::exp(lambda * static_cast<double>(e));
  return p;
}

// sqrt(S(i)), S(i) = Σ_{t≤i} γ^t, for i in [0, n); all 1 without normalisation.
std::vector<double> sqrtDecaySums(const std::vector<double>& pw, int64_t n, bool normalize) {
  std::vector<double> s(n, 1.0);
  double acc = 0;
  for (int64_t i = 0; i < n && normalize; i++) {
    acc += pw[i];
    s[i] = std::sqrt(acc);
  }
  return s;
}

// Masks a row-major L×L block in place: row i keeps columns j ≤ i scaled by γ^(i−j) (Γ of docs/retention.md).
void decayMask(float* M, int64_t L, const std::vector<double>& pw) {
  for (int64_t i = 0; i < L; i++) {
    for (int64_t j = 0; j <= i; j++) M[i * L + j] = static_cast<float>(M[i * L + j] * pw[i - j]);
    for (int64_t j = i + 1; j < L; j++) M[i * L + j] = 0.0f;
  }
}

// The arguments every sequence kernel shares, checked once.
struct Sequence {
  int64_t B, H, T, K, V;
  std::vector<double> gammas;
  // Offset of head bh's first row in a [B, T, H, W] tensor; its rows are H·W apart.
  int64_t head(int64_t bh, int64_t W) const { return ((bh / H) * T * H + bh % H) * W; }
};

Sequence sequenceArgs(const Napi::CallbackInfo& info, size_t dimsAt, const Span<double>& g, const char* kernel) {
  Sequence s{dim(info, dimsAt, "B"), dim(info, dimsAt + 1, "H"), dim(info, dimsAt + 2, "T"),
             dim(info, dimsAt + 3, "K"), dim(info, dimsAt + 4, "V"), {}};
  require(g, s.H, kernel, "gammas");
  for (int64_t h = 0; h < s.H; h++) {
    if (!(g.data[h] > 0.0 && g.data[h] < 1.0))
      throw ArgError{std::string(kernel) + ": every decay gamma must lie in (0, 1)"};
    s.gammas.push_back(g.data[h]);
  }
  return s;
}

}  // namespace

// retentionParallel(q, k, v, gammas, o, r, workspace, B, H, T, K, V, normalize): the parallel form (torchscale's parallel_forward).
// gammas: Float64Array [H].
static Napi::Value RetentionParallel(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    auto o = f32(info, 4, "o"), r = f32(info, 5, "r"), ws = f32(info, 6, "workspace");
    Sequence s = sequenceArgs(info, 7, g, "retentionParallel");
    bool normalize = flag(info, 12, "normalize");
    int64_t BH = s.B * s.H, T = s.T, K = s.K, V = s.V, ldk = s.H * K, ldv = s.H * V;
    int64_t per = workspacePerHead(Work::ParallelForward, T, K, V, 1);
    requireWorkspace(ws, BH, per, "retentionParallel");
    for (auto* t : {&q, &k}) require(*t, BH * T * K, "retentionParallel", "q/k");
    for (auto* t : {&v, &o}) require(*t, BH * T * V, "retentionParallel", "v/o");
    require(r, BH * T, "retentionParallel", "r");
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      auto pw = powers(s.gammas[bh % s.H], T);
      auto sq = sqrtDecaySums(pw, T, normalize);
      float* A = scratch.take(T * T);
      const float *qh = q.data + s.head(bh, K), *kh = k.data + s.head(bh, K), *vh = v.data + s.head(bh, V);
      gemm(false, true, T, T, K, 1.0f, qh, ldk, kh, ldk, 0.0f, A, T);
      for (int64_t n = 0; n < T; n++) {
        float* row = A + n * T;
        double abs = 0;
        for (int64_t m = 0; m <= n; m++) {
          row[m] = static_cast<float>(row[m] * pw[n - m] / sq[n]);
          abs += std::fabs(row[m]);
        }
        double c = normalize ? std::min(std::max(abs, 1.0), 5e4) : 1.0;
        float inv = static_cast<float>(1.0 / c);
        for (int64_t m = 0; m <= n; m++) row[m] *= inv;
        for (int64_t m = n + 1; m < T; m++) row[m] = 0.0f;
        r.data[bh * T + n] = static_cast<float>(1.0 / (sq[n] * c));
      }
      gemm(false, false, T, V, T, 1.0f, A, T, vh, ldv, 0.0f, o.data + s.head(bh, V), ldv);
    });
  });
}
RETNET_KERNEL("retentionParallel", RetentionParallel);

// retentionChunkwise(q, k, v, gammas, o, r, workspace, B, H, T, K, V, C, normalize): the chunkwise form (chunk_recurrent_forward), parallel
// inside each chunk of C positions and recurrent across chunks through the K×V state. A last chunk shorter than C
// gives exactly the outputs of torchscale's zero padding.
static Napi::Value RetentionChunkwise(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    auto o = f32(info, 4, "o"), r = f32(info, 5, "r"), ws = f32(info, 6, "workspace");
    Sequence s = sequenceArgs(info, 7, g, "retentionChunkwise");
    int64_t C = dim(info, 12, "chunkSize");
    if (C < 1) throw ArgError{"retentionChunkwise: chunk size must be at least 1"};
    bool normalize = flag(info, 13, "normalize");
    int64_t BH = s.B * s.H, T = s.T, K = s.K, V = s.V, ldk = s.H * K, ldv = s.H * V;
    int64_t per = workspacePerHead(Work::ChunkwiseForward, T, K, V, C);
    requireWorkspace(ws, BH, per, "retentionChunkwise");
    for (auto* t : {&q, &k}) require(*t, BH * T * K, "retentionChunkwise", "q/k");
    for (auto* t : {&v, &o}) require(*t, BH * T * V, "retentionChunkwise", "v/o");
    require(r, BH * T, "retentionChunkwise", "r");
    int64_t Cw = std::max<int64_t>(1, std::min(C, T));  // chunk rows that can exist
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      auto pw = powers(s.gammas[bh % s.H], C + 1);
      auto sq = sqrtDecaySums(pw, C, normalize);
      double SC = sq[C - 1] * sq[C - 1];
      float *A = scratch.take(Cw * Cw), *cross = scratch.take(Cw * V), *vd = scratch.take(Cw * V);
      float* Z = scratch.take(K * V);  // un-normalised cross-chunk state [K, V]
      std::fill(Z, Z + K * V, 0.0f);
      double sigma = 1;
      const float *qh = q.data + s.head(bh, K), *kh = k.data + s.head(bh, K), *vh = v.data + s.head(bh, V);
      float* oh = o.data + s.head(bh, V);
      std::vector<double> m(Cw);
      for (int64_t s0 = 0; s0 < T; s0 += C) {
        int64_t L = std::min(C, T - s0);
        const float *qc = qh + s0 * ldk, *kc = kh + s0 * ldk, *vc = vh + s0 * ldv;
        float* oc = oh + s0 * ldv;
        gemm(false, true, L, L, K, 1.0f, qc, ldk, kc, ldk, 0.0f, A, L);
        for (int64_t i = 0; i < L; i++) {
          float* row = A + i * L;
          double abs = 0;
          for (int64_t j = 0; j <= i; j++) {
            row[j] = static_cast<float>(row[j] * pw[i - j] / sq[i]);
            abs += std::fabs(row[j]);
          }
          for (int64_t j = i + 1; j < L; j++) row[j] = 0.0f;
          m[i] = normalize ? std::max(std::max(abs, 1.0), sigma) : 1.0;
          r.data[bh * T + s0 + i] = static_cast<float>(1.0 / (sq[i] * m[i]));
        }
        gemm(false, false, L, V, L, 1.0f, A, L, vc, ldv, 0.0f, oc, ldv);  // inner: [L, V]
        gemm(false, false, L, V, K, 1.0f, qc, ldk, Z, V, 0.0f, cross, V);  // q Z: [L, V]
        for (int64_t i = 0; i < L; i++) {
          double qd = pw[i + 1] * SC / sq[i];
          for (int64_t y = 0; y < V; y++)
            oc[i * ldv + y] = static_cast<float>((oc[i * ldv + y] + qd * cross[i * V + y]) / m[i]);
        }
        if (s0 + L >= T) break;  // the final state is not needed
        // Z = γ^C Z + Σ_j k_jᵀ v_j γ^(C−1−j) / S(C−1)
        for (int64_t j = 0; j < L; j++) {
          float w = static_cast<float>(pw[C - 1 - j] / SC);
          for (int64_t y = 0; y < V; y++) vd[j * V + y] = vc[j * ldv + y] * w;
        }
        gemm(true, false, K, V, L, 1.0f, kc, ldk, vd, V, static_cast<float>(pw[C]), Z, V);
        sigma = 1;
        for (int64_t y = 0; y < V && normalize; y++) {
          double col = 0;
          for (int64_t x = 0; x < K; x++) col += std::fabs(Z[x * V + y]);
          sigma = std::max(sigma, col);
        }
      }
    });
  });
}
RETNET_KERNEL("retentionChunkwise", RetentionChunkwise);

// dU = r ⊙ dO for one head, into a contiguous [T, V] buffer.
static void scaleRows(const float* dO, int64_t ldv, const float* r, int64_t T, int64_t V, float* dU) {
  for (int64_t n = 0; n < T; n++)
    for (int64_t y = 0; y < V; y++) dU[n * V + y] = dO[n * ldv + y] * r[n];
}

// retentionBackwardParallel(q, k, v, gammas, r, dO, dq, dk, dv, workspace, B, H, T, K, V): gradients of o = r ⊙ U
// with the T×T score matrix recomputed: dU = r dO, dS = (dU vᵀ) ⊙ Γ, dq = dS k, dk = dSᵀ q, dv = ((q kᵀ) ⊙ Γ)ᵀ dU.
static Napi::Value RetentionBackwardParallel(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    auto r = f32(info, 4, "r"), dO = f32(info, 5, "dO");
    auto dq = f32(info, 6, "dq"), dk = f32(info, 7, "dk"), dv = f32(info, 8, "dv"), ws = f32(info, 9, "workspace");
    Sequence s = sequenceArgs(info, 10, g, "retentionBackwardParallel");
    int64_t BH = s.B * s.H, T = s.T, K = s.K, V = s.V, ldk = s.H * K, ldv = s.H * V;
    int64_t per = workspacePerHead(Work::ParallelBackward, T, K, V, 1);
    requireWorkspace(ws, BH, per, "retentionBackwardParallel");
    for (auto* t : {&q, &k, &dq, &dk}) require(*t, BH * T * K, "retentionBackwardParallel", "q/k/dq/dk");
    for (auto* t : {&v, &dO, &dv}) require(*t, BH * T * V, "retentionBackwardParallel", "v/dO/dv");
    require(r, BH * T, "retentionBackwardParallel", "r");
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      auto pw = powers(s.gammas[bh % s.H], T);
      int64_t ok = s.head(bh, K), ov = s.head(bh, V);
      const float *qh = q.data + ok, *kh = k.data + ok, *vh = v.data + ov;
      float *dU = scratch.take(T * V), *S = scratch.take(T * T);
      scaleRows(dO.data + ov, ldv, r.data + bh * T, T, V, dU);
      gemm(false, true, T, T, V, 1.0f, dU, V, vh, ldv, 0.0f, S, T);  // dU vᵀ
      decayMask(S, T, pw);
      gemm(false, false, T, K, T, 1.0f, S, T, kh, ldk, 0.0f, dq.data + ok, ldk);
      gemm(true, false, T, K, T, 1.0f, S, T, qh, ldk, 0.0f, dk.data + ok, ldk);
      gemm(false, true, T, T, K, 1.0f, qh, ldk, kh, ldk, 0.0f, S, T);  // q kᵀ
      decayMask(S, T, pw);
      gemm(true, false, T, V, T, 1.0f, S, T, dU, V, 0.0f, dv.data + ov, ldv);
    });
  });
}
RETNET_KERNEL("retentionBackwardParallel", RetentionBackwardParallel);

// retentionBackwardChunkwise(q, k, v, gammas, r, dO, dq, dk, dv, workspace, B, H, T, K, V, C): the same gradients in
// linear memory. dq needs the past (forward over chunks with Z = Σ_{m<s0} γ^(s0−1−m) k_mᵀ v_m); dk and dv need the
// future (backward over chunks with G = Σ_{n≥e} γ^(n−e) q_nᵀ dU_n, e the end of the current chunk).
static Napi::Value RetentionBackwardChunkwise(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    auto r = f32(info, 4, "r"), dO = f32(info, 5, "dO");
    auto dq = f32(info, 6, "dq"), dk = f32(info, 7, "dk"), dv = f32(info, 8, "dv"), ws = f32(info, 9, "workspace");
    Sequence s = sequenceArgs(info, 10, g, "retentionBackwardChunkwise");
    int64_t C = dim(info, 15, "chunkSize");
    if (C < 1) throw ArgError{"retentionBackwardChunkwise: chunk size must be at least 1"};
    int64_t BH = s.B * s.H, T = s.T, K = s.K, V = s.V, ldk = s.H * K, ldv = s.H * V;
    int64_t per = workspacePerHead(Work::ChunkwiseBackward, T, K, V, C);
    requireWorkspace(ws, BH, per, "retentionBackwardChunkwise");
    for (auto* t : {&q, &k, &dq, &dk}) require(*t, BH * T * K, "retentionBackwardChunkwise", "q/k/dq/dk");
    for (auto* t : {&v, &dO, &dv}) require(*t, BH * T * V, "retentionBackwardChunkwise", "v/dO/dv");
    require(r, BH * T, "retentionBackwardChunkwise", "r");
    int64_t Cw = std::max<int64_t>(1, std::min(C, T));
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      auto pw = powers(s.gammas[bh % s.H], C + 1);
      int64_t ok = s.head(bh, K), ov = s.head(bh, V);
      const float *qh = q.data + ok, *kh = k.data + ok, *vh = v.data + ov;
      float *dqh = dq.data + ok, *dkh = dk.data + ok, *dvh = dv.data + ov;
      float *dU = scratch.take(T * V), *S = scratch.take(Cw * Cw), *Z = scratch.take(K * V), *G = scratch.take(K * V);
      float *tK = scratch.take(Cw * K), *scaled = scratch.take(Cw * K), *tV = scratch.take(Cw * V);
      std::fill(Z, Z + K * V, 0.0f);
      std::fill(G, G + K * V, 0.0f);
      scaleRows(dO.data + ov, ldv, r.data + bh * T, T, V, dU);
      // Forward over chunks: dq.
      for (int64_t s0 = 0; s0 < T; s0 += C) {
        int64_t L = std::min(C, T - s0);
        const float *kc = kh + s0 * ldk, *vc = vh + s0 * ldv, *uc = dU + s0 * V;
        float* dqc = dqh + s0 * ldk;
        gemm(false, true, L, L, V, 1.0f, uc, V, vc, ldv, 0.0f, S, L);  // dU vᵀ
        decayMask(S, L, pw);
        gemm(false, false, L, K, L, 1.0f, S, L, kc, ldk, 0.0f, dqc, ldk);
        gemm(false, true, L, K, V, 1.0f, uc, V, Z, V, 0.0f, tK, K);  // dU Zᵀ
        for (int64_t i = 0; i < L; i++)
          for (int64_t x = 0; x < K; x++) dqc[i * ldk + x] += static_cast<float>(pw[i + 1] * tK[i * K + x]);
        if (s0 + L >= T) break;
        for (int64_t j = 0; j < L; j++)  // rows of k scaled by γ^(L−1−j)
          for (int64_t x = 0; x < K; x++) scaled[j * K + x] = static_cast<float>(kc[j * ldk + x] * pw[L - 1 - j]);
        gemm(true, false, K, V, L, 1.0f, scaled, K, vc, ldv, static_cast<float>(pw[L]), Z, V);
      }
      // Backward over chunks: dk, dv.
      for (int64_t s0 = T == 0 ? -1 : ((T - 1) / C) * C; s0 >= 0; s0 -= C) {
        int64_t L = std::min(C, T - s0);
        const float *qc = qh + s0 * ldk, *kc = kh + s0 * ldk, *vc = vh + s0 * ldv, *uc = dU + s0 * V;
        float *dkc = dkh + s0 * ldk, *dvc = dvh + s0 * ldv;
        gemm(false, true, L, L, V, 1.0f, uc, V, vc, ldv, 0.0f, S, L);  // dU vᵀ ⊙ Γ
        decayMask(S, L, pw);
        gemm(true, false, L, K, L, 1.0f, S, L, qc, ldk, 0.0f, dkc, ldk);
        gemm(false, true, L, L, K, 1.0f, qc, ldk, kc, ldk, 0.0f, S, L);  // q kᵀ ⊙ Γ
        decayMask(S, L, pw);
        gemm(true, false, L, V, L, 1.0f, S, L, uc, V, 0.0f, dvc, ldv);
        // Contributions of later chunks through G: dk_j += γ^(L−j) (v_j Gᵀ), dv_j += γ^(L−j) (k_j G).
        gemm(false, true, L, K, V, 1.0f, vc, ldv, G, V, 0.0f, tK, K);
        gemm(false, false, L, V, K, 1.0f, kc, ldk, G, V, 0.0f, tV, V);
        for (int64_t j = 0; j < L; j++) {
          float w = static_cast<float>(pw[L - j]);
          for (int64_t x = 0; x < K; x++) dkc[j * ldk + x] += w * tK[j * K + x];
          for (int64_t y = 0; y < V; y++) dvc[j * ldv + y] += w * tV[j * V + y];
        }
        // G = γ^L G + Σ_i γ^i q_iᵀ dU_i
        for (int64_t i = 0; i < L; i++)
          for (int64_t x = 0; x < K; x++) scaled[i * K + x] = static_cast<float>(qc[i * ldk + x] * pw[i]);
        gemm(true, false, K, V, L, 1.0f, scaled, K, uc, V, static_cast<float>(pw[L]), G, V);
      }
    });
  });
}
RETNET_KERNEL("retentionBackwardChunkwise", RetentionBackwardChunkwise);

// retentionStep(q, k, v, gammas, state, scale, o, B, H, K, V, normalize): one recurrent step (recurrent_forward) for q, k
// [B, H, K] and v, o [B, H, V] (one position of the [B, T, H, *] layout), in place on state and scale; scale 0 marks
// an empty state, so the first step needs no special case. Without normalisation S' = γ S + kᵀv (scale still counts).
static Napi::Value RetentionStep(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    auto st = f32(info, 4, "state"), sc = f32(info, 5, "scale"), o = f32(info, 6, "o");
    int64_t B = dim(info, 7, "B"), H = dim(info, 8, "H"), K = dim(info, 9, "K"), V = dim(info, 10, "V");
    bool normalize = flag(info, 11, "normalize");
    int64_t BH = B * H;
    require(q, BH * K, "retentionStep", "q");
    require(k, BH * K, "retentionStep", "k");
    require(v, BH * V, "retentionStep", "v");
    require(st, BH * K * V, "retentionStep", "state");
    require(sc, BH, "retentionStep", "scale");
    require(o, BH * V, "retentionStep", "o");
    require(g, H, "retentionStep", "gammas");
    for (int64_t h = 0; h < H; h++)
      if (!(g.data[h] > 0.0 && g.data[h] < 1.0)) throw ArgError{"retentionStep: every decay gamma must lie in (0, 1)"};
#pragma omp parallel for if (BH * K * V > kParallelGrain) schedule(static)
    for (int64_t bh = 0; bh < BH; bh++) {
      double gamma = g.data[bh % H], prev = sc.data[bh], next = prev * gamma + 1;
      float decay = static_cast<float>(normalize ? std::sqrt(prev) * gamma / std::sqrt(next) : gamma);
      float inv = static_cast<float>(normalize ? 1.0 / std::sqrt(next) : 1.0);
      sc.data[bh] = static_cast<float>(next);
      float* S = st.data + bh * K * V;
      const float *qh = q.data + bh * K, *kh = k.data + bh * K, *vh = v.data + bh * V;
      float* oh = o.data + bh * V;
      for (int64_t y = 0; y < V; y++) oh[y] = 0.0f;
      for (int64_t x = 0; x < K; x++) {
        float kx = kh[x] * inv, qx = qh[x];
        float* row = S + x * V;
        for (int64_t y = 0; y < V; y++) {
          row[y] = row[y] * decay + kx * vh[y];
          oh[y] += qx * row[y];
        }
      }
    }
  });
}
RETNET_KERNEL("retentionStep", RetentionStep);

// retentionState(k, v, gammas, state, scale, workspace, B, H, T, K, V, normalize): the recurrent state after T
// positions (to continue a parallel or chunkwise prefill recurrently): S = Σ_m γ^(T−1−m) k_mᵀ v_m / sqrt(s),
// s = Σ_{t<T} γ^t (without normalisation, the same sum without the 1/sqrt(s)).
static Napi::Value RetentionState(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto k = f32(info, 0, "k"), v = f32(info, 1, "v");
    auto g = f64(info, 2, "gammas");
    auto st = f32(info, 3, "state"), sc = f32(info, 4, "scale"), ws = f32(info, 5, "workspace");
    Sequence s = sequenceArgs(info, 6, g, "retentionState");
    bool normalize = flag(info, 11, "normalize");
    int64_t BH = s.B * s.H, T = s.T, K = s.K, V = s.V, ldk = s.H * K, ldv = s.H * V;
    int64_t per = workspacePerHead(Work::State, T, K, V, 1);
    requireWorkspace(ws, BH, per, "retentionState");
    require(k, BH * T * K, "retentionState", "k");
    require(v, BH * T * V, "retentionState", "v");
    require(st, BH * K * V, "retentionState", "state");
    require(sc, BH, "retentionState", "scale");
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      if (T == 0) {
        sc.data[bh] = 0.0f;
        std::fill(st.data + bh * K * V, st.data + (bh + 1) * K * V, 0.0f);
        return;
      }
      auto pw = powers(s.gammas[bh % s.H], T);
      double total = 0;
      for (int64_t t = 0; t < T; t++) total += pw[t];
      float* scaled = scratch.take(T * K);
      const float *kh = k.data + s.head(bh, K), *vh = v.data + s.head(bh, V);
      for (int64_t m = 0; m < T; m++) {
        float w = static_cast<float>(normalize ? pw[T - 1 - m] / std::sqrt(total) : pw[T - 1 - m]);
        for (int64_t x = 0; x < K; x++) scaled[m * K + x] = kh[m * ldk + x] * w;
      }
      gemm(true, false, K, V, T, 1.0f, scaled, K, vh, ldv, 0.0f, st.data + bh * K * V, V);
      sc.data[bh] = static_cast<float>(total);
    });
  });
}
RETNET_KERNEL("retentionState", RetentionState);

// retentionWorkspace(kernel, B, H, T, K, V, C) -> floats of workspace the kernel needs (kernel a
// codes::RetentionWork).
static Napi::Value RetentionWorkspace(const Napi::CallbackInfo& info) {
  int64_t floats = 0;
  Napi::Value r = guard(info, [&] {
    int64_t kind = dim(info, 0, "kernel");
    if (kind >= codes::kRetentionWorkCount) throw ArgError{"retentionWorkspace: unknown kernel kind"};
    int64_t B = dim(info, 1, "B"), H = dim(info, 2, "H"), T = dim(info, 3, "T"), K = dim(info, 4, "K"),
            V = dim(info, 5, "V"), C = dim(info, 6, "C");
    floats = workSlots(B * H) * workspacePerHead(static_cast<Work>(kind), T, K, V, C);
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), static_cast<double>(floats));
}
RETNET_KERNEL("retentionWorkspace", RetentionWorkspace);

// rotary(x, cos, sin, y, B, T, H, K, perBatch, halves, inverse): rotation of pairs (a, b) of each head by the angle
// at index a of the tables [T, K] (shared by the batch) or [B, T, K] (per row). Pairs are interleaved (2j, 2j+1)
// (torchscale's theta_shift) or, with halves, (i, i+K/2) (fla's rotate_half, fla-spec §4.3).
static Napi::Value Rotary(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), c = f32(info, 1, "cos"), s = f32(info, 2, "sin"), y = f32(info, 3, "y");
    int64_t B = dim(info, 4, "B"), T = dim(info, 5, "T"), H = dim(info, 6, "H"), K = dim(info, 7, "K");
    bool perBatch = flag(info, 8, "perBatch"), halves = flag(info, 9, "halves"), inverse = flag(info, 10, "inverse");
    if (K % 2 != 0) throw ArgError{"rotary: head dim must be even"};
    require(x, B * T * H * K, "rotary", "x");
    require(y, B * T * H * K, "rotary", "y");
    require(c, (perBatch ? B : 1) * T * K, "rotary", "cos");
    require(s, (perBatch ? B : 1) * T * K, "rotary", "sin");
    float sign = inverse ? -1.0f : 1.0f;
    const int64_t offset = halves ? K / 2 : 1, step = halves ? 1 : 2;
#pragma omp parallel for if (B * T * H * K > kParallelGrain) schedule(static)
    for (int64_t bt = 0; bt < B * T; bt++) {
      int64_t table = (perBatch ? bt : bt % T) * K;
      for (int64_t h = 0; h < H; h++) {
        const float* xr = x.data + (bt * H + h) * K;
        float* yr = y.data + (bt * H + h) * K;
        for (int64_t j = 0; j < K / 2; j++) {
          const int64_t a = j * step;
          float cv = c.data[table + a], sv = sign * s.data[table + a];
          float x0 = xr[a], x1 = xr[a + offset];
          yr[a] = x0 * cv - x1 * sv;
          yr[a + offset] = x1 * cv + x0 * sv;
        }
      }
    }
  });
}
RETNET_KERNEL("rotary", Rotary);

}  // namespace retnet
