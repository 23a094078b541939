// Causal multi-head softmax attention (the Transformer baseline): per head, o_i = Σ_{j≤i} P_ij v_j with
// P_ij = softmax_j(q_i·k_j / sqrt(K)) over j ≤ i. Two algorithms, forward and backward, plus KV-cache decoding:
//  - naive: P [B, H, T, T] is materialised (and saved for backward); backward needs another T×T buffer per head.
//  - flash: FlashAttention (Dao et al. 2022, with the FlashAttention-2 loop order): queries and keys in tiles of
//    kTile, an online softmax (running max m and sum l per row, the partial output rescaled when m grows), and only
//    o and the row log-sum-exp L = m + log l are kept. Backward recomputes P = exp(s − L) tile by tile. No buffer
//    larger than a tile exists, so memory is linear in T.
// Layouts: q, k [B, T, H, K] and v, o [B, T, H, V], time-major as the projections produce them (one head's rows are
// H·K or H·V apart, which BLAS takes as a leading dimension, so no permute is needed); p [B, H, T, T]; lse [B, H, T];
// KV caches [B, H, C, K|V] (head-major: decoding reads one head's cached rows contiguously). Scratch comes from a
// caller-provided workspace (attentionWorkspace), so memory accounting sees it.
#include <algorithm>
#include <cmath>

#include "heads.h"

namespace retnet {

namespace {

// Tile edge of the flash kernels (queries and keys); tile products go to cblas_sgemm. Measured single-threaded
// (RETNET_THREADS=1) at B=1, H=8, K=64, T=2048: tiles of 64 and 128 within noise of each other (forward ≈ 75 ms,
// also at K=128), 32 about 30% slower; plain vectorised loops instead of sgemm for the forward's two tile products
// took 312 ms.
constexpr int64_t kTile = 64;

using Work = codes::AttentionWork;

int64_t blocks(int64_t T) { return (T + kTile - 1) / kTile; }

// Work items: flash forward splits each head into query tiles; everything else works per head.
int64_t workItems(Work w, int64_t B, int64_t H, int64_t T) {
  return w == Work::FlashForward ? B * H * blocks(T) : B * H;
}

// Scratch floats per concurrently running item (T is the cache capacity C for Decode).
int64_t workspacePerItem(Work w, int64_t T, int64_t V) {
  switch (w) {
    case Work::NaiveForward: return 0;
    case Work::NaiveBackward: return T * T;                      // dP
    case Work::FlashForward: return kTile * kTile + kTile * V + 2 * kTile;  // S/P tile, output rows, m, l
    case Work::FlashBackward: return 2 * kTile * kTile + T;      // P and dP tiles, D = rowsum(dO ⊙ o)
    case Work::Decode: return T;                                  // one row of scores
  }
  return 0;
}

// e^x for x ≤ 0 (softmax arguments once the row max is subtracted): Cephes' expf range reduction and polynomial
// (relative error about 2e-7) as branch-free float code, which the compiler vectorises (std::exp stays scalar). With
// scalar exponentials the flash forward above took 118 ms instead of 77: T²/2 exponentials per head cost about as
// much as the products. Arguments below −87 give e^−87 (no denormals).
inline float expNonPositive(float x) {
  x = std::max(x, -87.0f);
  // n = round(x / ln 2): for x ≤ 0 truncating x/ln 2 − 1/2 rounds to nearest (std::floor would block vectorising).
  int32_t n = static_cast<int32_t>(x * 1.44269504088896341f - 0.5f);
  float r = x - static_cast<float>(n) * 0.693359375f + static_cast<float>(n) * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  float twoN = __builtin_bit_cast(float, (n + 127) << 23);
  return y * twoN;
}

// row[0, valid) ← exp(row − shift), row[valid, n) ← 0 (the causal mask). Returns the sum of the exponentials. Kept
// out of line so that it is vectorised once whatever the caller (binding.gyp's -fno-trapping-math lets GCC turn the
// clamp into a vector max).
__attribute__((noinline)) float expRow(float* row, int64_t valid, int64_t n, float shift) {
#pragma omp simd
  for (int64_t c = 0; c < valid; c++) row[c] = expNonPositive(row[c] - shift);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < valid; c++) sum += row[c];
  for (int64_t c = valid; c < n; c++) row[c] = 0.0f;
  return sum;
}

inline float rowMax(const float* row, int64_t n, float start) {
  float mx = start;
#pragma omp simd reduction(max : mx)
  for (int64_t c = 0; c < n; c++) mx = std::max(mx, row[c]);
  return mx;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t x = 0; x < n; x++) s += a[x] * b[x];
  return s;
}

