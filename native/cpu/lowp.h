// Low-precision weights for decode-size products: y[b, n] = Σ_k x[b, k] · W[n, k] for b < B (a few rows, 1 to 16),
// with W [N, K] (a Linear's [out, in]) stored in one of four formats and x, y in float32. Reading W is what a decode
// step costs, so each format's kernel is written to stream its bytes at the memory's rate (docs/kernels.md).
//
// Formats (the dtypes of src/tensor/dtype.ts are their definition: float32, bfloat16, float16, qint8, qint4):
//   f32   W as float32 [N, K].
//   bf16  W as bfloat16 bits [N, K] (the top half of a float32, rounded to nearest even).
//   f16   W as float16 bits [N, K] (converted with F16C, then as f32).
//   int8  q int8 [N, K] and one float32 scale per output row: W[n, k] = s[n] · q[n, k], s = max|W[n, :]| / 127.
//   q4    blocks of 32 along K, K padded with zero weights to Kp = a multiple of 64: per block a float16 scale d and
//         32 4-bit values u in [0, 15], W = d · (u − 8), d = (the block's value of largest magnitude) / −8, so that
//         value is exact. Row n's block j holds its 16 bytes at qs[n][16 j ..]: byte i = u_i | u_{i+16} << 4.
//         Scales d [N, Kp / 32] as float16 bits.
//
// How x meets W. f32 and bf16 weights convert exactly to float32 and meet x in float32 FMAs (the AVX-512 BF16 path
// splits x into bf16 hi + lo parts, so x keeps about 16 of its 24 bits: relative error ≤ 2⁻¹⁶ per element). int8
// weights meet x quantised per block of 32 to int16 (error ≤ max|x_block| / 65534 per element, 2⁸ times finer than
// bf16) in exact 16-bit integer multiply-adds (pmaddwd; AVX512-VNNI vpdpwssd); q4 weights meet x quantised per block
// of 32 to int8 (error ≤ max|x_block| / 254, far below the weights' own 4-bit error) in exact 8-bit multiply-adds
// (pmaddubsw; AVX512-VNNI vpdpbusd). One float FMA per block (int8) or per 8 blocks (q4) applies the scales; x is
// quantised 8 values at a time (AVX2), the same values as the scalar definition. Measured with bench/lowp_kernels.cc
// on this machine (2-core AMD EPYC, family 17h; one thread, 256 x 2048 weights in cache, so the arithmetic alone):
// int8 with int16 x 0.058 ms against 0.080 converting each weight to float32 (0.057 with x quantised 8 at a time);
// q4 with int8 x 0.044 against 0.063 with int16 x (0.034 folding 8 blocks per scale FMA, lowp_kernels.inc); bf16
// split into even/odd elements 0.050 against 0.082 widening 8 at a time. q4 and int8 stay below what two cores read
// from memory (the harness prints both).
//
// Everything here is plain C++ with raw pointers (no Node-API): native/cpu/lowp.cc binds it, and the development
// harness bench/lowp_kernels.cc times and validates it directly.
#pragma once

#include <cstdint>

