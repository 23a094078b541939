// Data movement: permuting the axes of a contiguous tensor into a new contiguous buffer, and strided block copies
// (slice and concat along one axis).
#include <cstring>

#include "common.h"

namespace retnet {

constexpr int kMaxRank = 8;

// permute(x, out, shape, perm): out has shape shape[perm[i]] and out[..., i_k, ...] = x[... i_perm^-1 ...].
static Napi::Value Permute(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto x = f32(info, 0, "x"), out = f32(info, 1, "out");
    auto shape = i32(info, 2, "shape"), perm = i32(info, 3, "perm");
    int rank = static_cast<int>(shape.length);
    if (rank < 1 || rank > kMaxRank || perm.length != shape.length)
      throw ArgError{"permute: rank must be 1..8 and perm must match it"};
    int64_t inStride[kMaxRank], outShape[kMaxRank], srcStride[kMaxRank];
    int64_t n = 1;
    for (int d = rank - 1; d >= 0; d--) {
      inStride[d] = n;
      n *= shape.data[d];
    }
    bool seen[kMaxRank] = {false};
    for (int d = 0; d < rank; d++) {
      int p = perm.data[d];
      if (p < 0 || p >= rank || seen[p]) throw ArgError{"permute: perm is not a permutation"};
      seen[p] = true;
      outShape[d] = shape.data[p];
      srcStride[d] = inStride[p];  // stride in x of the d-th output axis
    }
    require(x, n, "permute", "x");
    require(out, n, "permute", "out");
    if (n == 0) return;
    int64_t inner = outShape[rank - 1], innerStride = srcStride[rank - 1], rows = n / inner;
    const float* px = x.data;
    float* po = out.data;
    parallelFor(rows, n > kParallelGrain, [&](int64_t r) {
      // Decompose the output row index into coordinates of the leading output axes.
      int64_t rem = r, src = 0;
      for (int d = rank - 2; d >= 0; d--) {
        int64_t c = rem % outShape[d];
        rem /= outShape[d];
        src += c * srcStride[d];
      }
      float* o = po + r * inner;
      if (innerStride == 1)
        std::memcpy(o, px + src, sizeof(float) * inner);
      else
        for (int64_t j = 0; j < inner; j++) o[j] = px[src + j * innerStride];
    });
  });
}
RETNET_KERNEL("permute", Permute);

// copyBlocks(src, srcOff, srcStride, dst, dstOff, dstStride, blocks, len): for b in blocks,
// dst[dstOff + b*dstStride : +len] = src[srcOff + b*srcStride : +len]. Slice and concat along an axis are this copy.
static Napi::Value CopyBlocks(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto src = f32(info, 0, "src");
    int64_t so = dim(info, 1, "srcOff"), ss = dim(info, 2, "srcStride");
    auto dst = f32(info, 3, "dst");
    int64_t dO = dim(info, 4, "dstOff"), ds = dim(info, 5, "dstStride");
    int64_t blocks = dim(info, 6, "blocks"), len = dim(info, 7, "len");
    if (blocks == 0 || len == 0) return;
    require(src, so + (blocks - 1) * ss + len, "copyBlocks", "src");
    require(dst, dO + (blocks - 1) * ds + len, "copyBlocks", "dst");
    const float* ps = src.data;
    float* pd = dst.data;
    parallelFor(blocks, blocks * len > kParallelGrain,
                [&](int64_t b) { std::memcpy(pd + dO + b * ds, ps + so + b * ss, sizeof(float) * len); });
  });
}
RETNET_KERNEL("copyBlocks", CopyBlocks);

}  // namespace retnet