struct Dims {
  int64_t B, H, T, K, V;
  int64_t heads() const { return B * H; }
  // Offset of head bh's first row in a [B, T, H, W] tensor; its rows are H·W apart.
  int64_t head(int64_t bh, int64_t W) const { return ((bh / H) * T * H + bh % H) * W; }
};

Dims attentionDims(const Napi::CallbackInfo& info, size_t at) {
  return {dim(info, at, "B"), dim(info, at + 1, "H"), dim(info, at + 2, "T"), dim(info, at + 3, "K"),
          dim(info, at + 4, "V")};
}

void requireQKV(const Dims& d, const Span<float>& q, const Span<float>& k, const Span<float>& v, const char* kernel) {
  int64_t BH = d.heads();
  require(q, BH * d.T * d.K, kernel, "q");
  require(k, BH * d.T * d.K, kernel, "k");
  require(v, BH * d.T * d.V, kernel, "v");
}

}  // namespace

// attentionNaive(q, k, v, o, p, B, H, T, K, V): P = causal softmax(q kᵀ/sqrt(K)) into p, o = P v.
static Napi::Value AttentionNaive(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto o = f32(info, 3, "o"), p = f32(info, 4, "p");
    Dims d = attentionDims(info, 5);
    int64_t T = d.T, K = d.K, V = d.V;
    requireQKV(d, q, k, v, "attentionNaive");
    require(o, d.heads() * T * V, "attentionNaive", "o");
    require(p, d.heads() * T * T, "attentionNaive", "p");
    float scale = 1.0f / std::sqrt(static_cast<float>(K));
    int64_t ldk = d.H * K, ldv = d.H * V;
    forEachItem(d.heads(), nullptr, 0, [&](int64_t bh, Carve) {
      float* P = p.data + bh * T * T;
      // The full T×T product, upper triangle included: the naive algorithm does not exploit causality.
      gemm(false, true, T, T, K, scale, q.data + d.head(bh, K), ldk, k.data + d.head(bh, K), ldk, 0.0f, P, T);
      for (int64_t i = 0; i < T; i++) {
        float* row = P + i * T;
        float inv = 1.0f / expRow(row, i + 1, T, rowMax(row, i + 1, -INFINITY));
        for (int64_t j = 0; j <= i; j++) row[j] *= inv;
      }
      gemm(false, false, T, V, T, 1.0f, P, T, v.data + d.head(bh, V), ldv, 0.0f, o.data + d.head(bh, V), ldv);
    });
  });
}
RETNET_KERNEL("attentionNaive", AttentionNaive);

// attentionNaiveBackward(q, k, v, p, dO, dq, dk, dv, workspace, B, H, T, K, V):
// dv = Pᵀ dO; dP = dO vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)) / sqrt(K); dq = dS k; dk = dSᵀ q.
static Napi::Value AttentionNaiveBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v"), p = f32(info, 3, "p");
    auto dO = f32(info, 4, "dO"), dq = f32(info, 5, "dq"), dk = f32(info, 6, "dk"), dv = f32(info, 7, "dv");
    auto ws = f32(info, 8, "workspace");
    Dims d = attentionDims(info, 9);
    int64_t BH = d.heads(), T = d.T, K = d.K, V = d.V;
    int64_t per = workspacePerItem(Work::NaiveBackward, T, V);
    requireQKV(d, q, k, v, "attentionNaiveBackward");
    require(p, BH * T * T, "attentionNaiveBackward", "p");
    require(dO, BH * T * V, "attentionNaiveBackward", "dO");
    require(dq, BH * T * K, "attentionNaiveBackward", "dq");
    require(dk, BH * T * K, "attentionNaiveBackward", "dk");
    require(dv, BH * T * V, "attentionNaiveBackward", "dv");
    requireWorkspace(ws, BH, per, "attentionNaiveBackward");
    float scale = 1.0f / std::sqrt(static_cast<float>(K));
    int64_t ldk = d.H * K, ldv = d.H * V;
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      int64_t hk = d.head(bh, K), hv = d.head(bh, V);
      const float *P = p.data + bh * T * T, *qh = q.data + hk, *kh = k.data + hk, *vh = v.data + hv, *gh = dO.data + hv;
      float* dS = scratch.take(T * T);
      gemm(true, false, T, V, T, 1.0f, P, T, gh, ldv, 0.0f, dv.data + hv, ldv);
      gemm(false, true, T, T, V, 1.0f, gh, ldv, vh, ldv, 0.0f, dS, T);
      for (int64_t i = 0; i < T; i++) {
        const float* pr = P + i * T;
        float* sr = dS + i * T;
        float D = dot(pr, sr, T);
        for (int64_t j = 0; j < T; j++) sr[j] = pr[j] * (sr[j] - D) * scale;
      }
      gemm(false, false, T, K, T, 1.0f, dS, T, kh, ldk, 0.0f, dq.data + hk, ldk);
      gemm(true, false, T, K, T, 1.0f, dS, T, qh, ldk, 0.0f, dk.data + hk, ldk);
    });
  });
}
RETNET_KERNEL("attentionNaiveBackward", AttentionNaiveBackward);

