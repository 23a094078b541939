// Multi-scale retention kernels (paper §2.1-2.2; torchscale/architecture/retnet.py, MultiScaleRetention's
// parallel_forward, chunk_recurrent_forward and recurrent_forward).
// Layouts are time-major, as the projections produce them: q, k [B, T, H, K]; v, o [B, T, H, V]; r [B, H, T];
// state [B, H, K, V]; scale [B, H]. One head's rows are strided (stride H·K or H·V), which BLAS takes as a leading
// dimension, so no permute is ever needed. Scratch memory is a caller-provided workspace (see retentionWorkspace) so
// that the engine's memory accounting includes it.
// Every form computes o_n = r_n · U_n, U_n = Σ_{m≤n} γ^(n−m) (q_n·k_m) v_m, with a detached per-row factor r_n, so
// the backward kernels take r and differentiate U only (docs/retention.md).
#include <algorithm>
#include <cmath>
#include <vector>

#include "heads.h"
#include "lowp.h"  // fromF16, toF16
#include "workers.h"

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace retnet {

namespace {

using Work = codes::RetentionWork;

// Floats of scratch one head needs (T: the longest sequence).
int64_t workspacePerHead(Work w, int64_t T, int64_t K, int64_t V, int64_t C) {
  int64_t c = std::max<int64_t>(1, std::min(C, T));
  switch (w) {
    case Work::ParallelForward: return T * T + K * V + T * V + T * K;
    case Work::ChunkwiseForward: return c * c + 2 * c * V + K * V;
    case Work::ParallelBackward: return T * V + T * T;
    case Work::ChunkwiseBackward: return T * V + c * c + 2 * K * V + 2 * c * K + c * V;
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

// sqrt(S(i)), S(i) = Σ_{t≤i} γ^t, for i in [0, n).
std::vector<double> sqrtDecaySums(const std::vector<double>& pw, int64_t n) {
  std::vector<double> s(n);
  double acc = 0;
  for (int64_t i = 0; i < n; i++) {
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

// One sequence of a forward call: a batch row, or a packed segment of row 0 (positions [start, start + length)).
struct Seq {
  int64_t b, start, length;
};

// The state-carrying part of a forward call (docs/retention.md): the sequences, the initial state (raw Z = S̃·sqrt(s)
// when normalising) and where the final states go. Empty arrays mean "none".
struct Run {
  std::vector<Seq> seqs;
  bool normalize;
  Span<float> initState, initScale, finalState, finalScale;
  bool hasInit() const { return initState.length > 0; }
  bool hasFinal() const { return finalState.length > 0; }
  // Offsets of sequence n's head h: rows of a [B, T, H, W] tensor and of r [B, H, T].
  int64_t row(const Sequence& s, int64_t n, int64_t h, int64_t W) const {
    return ((seqs[n].b * s.T + seqs[n].start) * s.H + h) * W;
  }
  int64_t rrow(const Sequence& s, int64_t n, int64_t h) const { return (seqs[n].b * s.H + h) * s.T + seqs[n].start; }
  // Z₀ of item nh into Z [K, V], times `factor`; zeros without an initial state. Returns s₀.
  double start(int64_t nh, int64_t KV, float* Z, double factor) const {
    if (!hasInit()) {
      std::fill(Z, Z + KV, 0.0f);
      return 0;
    }
    double s0 = initScale.data[nh];
    double f = factor * (normalize ? std::sqrt(s0) : 1.0);
    for (int64_t e = 0; e < KV; e++) Z[e] = static_cast<float>(initState.data[nh * KV + e] * f);
    return s0;
  }
  // Writes the final state of item nh from the raw Z and its decay sum sEnd.
  void finish(int64_t nh, int64_t KV, const float* Z, double sEnd) const {
    double div = normalize && sEnd > 0 ? std::sqrt(sEnd) : 1.0;
    for (int64_t e = 0; e < KV; e++) finalState.data[nh * KV + e] = static_cast<float>(Z[e] / div);
    finalScale.data[nh] = static_cast<float>(sEnd);
  }
};

// Reads the run arguments at `at`: initState, initScale, finalState, finalScale (f32, empty = none), segments (f64
// lengths, empty = one sequence per row) and normalize; checks them against the call's shape.
Run runArgs(const Napi::CallbackInfo& info, size_t at, size_t normalizeAt, const Sequence& s, const char* kernel) {
  Run run{{}, flag(info, normalizeAt, "normalize"), f32(info, at, "initState"), f32(info, at + 1, "initScale"),
          f32(info, at + 2, "finalState"), f32(info, at + 3, "finalScale")};
  auto seg = f64(info, at + 4, "segments");
  if (seg.length == 0) {
    for (int64_t b = 0; b < s.B; b++) run.seqs.push_back({b, 0, s.T});
  } else {
    if (s.B != 1) throw ArgError{std::string(kernel) + ": segments need a batch of one row"};
    int64_t start = 0;
    for (size_t i = 0; i < seg.length; i++) {
      double n = seg.data[i];
      if (!(n >= 0 && n == std::floor(n))) throw ArgError{std::string(kernel) + ": segment lengths must be integers >= 0"};
      run.seqs.push_back({0, start, static_cast<int64_t>(n)});
      start += static_cast<int64_t>(n);
    }
    if (start != s.T) throw ArgError{std::string(kernel) + ": segment lengths must sum to T"};
  }
  int64_t NH = static_cast<int64_t>(run.seqs.size()) * s.H;
  if (run.hasInit()) {
    require(run.initState, NH * s.K * s.V, kernel, "initState");
    require(run.initScale, NH, kernel, "initScale");
  }
  if (run.hasFinal()) {
    require(run.finalState, NH * s.K * s.V, kernel, "finalState");
    require(run.finalScale, NH, kernel, "finalScale");
  }
  return run;
}

}  // namespace

// retentionParallel(q, k, v, gammas, o, r, workspace, initState, initScale, finalState, finalScale, segments, B, H,
// T, K, V, normalize): the parallel form (torchscale's parallel_forward) of every sequence, continuing its initial state: with
// Ŝ(n) = s₀γ^(n+1) + S(n), A = (q kᵀ) ⊙ Γ / sqrt(Ŝ), c = clamp(Σ|A|, 1, 5e4), o = (A v + γ^(n+1) q Z₀ / sqrt(Ŝ)) / c;
// without normalisation Ŝ = c = 1. gammas: Float64Array [H].
static Napi::Value RetentionParallel(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    auto o = f32(info, 4, "o"), r = f32(info, 5, "r"), ws = f32(info, 6, "workspace");
    Sequence s = sequenceArgs(info, 12, g, "retentionParallel");
    Run run = runArgs(info, 7, 17, s, "retentionParallel");
    int64_t H = s.H, T = s.T, K = s.K, V = s.V, ldk = s.H * K, ldv = s.H * V;
    int64_t NH = static_cast<int64_t>(run.seqs.size()) * H;
    int64_t per = workspacePerHead(Work::ParallelForward, T, K, V, 1);
    requireWorkspace(ws, NH, per, "retentionParallel");
    for (auto* t : {&q, &k}) require(*t, s.B * T * H * K, "retentionParallel", "q/k");
    for (auto* t : {&v, &o}) require(*t, s.B * T * H * V, "retentionParallel", "v/o");
    require(r, s.B * H * T, "retentionParallel", "r");
    forEachItem(NH, ws.data, per, [&](int64_t nh, Carve scratch) {
      int64_t n = nh / H, h = nh % H, L = run.seqs[n].length;
      auto pw = powers(s.gammas[h], L + 1);
      float *A = scratch.take(L * L), *Z = scratch.take(K * V), *cross = scratch.take(L * V);
      float* scaled = scratch.take(L * K);
      double s0 = run.start(nh, K * V, Z, 1.0);
      std::vector<double> sq(L), c(L);
      double acc = 0;
      for (int64_t i = 0; i < L; i++) {
        acc += pw[i];
        sq[i] = run.normalize ? std::sqrt(s0 * pw[i + 1] + acc) : 1.0;
      }
      int64_t ok = run.row(s, n, h, K), ov = run.row(s, n, h, V), orr = run.rrow(s, n, h);
      const float *qh = q.data + ok, *kh = k.data + ok, *vh = v.data + ov;
      float* oh = o.data + ov;
      gemm(false, true, L, L, K, 1.0f, qh, ldk, kh, ldk, 0.0f, A, L);
      for (int64_t i = 0; i < L; i++) {
        float* row = A + i * L;
        double abs = 0;
        for (int64_t m = 0; m <= i; m++) {
          row[m] = static_cast<float>(row[m] * pw[i - m] / sq[i]);
          abs += std::fabs(row[m]);
        }
        c[i] = run.normalize ? std::min(std::max(abs, 1.0), 5e4) : 1.0;
        float inv = static_cast<float>(1.0 / c[i]);
        for (int64_t m = 0; m <= i; m++) row[m] *= inv;
        for (int64_t m = i + 1; m < L; m++) row[m] = 0.0f;
        r.data[orr + i] = static_cast<float>(1.0 / (sq[i] * c[i]));
      }
      gemm(false, false, L, V, L, 1.0f, A, L, vh, ldv, 0.0f, oh, ldv);
      if (run.hasInit()) {  // o_i += γ^(i+1) q_i Z₀ / (sqrt(Ŝ(i)) c_i)
        gemm(false, false, L, V, K, 1.0f, qh, ldk, Z, V, 0.0f, cross, V);
        for (int64_t i = 0; i < L; i++) {
          float w = static_cast<float>(pw[i + 1] / (sq[i] * c[i]));
          for (int64_t y = 0; y < V; y++) oh[i * ldv + y] += w * cross[i * V + y];
        }
      }
      if (!run.hasFinal()) return;
      // Z = γ^L Z₀ + Σ_m γ^(L−1−m) k_mᵀ v_m.
      for (int64_t m = 0; m < L; m++) {
        float w = static_cast<float>(pw[L - 1 - m]);
        for (int64_t x = 0; x < K; x++) scaled[m * K + x] = kh[m * ldk + x] * w;
      }
      gemm(true, false, K, V, L, 1.0f, scaled, K, vh, ldv, static_cast<float>(pw[L]), Z, V);
      run.finish(nh, K * V, Z, s0 * pw[L] + acc);
    });
  });
}
RETNET_KERNEL("retentionParallel", RetentionParallel);

// retentionChunkwise(q, k, v, gammas, o, r, workspace, initState, initScale, finalState, finalScale, segments, B, H,
// T, K, V, normalize, C): the chunkwise form (torchscale's chunk_recurrent_forward) of every sequence, parallel inside each chunk of C positions
// from the sequence start and recurrent across chunks through the K×V state, which starts at Z₀ / S(C−1). A last
// chunk shorter than C gives exactly the outputs of torchscale's zero padding; a continuation at a multiple of C is
// the same computation as one pass. Without normalisation every factor is 1.
static Napi::Value RetentionChunkwise(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    auto o = f32(info, 4, "o"), r = f32(info, 5, "r"), ws = f32(info, 6, "workspace");
    Sequence s = sequenceArgs(info, 12, g, "retentionChunkwise");
    Run run = runArgs(info, 7, 17, s, "retentionChunkwise");
    int64_t C = dim(info, 18, "chunkSize");
    if (C < 1) throw ArgError{"retentionChunkwise: chunk size must be at least 1"};
    int64_t H = s.H, T = s.T, K = s.K, V = s.V, ldk = s.H * K, ldv = s.H * V;
    int64_t NH = static_cast<int64_t>(run.seqs.size()) * H;
    int64_t per = workspacePerHead(Work::ChunkwiseForward, T, K, V, C);
    requireWorkspace(ws, NH, per, "retentionChunkwise");
    for (auto* t : {&q, &k}) require(*t, s.B * T * H * K, "retentionChunkwise", "q/k");
    for (auto* t : {&v, &o}) require(*t, s.B * T * H * V, "retentionChunkwise", "v/o");
    require(r, s.B * H * T, "retentionChunkwise", "r");
    int64_t Cw = std::max<int64_t>(1, std::min(C, T));  // chunk rows that can exist
    forEachItem(NH, ws.data, per, [&](int64_t nh, Carve scratch) {
      int64_t n = nh / H, h = nh % H, Tn = run.seqs[n].length;
      auto pw = powers(s.gammas[h], C + 1);
      auto sq = sqrtDecaySums(pw, C);
      double SC = run.normalize ? sq[C - 1] * sq[C - 1] : 1.0;
      if (!run.normalize) std::fill(sq.begin(), sq.end(), 1.0);
      float *A = scratch.take(Cw * Cw), *cross = scratch.take(Cw * V), *vd = scratch.take(Cw * V);
      float* Z = scratch.take(K * V);  // cross-chunk state Z_raw / S(C−1), [K, V]
      double s0 = run.start(nh, K * V, Z, 1.0 / SC);
      auto colMax = [&] {
        double sigma = 1;
        for (int64_t y = 0; y < V; y++) {
          double col = 0;
          for (int64_t x = 0; x < K; x++) col += std::fabs(Z[x * V + y]);
          sigma = std::max(sigma, col);
        }
        return sigma;
      };
      double sigma = run.normalize && run.hasInit() ? colMax() : 1;
      int64_t ok = run.row(s, n, h, K), ov = run.row(s, n, h, V), orr = run.rrow(s, n, h);
      const float *qh = q.data + ok, *kh = k.data + ok, *vh = v.data + ov;
      float* oh = o.data + ov;
      std::vector<double> m(Cw);
      bool rawZ = false;  // whether Z already holds the raw final state
      for (int64_t s0c = 0; s0c < Tn; s0c += C) {
        int64_t L = std::min(C, Tn - s0c);
        const float *qc = qh + s0c * ldk, *kc = kh + s0c * ldk, *vc = vh + s0c * ldv;
        float* oc = oh + s0c * ldv;
        gemm(false, true, L, L, K, 1.0f, qc, ldk, kc, ldk, 0.0f, A, L);
        for (int64_t i = 0; i < L; i++) {
          float* row = A + i * L;
          double abs = 0;
          for (int64_t j = 0; j <= i; j++) {
            row[j] = static_cast<float>(row[j] * pw[i - j] / sq[i]);
            abs += std::fabs(row[j]);
          }
          for (int64_t j = i + 1; j < L; j++) row[j] = 0.0f;
          m[i] = run.normalize ? std::max(std::max(abs, 1.0), sigma) : 1.0;
          r.data[orr + s0c + i] = static_cast<float>(1.0 / (sq[i] * m[i]));
        }
        gemm(false, false, L, V, L, 1.0f, A, L, vc, ldv, 0.0f, oc, ldv);  // inner: [L, V]
        gemm(false, false, L, V, K, 1.0f, qc, ldk, Z, V, 0.0f, cross, V);  // q Z: [L, V]
        for (int64_t i = 0; i < L; i++) {
          double qd = pw[i + 1] * SC / sq[i];
          for (int64_t y = 0; y < V; y++)
            oc[i * ldv + y] = static_cast<float>((oc[i * ldv + y] + qd * cross[i * V + y]) / m[i]);
        }
        bool last = s0c + L >= Tn;
        if (last && !run.hasFinal()) break;  // the final state is not needed
        // Z = γ^C Z + Σ_j k_jᵀ v_j γ^(C−1−j) / S(C−1); after the last chunk the raw state γ^L Z_raw + Σ_j γ^(L−1−j) k_jᵀ v_j.
        double scaleW = last ? 1.0 : 1.0 / SC;
        int64_t E = last ? L : C;
        for (int64_t j = 0; j < L; j++) {
          float w = static_cast<float>(pw[E - 1 - j] * scaleW);
          for (int64_t y = 0; y < V; y++) vd[j * V + y] = vc[j * ldv + y] * w;
        }
        float beta = static_cast<float>(last ? SC * pw[L] : pw[C]);
        gemm(true, false, K, V, L, 1.0f, kc, ldk, vd, V, beta, Z, V);
        if (last) {
          rawZ = true;
          break;
        }
        if (run.normalize) sigma = colMax();
      }
      if (!run.hasFinal()) return;
      if (!rawZ)  // no rows: the state is the start
        for (int64_t e = 0; e < K * V; e++) Z[e] = static_cast<float>(Z[e] * SC);
      double acc = 0;
      for (int64_t t = 0; t < Tn; t++) acc += std::exp(std::log(s.gammas[h]) * static_cast<double>(t));
      run.finish(nh, K * V, Z, s0 * std::exp(std::log(s.gammas[h]) * static_cast<double>(Tn)) + acc);
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

// One row of a float16 state: row[y] = f16(decay · row[y] + kx · v[y]) and o[y] += qx · (that sum in float32), as the
// float32 loop below does for a float32 row. 8 columns at a time with F16C in the avx2 build (binding.gyp); the
// baseline build, for CPUs without AVX2, converts one element at a time.
// Rows are walked one after another (each row read and written once, o accumulated in L1): a version in tiles of 32
// columns that kept o in registers while walking the K rows (a 1-2 KiB stride) ran at half the speed at the budget
// model's heads on stop 30's 2-core Zen 5 (`bench/step-turns.ts`, 2 threads, the two builds in alternating processes,
// batch 8: float16 state 23-30 GB/s of state read + written against 59-61 for the row walk, float32 46-48 against 58-59;
// the streaming read of as many bytes 44-67 in the same runs).
static void stepRow16(uint16_t* row, const float* v, float decay, float kx, float qx, float* o, int64_t V) {
  int64_t y = 0;
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
  __m256 d = _mm256_set1_ps(decay), kk = _mm256_set1_ps(kx), qq = _mm256_set1_ps(qx);
  for (; y + 8 <= V; y += 8) {
    __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + y)));
    s = _mm256_fmadd_ps(s, d, _mm256_mul_ps(kk, _mm256_loadu_ps(v + y)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row + y), _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
    _mm256_storeu_ps(o + y, _mm256_fmadd_ps(qq, s, _mm256_loadu_ps(o + y)));
  }
#endif
  for (; y < V; y++) {
    float s = lowp::fromF16(row[y]) * decay + kx * v[y];
    row[y] = lowp::toF16(s);
    o[y] += qx * s;
  }
}

// The state argument: a Float32Array (a float32 state) or a Uint16Array (float16 bits).
struct StateArg {
  float* f32;
  uint16_t* f16;
  size_t length;
};
static StateArg stateArg(const Napi::CallbackInfo& info, size_t i) {
  TypedArg t;
  if (typedArg(info, i, &t) && t.type == napi_uint16_array) return {nullptr, static_cast<uint16_t*>(t.data), t.length};
  auto a = f32(info, i, "state (a Float32Array, or a Uint16Array of float16 bits)");
  return {a.data, nullptr, a.length};
}

// retentionStep(q, k, v, gammas, state, scale, o, B, H, K, V, normalize): one recurrent step (recurrent_forward) for q, k
// [B, H, K] and v, o [B, H, V] (one position of the [B, T, H, *] layout), in place on state and scale; scale 0 marks
// an empty state, so the first step needs no special case. Without normalisation S' = γS + kᵀv (fla's RetNet). The
// state float32, or float16 bits (read as float32, stored rounded to nearest even; o from the float32 S').
static Napi::Value RetentionStep(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto g = f64(info, 3, "gammas");
    StateArg st = stateArg(info, 4);
    auto sc = f32(info, 5, "scale"), o = f32(info, 6, "o");
    int64_t B = dim(info, 7, "B"), H = dim(info, 8, "H"), K = dim(info, 9, "K"), V = dim(info, 10, "V");
    bool normalize = flag(info, 11, "normalize");
    int64_t BH = B * H;
    require(q, BH * K, "retentionStep", "q");
    require(k, BH * K, "retentionStep", "k");
    require(v, BH * V, "retentionStep", "v");
    require(Span<float>{st.f32, st.length}, BH * K * V, "retentionStep", "state");
    require(sc, BH, "retentionStep", "scale");
    require(o, BH * V, "retentionStep", "o");
    require(g, H, "retentionStep", "gammas");
    for (int64_t h = 0; h < H; h++)
      if (!(g.data[h] > 0.0 && g.data[h] < 1.0)) throw ArgError{"retentionStep: every decay gamma must lie in (0, 1)"};
    // One chunk per (batch row, head) through the decode products' worker pool (workers.h), not an OpenMP region:
    // its closing barrier waits for a thread the OS has not yet run (issue 13).
    const int threads = BH * K * V > kParallelGrain ? omp_get_max_threads() : 1;
    workers::forChunks(BH, threads, [&](int64_t bh) {
      double gamma = g.data[bh % H], prev = sc.data[bh], next = prev * gamma + 1;
      float decay = static_cast<float>(normalize ? std::sqrt(prev) * gamma / std::sqrt(next) : gamma);
      float inv = static_cast<float>(normalize ? 1.0 / std::sqrt(next) : 1.0);
      sc.data[bh] = static_cast<float>(next);
      const float *qh = q.data + bh * K, *kh = k.data + bh * K, *vh = v.data + bh * V;
      float* oh = o.data + bh * V;
      for (int64_t y = 0; y < V; y++) oh[y] = 0.0f;
      if (st.f16) {
        for (int64_t x = 0; x < K; x++) stepRow16(st.f16 + (bh * K + x) * V, vh, decay, kh[x] * inv, qh[x], oh, V);
        return;
      }
      float* S = st.f32 + bh * K * V;
      for (int64_t x = 0; x < K; x++) {
        float kx = kh[x] * inv, qx = qh[x];
        float* row = S + x * V;
        for (int64_t y = 0; y < V; y++) {
          row[y] = row[y] * decay + kx * vh[y];
          oh[y] += qx * row[y];
        }
      }
    });
  });
}
RETNET_KERNEL("retentionStep", RetentionStep);

// retentionWorkspace(kernel, B, H, T, K, V, C) -> floats of workspace the kernel needs (kernel a
// codes::RetentionWork; B: the sequences of a forward call).
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
    parallelFor(B * T, B * T * H * K > kParallelGrain, [&](int64_t bt) {
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
    });
  });
}
RETNET_KERNEL("rotary", Rotary);

}  // namespace retnet