namespace retnet::lowp {

enum class Format : int { f32 = 0, bf16 = 1, int8 = 2, q4 = 3, f16 = 4 };

// Instruction sets a kernel may be built for. Every format has avx2 and scalar; f32, f16 and bf16 have avx512
// (512-bit float FMAs, AVX-512F/BW/VL), bf16 also avx512bf16, int8 and q4 have avx512vnni. `best` picks the fastest
// the CPU has (the order of bestIsa, measured).
enum class Isa : int { best = -1, scalar = 0, avx2 = 1, avx512bf16 = 2, avx512vnni = 3, avx512 = 4 };

const char* isaName(Isa isa);
// Whether this CPU (and this build) can run the given instruction set.
bool cpuHas(Isa isa);
// The variant `gemv` runs for a format when asked for Isa::best: bestIsaFor(f, B) for B rows of x (the float
// formats' choice depends on B), bestIsa(f) that for B > 1.
Isa bestIsa(Format f);
Isa bestIsaFor(Format f, int64_t B);
// Whether a variant exists for the format (independent of the CPU).
bool hasVariant(Format f, Isa isa);

constexpr int64_t kQ4Block = 32;
// Rows of q4 weights are padded to a multiple of this many columns (two blocks: the AVX2 kernel's unit).
constexpr int64_t kQ4RowAlign = 64;
inline int64_t q4PaddedK(int64_t K) { return (K + kQ4RowAlign - 1) / kQ4RowAlign * kQ4RowAlign; }

// The weights of one product. Unused pointers are null.
struct Weights {
  Format format;
  int64_t N, K;
  const void* data;     // f32: float[N·K]; bf16, f16: uint16[N·K]; int8: int8[N·K]; q4: uint8[N·Kp/2]
  const void* scales;   // int8: float[N]; q4: uint16 (float16 bits)[N·Kp/32]
};

// Bytes of scratch `gemv` needs for B rows of x (the prepared copy of x: quantised or split).
int64_t workspaceBytes(Format f, Isa isa, int64_t B, int64_t K);

// y[b·ldy + n] = Σ_k x[b·K + k] W[n, k] for b < B, n < N, on up to `threads` threads (rows of W split between them).
// workspace: workspaceBytes(...) bytes (any alignment). isa must satisfy cpuHas (callers check).
void gemv(const Weights& w, const float* x, int64_t B, float* y, int64_t ldy, void* workspace, Isa isa, int threads);

// The products of several weights with the same x (a layer's q, k, v and g projections; the FFN's fc1 and gate):
// y_i[b·N_i + n] = Σ_k x[b·K + k] W_i[n, k] for i < count, every W_i of one format and K. x is prepared once and the
// chunks of all the products go to the threads as one job, so the threads wake once and none waits at the end of
// each product for the other's last chunk. workspace: workspaceBytes(format, isa, B, K) bytes, as for one product.
void gemvShared(const Weights* ws, int64_t count, const float* x, int64_t B, float* const* ys, void* workspace, Isa isa,
                int threads);

// y [R, N] = x [R, K] · Wᵀ for more rows of x than the decode kernels take (prefill, large decode batches): W is
// converted to float32 a tile of rows at a time and each tile's product is an sgemm. On `threads` > 1 threads the
// rows of W are split into parts, one per thread, each with its own tile in `tiles` and a one-threaded sgemm.
// tiles: tiledFloats(N, K, threads) floats.
void tiledProduct(const Weights& w, const float* x, int64_t R, float* y, float* tiles, int threads);
int64_t tiledFloats(int64_t N, int64_t K, int threads);

// float32 → bfloat16 bits, round to nearest even (NaN stays NaN).
uint16_t toBF16(float f);
float fromBF16(uint16_t h);
float fromF16(uint16_t h);
// float32 → float16 bits, round to nearest even (overflow to infinity, NaN stays NaN).
uint16_t toF16(float f);

// Reads `bytes` of memory on `threads` threads and returns a value depending on all of it, so the reads cannot be
// optimised away: the read-bandwidth ceiling a decode step is measured against. The threads claim 1 MiB parts in
// turn, each read as 8 streams of 128 KiB side by side (as the f32 kernel reads 8 rows side by side): on this stop's
// 2-core Intel Xeon (family 6 model 167; timing lock, 256 MiB, best of 8) one stream per thread read 10.1 / 19.6 GB/s
// on 1 / 2 threads, 4 streams 14.3 / 29.2, 8 streams 14.3 / 30.8, 16 streams 14.7 / 30.9 (parts of 128 KiB to 128 MiB
// within 5% of each other), so the one-stream probe understated what memory delivers by a third. Sizes: that Xeon
// reads up to 64 MiB from its caches (30 GB/s on one thread), 128 MiB to 1 GiB at 15.4-16.2; the suites read ≥ 256 MiB.
float streamRead(const void* data, int64_t bytes, int threads);

// ---------------------------------------------------------------------------------------------------------------------
// Per-ISA entry points (lowp_avx2.cc, lowp_avx512.cc). Each computes output rows [n0, n1) from an x already prepared
// by its `prepare` into `px`.
namespace isa_avx2 {
void prepare(Format f, const float* x, int64_t B, int64_t K, void* px);
int64_t preparedBytes(Format f, int64_t B, int64_t K);
void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1);
float readStreams(const void* data, int64_t bytes);
}  // namespace isa_avx2
namespace isa_avx512vnni {
void prepare(Format f, const float* x, int64_t B, int64_t K, void* px);
int64_t preparedBytes(Format f, int64_t B, int64_t K);
void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1);
}  // namespace isa_avx512vnni
namespace isa_avx512 {
void prepare(Format f, const float* x, int64_t B, int64_t K, void* px);
int64_t preparedBytes(Format f, int64_t B, int64_t K);
void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1);
}  // namespace isa_avx512
namespace isa_avx512bf16 {
void prepare(Format f, const float* x, int64_t B, int64_t K, void* px);
int64_t preparedBytes(Format f, int64_t B, int64_t K);
void rows(const Weights& w, const float* x, const void* px, int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1);
}  // namespace isa_avx512bf16

}  // namespace retnet::lowp