// attentionFlash(q, k, v, o, lse, workspace, B, H, T, K, V): the flash forward. Work items are (head, query tile),
// the longest (last) tiles handed out first.
static Napi::Value AttentionFlash(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v");
    auto o = f32(info, 3, "o"), lse = f32(info, 4, "lse"), ws = f32(info, 5, "workspace");
    Dims d = attentionDims(info, 6);
    int64_t BH = d.heads(), T = d.T, K = d.K, V = d.V;
    int64_t items = workItems(Work::FlashForward, d.B, d.H, T), per = workspacePerItem(Work::FlashForward, T, V);
    requireQKV(d, q, k, v, "attentionFlash");
    require(o, BH * T * V, "attentionFlash", "o");
    require(lse, BH * T, "attentionFlash", "lse");
    requireWorkspace(ws, items, per, "attentionFlash");
    float scale = 1.0f / std::sqrt(static_cast<float>(K));
    int64_t nb = blocks(T), ldk = d.H * K, ldv = d.H * V;
    forEachItem(items, ws.data, per, [&](int64_t item, Carve scratch) {
      int64_t bh = item % BH, i0 = (nb - 1 - item / BH) * kTile, rows = std::min(kTile, T - i0);
      float *S = scratch.take(kTile * kTile), *acc = scratch.take(kTile * V);
      float *m = scratch.take(kTile), *l = scratch.take(kTile);
      const float *kh = k.data + d.head(bh, K), *vh = v.data + d.head(bh, V), *qi = q.data + d.head(bh, K) + i0 * ldk;
      std::fill(m, m + rows, -INFINITY);
      std::fill(l, l + rows, 0.0f);
      std::fill(acc, acc + rows * V, 0.0f);
      // Key tiles up to the last query row; only the diagonal tile is partly masked.
      for (int64_t j0 = 0; j0 < i0 + rows; j0 += kTile) {
        int64_t cols = std::min(kTile, i0 + rows - j0);
        gemm(false, true, rows, cols, K, scale, qi, ldk, kh + j0 * ldk, ldk, 0.0f, S, cols);  // S: [rows, cols]
        for (int64_t r = 0; r < rows; r++) {
          float* row = S + r * cols;
          int64_t valid = std::min(cols, i0 + r - j0 + 1);
          float mx = rowMax(row, valid, m[r]);
          float rescale = expNonPositive(m[r] - mx);  // ≈0 on the first tile, where m = −∞ and acc, l are 0
          l[r] = l[r] * rescale + expRow(row, valid, cols, mx);
          m[r] = mx;
          if (rescale != 1.0f)
            for (float *a = acc + r * V, *end = a + V; a < end; a++) *a *= rescale;
        }
        gemm(false, false, rows, V, cols, 1.0f, S, cols, vh + j0 * ldv, ldv, 1.0f, acc, V);  // acc += P v_j
      }
      for (int64_t r = 0; r < rows; r++) {
        float inv = 1.0f / l[r];
        float* out = o.data + d.head(bh, V) + (i0 + r) * ldv;
        for (int64_t x = 0; x < V; x++) out[x] = acc[r * V + x] * inv;
        lse.data[bh * T + i0 + r] = m[r] + std::log(l[r]);
      }
    });
  });
}
RETNET_KERNEL("attentionFlash", AttentionFlash);

