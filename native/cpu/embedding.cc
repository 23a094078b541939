// Token embedding lookup and its gradient (a scatter-add into the table).
#include <cstring>
#include <string>

#include "common.h"

namespace retnet {

static void checkIds(const Span<int32_t>& ids, int64_t n, int64_t vocab, const char* kernel) {
  for (int64_t i = 0; i < n; i++)
    if (ids.data[i] < 0 || ids.data[i] >= vocab)
      throw ArgError{std::string(kernel) + ": token id " + std::to_string(ids.data[i]) + " at position " +
                     std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")"};
}

// embedding(table, ids, out, n, dim, vocab): out[i] = table[ids[i]].
static Napi::Value Embedding(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto table = f32(info, 0, "table");
    auto ids = i32(info, 1, "ids");
    auto out = f32(info, 2, "out");
    int64_t n = dim(info, 3, "n"), D = dim(info, 4, "dim"), vocab = dim(info, 5, "vocab");
    require(table, vocab * D, "embedding", "table");
    require(ids, n, "embedding", "ids");
    require(out, n * D, "embedding", "out");
    checkIds(ids, n, vocab, "embedding");
    for (int64_t i = 0; i < n; i++)
      std::memcpy(out.data + i * D, table.data + static_cast<int64_t>(ids.data[i]) * D, sizeof(float) * D);
  });
}
RETNET_KERNEL("embedding", Embedding);

// embeddingBackward(g, ids, dtable, n, dim, vocab): dtable[ids[i]] += g[i]. Threads split the columns, so no two
// threads ever write the same element and repeated ids need no atomics.
static Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&] {
    auto g = f32(info, 0, "g");
    auto ids = i32(info, 1, "ids");
    auto dt = f32(info, 2, "dtable");
    int64_t n = dim(info, 3, "n"), D = dim(info, 4, "dim"), vocab = dim(info, 5, "vocab");
    require(g, n * D, "embeddingBackward", "g");
    require(ids, n, "embeddingBackward", "ids");
    require(dt, vocab * D, "embeddingBackward", "dtable");
    checkIds(ids, n, vocab, "embeddingBackward");
    const float* pg = g.data;
    const int32_t* pi = ids.data;
    float* pd = dt.data;
    constexpr int64_t kBlock = 64;
    int64_t blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for if (n * D > kParallelGrain) schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
      int64_t j0 = blk * kBlock, j1 = j0 + kBlock < D ? j0 + kBlock : D;
      for (int64_t i = 0; i < n; i++) {
        float* row = pd + static_cast<int64_t>(pi[i]) * D;
        const float* gr = pg + i * D;
        for (int64_t j = j0; j < j1; j++) row[j] += gr[j];
      }
    }
  });
}
RETNET_KERNEL("embeddingBackward", EmbeddingBackward);

}  // namespace retnet