// attentionFlashBackward(q, k, v, o, lse, dO, dq, dk, dv, workspace, B, H, T, K, V): per head, for each key tile j
// and each query tile i ≥ j: P = exp(q_i k_jᵀ/sqrt(K) − L_i) (masked), dv_j += Pᵀ dO_i, dP = dO_i v_jᵀ,
// dS = P ⊙ (dP − D_i)/sqrt(K) with D = rowsum(dO ⊙ o), dq_i += dS k_j, dk_j += dSᵀ q_i. A thread owns a whole
// head, so the dq accumulation needs no synchronisation (parallelism is over the B·H heads).
static Napi::Value AttentionFlashBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), k = f32(info, 1, "k"), v = f32(info, 2, "v"), o = f32(info, 3, "o");
    auto lse = f32(info, 4, "lse"), dO = f32(info, 5, "dO");
    auto dq = f32(info, 6, "dq"), dk = f32(info, 7, "dk"), dv = f32(info, 8, "dv"), ws = f32(info, 9, "workspace");
    Dims d = attentionDims(info, 10);
    int64_t BH = d.heads(), T = d.T, K = d.K, V = d.V;
    int64_t per = workspacePerItem(Work::FlashBackward, T, V);
    requireQKV(d, q, k, v, "attentionFlashBackward");
    require(o, BH * T * V, "attentionFlashBackward", "o");
    require(lse, BH * T, "attentionFlashBackward", "lse");
    require(dO, BH * T * V, "attentionFlashBackward", "dO");
    require(dq, BH * T * K, "attentionFlashBackward", "dq");
    require(dk, BH * T * K, "attentionFlashBackward", "dk");
    require(dv, BH * T * V, "attentionFlashBackward", "dv");
    requireWorkspace(ws, BH, per, "attentionFlashBackward");
    float scale = 1.0f / std::sqrt(static_cast<float>(K));
    int64_t ldk = d.H * K, ldv = d.H * V;
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      float *P = scratch.take(kTile * kTile), *dS = scratch.take(kTile * kTile), *D = scratch.take(T);
      int64_t hk = d.head(bh, K), hv = d.head(bh, V);
      const float *qh = q.data + hk, *kh = k.data + hk, *vh = v.data + hv, *oh = o.data + hv, *gh = dO.data + hv;
      const float* L = lse.data + bh * T;
      float *dqh = dq.data + hk, *dkh = dk.data + hk, *dvh = dv.data + hv;
      for (int64_t i = 0; i < T; i++) {
        D[i] = dot(gh + i * ldv, oh + i * ldv, V);
        std::fill(dqh + i * ldk, dqh + i * ldk + K, 0.0f);
        std::fill(dkh + i * ldk, dkh + i * ldk + K, 0.0f);
        std::fill(dvh + i * ldv, dvh + i * ldv + V, 0.0f);
      }
      for (int64_t j0 = 0; j0 < T; j0 += kTile) {
        int64_t cols = std::min(kTile, T - j0);
        const float *kj = kh + j0 * ldk, *vj = vh + j0 * ldv;
        for (int64_t i0 = j0; i0 < T; i0 += kTile) {
          int64_t rows = std::min(kTile, T - i0);
          const float *qi = qh + i0 * ldk, *gi = gh + i0 * ldv;
          gemm(false, true, rows, cols, K, scale, qi, ldk, kj, ldk, 0.0f, P, cols);
          for (int64_t r = 0; r < rows; r++)
            expRow(P + r * cols, std::min(cols, i0 + r - j0 + 1), cols, L[i0 + r]);
          gemm(true, false, cols, V, rows, 1.0f, P, cols, gi, ldv, 1.0f, dvh + j0 * ldv, ldv);  // dv_j += Pᵀ dO_i
          gemm(false, true, rows, cols, V, 1.0f, gi, ldv, vj, ldv, 0.0f, dS, cols);             // dP = dO_i v_jᵀ
          for (int64_t r = 0; r < rows; r++) {
            float Di = D[i0 + r];
            float *pr = P + r * cols, *sr = dS + r * cols;
            for (int64_t c = 0; c < cols; c++) sr[c] = pr[c] * (sr[c] - Di) * scale;
          }
          gemm(false, false, rows, K, cols, 1.0f, dS, cols, kj, ldk, 1.0f, dqh + i0 * ldk, ldk);  // dq_i += dS k_j
          gemm(true, false, cols, K, rows, 1.0f, dS, cols, qi, ldk, 1.0f, dkh + j0 * ldk, ldk);   // dk_j += dSᵀ q_i
        }
      }
    });
  });
}
RETNET_KERNEL("attentionFlashBackward", AttentionFlashBackward);

// attentionDecode(q, kCache, vCache, lengths, o, workspace, B, H, C, K, V): one query per (row, head) against the
// first lengths[b] cached positions: o = softmax(q kᵀ/sqrt(K)) v. q [B, H, K], caches [B, H, C, *], o [B, H, V].
static Napi::Value AttentionDecode(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto q = f32(info, 0, "q"), kc = f32(info, 1, "kCache"), vc = f32(info, 2, "vCache");
    auto lengths = i32(info, 3, "lengths");
    auto o = f32(info, 4, "o"), ws = f32(info, 5, "workspace");
    Dims d = attentionDims(info, 6);  // T is the cache capacity C
    int64_t BH = d.heads(), C = d.T, K = d.K, V = d.V;
    int64_t per = workspacePerItem(Work::Decode, C, V);
    require(q, BH * K, "attentionDecode", "q");
    require(kc, BH * C * K, "attentionDecode", "kCache");
    require(vc, BH * C * V, "attentionDecode", "vCache");
    require(lengths, d.B, "attentionDecode", "lengths");
    require(o, BH * V, "attentionDecode", "o");
    requireWorkspace(ws, BH, per, "attentionDecode");
    for (int64_t b = 0; b < d.B; b++)
      if (lengths.data[b] < 1 || lengths.data[b] > C)
        throw ArgError{"attentionDecode: length " + std::to_string(lengths.data[b]) + " of row " + std::to_string(b) +
                       " is outside [1, " + std::to_string(C) + "]"};
    float scale = 1.0f / std::sqrt(static_cast<float>(K));
    forEachItem(BH, ws.data, per, [&](int64_t bh, Carve scratch) {
      int64_t n = lengths.data[bh / d.H];
      float* s = scratch.take(n);
      const float *qh = q.data + bh * K, *kh = kc.data + bh * C * K, *vh = vc.data + bh * C * V;
      for (int64_t j = 0; j < n; j++) s[j] = scale * dot(qh, kh + j * K, K);
      float inv = 1.0f / expRow(s, n, n, rowMax(s, n, -INFINITY));
      float* out = o.data + bh * V;
      std::fill(out, out + V, 0.0f);
      for (int64_t j = 0; j < n; j++) {
        float w = s[j] * inv;
        const float* vr = vh + j * V;
        for (int64_t x = 0; x < V; x++) out[x] += w * vr[x];
      }
    });
  });
}
RETNET_KERNEL("attentionDecode", AttentionDecode);

// attentionWorkspace(kernel, B, H, T, V) -> floats of workspace the kernel needs (kernel a codes::AttentionWork; T is
// the cache capacity for Decode).
static Napi::Value AttentionWorkspace(const Napi::CallbackInfo& info) {
  int64_t floats = 0;
  Napi::Value r = guard(info, [&] {
    int64_t kind = dim(info, 0, "kernel");
    if (kind >= codes::kAttentionWorkCount) throw ArgError{"attentionWorkspace: unknown kernel kind"};
    int64_t B = dim(info, 1, "B"), H = dim(info, 2, "H"), T = dim(info, 3, "T"), V = dim(info, 4, "V");
    Work w = static_cast<Work>(kind);
    floats = workSlots(workItems(w, B, H, T)) * workspacePerItem(w, T, V);
  });
  if (info.Env().IsExceptionPending()) return r;
  return Napi::Number::New(info.Env(), static_cast<double>(floats));
}
RETNET_KERNEL("attentionWorkspace", AttentionWorkspace);

}  // namespace retnet
