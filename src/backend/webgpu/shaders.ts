// WGSL sources of the webgpu kernels. Binding 0 is each shader's uniform struct P (filled in field order by
// WebGpuDevice.dispatch); bindings 1.. are storage buffers in the order the kernel passes them. Elementwise shaders
// run 256 invocations per workgroup on a 2-D grid of workgroups (a dimension holds at most 65535), flattened by `flat`.
//
// Arithmetic is float32. bfloat16/float16 tensors (the weights of a 16-bit checkpoint) are stored packed, two per u32
// (element i in the low half of word i/2 when i is even), and unpacked where they are read: the products, the
// embedding lookup and the casts take any of these storage dtypes. Native f16 (the shader-f16 feature) would serve
// only float16, only on adapters that have it (SwiftShader, which CI runs on, does not, so such a path could not be
// tested here), and bfloat16, the dtype of fla's checkpoints, has no WGSL type at all; unpacking with integer ops
// works on every adapter, halves the weights' memory and bandwidth, and gives the exact values (float16 is decoded by
// hand rather than with unpack2x16float, whose handling of subnormals WGSL leaves to the implementation).

const FLAT = /* wgsl */ `
fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * 256u + lid; }`;

const ELEMENTWISE_ARGS = /* wgsl */ `@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32`;

/** Storage modes of a tensor bound as array<u32>: its dtype (kernels.ts's MODES). */
const DECODE = /* wgsl */ `
fn bf16Value(h: u32) -> f32 { return bitcast<f32>(h << 16u); }
fn f16Value(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) { let v = f32(m) * 5.9604644775390625e-8; return select(v, -v, sign != 0u); } // m · 2^-24
  if (e == 31u) { return bitcast<f32>(sign | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
// Element i of a tensor in mode 0 (float32), 1 (bfloat16), 2 (float16) or 3 (int32, as a float), from its words.
fn half(w: u32, i: u32) -> u32 { return (w >> ((i & 1u) * 16u)) & 0xffffu; }
fn valueOf(w: u32, i: u32, mode: u32) -> f32 {
  if (mode == 0u) { return bitcast<f32>(w); }
  if (mode == 1u) { return bf16Value(half(w, i)); }
  if (mode == 2u) { return f16Value(half(w, i)); }
  return f32(bitcast<i32>(w));
}`;

/** `fn name(i) -> f32`: element i of the array<u32> `arr` in storage mode `mode` (one word per element, or half of one). */
const loader = (name: string, arr: string, mode: string) => /* wgsl */ `
fn ${name}(i: u32) -> f32 {
  if (${mode} == 0u || ${mode} == 3u) { return valueOf(${arr}[i], i, ${mode}); }
  return valueOf(${arr}[i >> 1u], i, ${mode});
}`;

/**
 * C[b] = op(A[b]) op(B[b]) in float32, 16×16 output tiles through workgroup memory; B shared by the batch when
 * bBatched = 0; A and B in any storage mode (modeA, modeB).
 */
export const MATMUL = /* wgsl */ `
struct P { M: u32, N: u32, K: u32, transA: u32, transB: u32, bBatched: u32, modeA: u32, modeB: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<u32>;
@group(0) @binding(2) var<storage, read> Bm: array<u32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
${DECODE}
${loader('ldA', 'A', 'p.modeA')}
${loader('ldB', 'Bm', 'p.modeB')}
var<workgroup> As: array<array<f32, 16>, 16>;
var<workgroup> Bs: array<array<f32, 16>, 16>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * 16u + lid.y;
  let col = wid.x * 16u + lid.x;
  let ao = wid.z * p.M * p.K;
  let bo = select(0u, wid.z * p.K * p.N, p.bBatched == 1u);
  var acc = 0.0;
  for (var t = 0u; t < p.K; t += 16u) {
    let ka = t + lid.x;
    var av = 0.0;
    if (row < p.M && ka < p.K) {
      if (p.transA == 1u) { av = ldA(ao + ka * p.M + row); } else { av = ldA(ao + row * p.K + ka); }
    }
    As[lid.y][lid.x] = av;
    let kb = t + lid.y;
    var bv = 0.0;
    if (col < p.N && kb < p.K) {
      if (p.transB == 1u) { bv = ldB(bo + col * p.K + kb); } else { bv = ldB(bo + kb * p.N + col); }
    }
    Bs[lid.y][lid.x] = bv;
    workgroupBarrier();
    for (var i = 0u; i < 16u; i++) { acc += As[lid.y][i] * Bs[i][lid.x]; }
    workgroupBarrier();
  }
  if (row < p.M && col < p.N) { C[wid.z * p.M * p.N + row * p.N + col] = acc; }
}`;

/**
 * The same product with one invocation per output element and no workgroup memory: for few rows (decoding), where
 * the tiled kernel's barriers cost more than they save (see ROWS_MATMUL_BELOW in kernels.ts).
 */
export const MATMUL_ROWS = /* wgsl */ `
struct P { M: u32, N: u32, K: u32, transA: u32, transB: u32, bBatched: u32, modeA: u32, modeB: u32, batch: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<u32>;
@group(0) @binding(2) var<storage, read> Bm: array<u32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
${FLAT}
${DECODE}
${loader('ldA', 'A', 'p.modeA')}
${loader('ldB', 'Bm', 'p.modeB')}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let e = flat(wid, nwg, lid);
  if (e >= p.batch * p.M * p.N) { return; }
  let col = e % p.N;
  let row = (e / p.N) % p.M;
  let z = e / (p.M * p.N);
  let ao = z * p.M * p.K;
  let bo = select(0u, z * p.K * p.N, p.bBatched == 1u);
  var acc = 0.0;
  for (var t = 0u; t < p.K; t++) {
    var av: f32;
    var bv: f32;
    if (p.transA == 1u) { av = ldA(ao + t * p.M + row); } else { av = ldA(ao + row * p.K + t); }
    if (p.transB == 1u) { bv = ldB(bo + col * p.K + t); } else { bv = ldB(bo + t * p.N + col); }
    acc += av * bv;
  }
  C[e] = acc;
}`;

/** out[i] = a[i] + b[i % m] (op 0) or a[i] · b[i % m] (op 1). */
export const BINARY = /* wgsl */ `
struct P { n: u32, m: u32, op: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
${FLAT}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let i = flat(wid, nwg, lid);
  if (i >= p.n) { return; }
  let y = b[i % p.m];
  if (p.op == 0u) { o[i] = a[i] + y; } else { o[i] = a[i] * y; }
}`;

/** out[i] = α · a[i]. */
export const SCALE = /* wgsl */ `
struct P { n: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
${FLAT}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let i = flat(wid, nwg, lid);
  if (i < p.n) { o[i] = p.alpha * a[i]; }
}`;

/**
 * gelu (kind 0, the exact erf form), silu (1), relu (2). WGSL has no erf: erfc through the Chebyshev fit of
 * Numerical Recipes' erfcc (fractional error below 1.2e-7 everywhere), i.e. float32 accuracy.
 */
export const ACTIVATION = /* wgsl */ `
struct P { n: u32, kind: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
${FLAT}
fn erf(v: f32) -> f32 {
  let z = abs(v);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, v >= 0.0);
}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let i = flat(wid, nwg, lid);
  if (i >= p.n) { return; }
  let v = x[i];
  if (p.kind == 0u) { o[i] = 0.5 * v * (1.0 + erf(v * 0.70710678118654752)); }
  else if (p.kind == 1u) { o[i] = v / (1.0 + exp(-v)); }
  else { o[i] = max(v, 0.0); }
}`;

/**
 * One workgroup per row (rows on a 2-D grid): y = x · rstd · w (· silu(gate) when gated), rstd = 1/sqrt(mean(x²) + eps).
 */
export const RMSNORM = /* wgsl */ `
struct P { rows: u32, cols: u32, hasW: u32, hasGate: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
var<workgroup> part: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  let live = r < p.rows;
  let base = r * p.cols;
  var ss = 0.0;
  if (live) { for (var j = lid; j < p.cols; j += 64u) { let v = x[base + j]; ss += v * v; } }
  part[lid] = ss;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { part[lid] += part[lid + s]; }
    workgroupBarrier();
  }
  if (!live) { return; }
  let k = 1.0 / sqrt(part[0] / f32(p.cols) + p.eps);
  if (lid == 0u) { rstd[r] = k; }
  for (var j = lid; j < p.cols; j += 64u) {
    var g = 1.0;
    if (p.hasW == 1u) { g = w[j]; }
    if (p.hasGate == 1u) { let z = gate[base + j]; g *= z / (1.0 + exp(-z)); }
    y[base + j] = x[base + j] * k * g;
  }
}`;

/** One workgroup per row: the softmax over the last dim. */
export const SOFTMAX = /* wgsl */ `
struct P { rows: u32, cols: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
var<workgroup> part: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  let live = r < p.rows;
  let base = r * p.cols;
  var mx = -3.4e38;
  if (live) { for (var j = lid; j < p.cols; j += 64u) { mx = max(mx, x[base + j]); } }
  part[lid] = mx;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { part[lid] = max(part[lid], part[lid + s]); }
    workgroupBarrier();
  }
  let m = part[0];
  workgroupBarrier();
  var sum = 0.0;
  if (live) { for (var j = lid; j < p.cols; j += 64u) { sum += exp(x[base + j] - m); } }
  part[lid] = sum;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { part[lid] += part[lid + s]; }
    workgroupBarrier();
  }
  if (!live) { return; }
  let inv = 1.0 / part[0];
  for (var j = lid; j < p.cols; j += 64u) { y[base + j] = exp(x[base + j] - m) * inv; }
}`;

/**
 * out[i, :] = table[ids[i], :], the rows' bits copied (any storage dtype; wide = 0: 16-bit elements, two per word, one
 * invocation per output word); an id outside [0, V) gives a zero row (the kernel checks ids the host knows).
 */
export const EMBEDDING = /* wgsl */ `
struct P { n: u32, D: u32, V: u32, wide: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> o: array<u32>;
${FLAT}
${DECODE}
fn element(e: u32) -> u32 {
  let id = ids[e / p.D];
  if (id < 0 || u32(id) >= p.V) { return 0u; }
  let at = u32(id) * p.D + e % p.D;
  if (p.wide == 1u) { return table[at]; }
  return half(table[at >> 1u], at);
}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let w = flat(wid, nwg, lid);
  let n = p.n * p.D;
  if (p.wide == 1u) { if (w < n) { o[w] = element(w); } return; }
  if (2u * w >= n) { return; }
  var hi = 0u;
  if (2u * w + 1u < n) { hi = element(2u * w + 1u); }
  o[w] = element(2u * w) | (hi << 16u);
}`;

/** dst[dstOff + b·dstStride + j] = src[srcOff + b·srcStride + j] for b < blocks, j < len (any 4-byte dtype). */
export const COPY_BLOCKS = /* wgsl */ `
struct P { srcOff: u32, srcStride: u32, dstOff: u32, dstStride: u32, blocks: u32, len: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
${FLAT}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let e = flat(wid, nwg, lid);
  if (e >= p.blocks * p.len) { return; }
  let b = e / p.len;
  let j = e % p.len;
  dst[p.dstOff + b * p.dstStride + j] = src[p.srcOff + b * p.srcStride + j];
}`;

/**
 * Any storage dtype to another (modes as in DECODE: 0 float32, 1 bfloat16, 2 float16, 3 int32): one invocation per
 * output word. To int32 truncates; to bfloat16/float16 rounds to nearest, ties to even, as the host's encode
 * (src/tensor/dtype.ts): NaN stays NaN, float16 overflows to ±Infinity from 65520 and has subnormals below 2^-14.
 */
export const CAST = /* wgsl */ `
struct P { n: u32, fromMode: u32, toMode: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> o: array<u32>;
${FLAT}
${DECODE}
${loader('load', 'x', 'p.fromMode')}
fn toBf16(v: f32) -> u32 {
  let u = bitcast<u32>(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) { return ((u >> 16u) & 0x8000u) | 0x7fc0u; }
  return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}
fn toF16(v: f32) -> u32 {
  let u = bitcast<u32>(v);
  let sign = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  if (a > 0x7f800000u) { return 0x7e00u; }
  if (a >= 0x477ff000u) { return sign | 0x7c00u; } // 65520 and up
  let e = a >> 23u;
  if (a < 0x38800000u) { // below 2^-14: a subnormal, round(|v| · 2^24)
    if (e < 102u) { return sign; } // below 2^-25
    let m = (a & 0x7fffffu) | 0x800000u;
    let shift = 126u - e;
    let q = m >> shift;
    let rem = m & ((1u << shift) - 1u);
    let mid = 1u << (shift - 1u);
    return sign | (q + select(0u, 1u, rem > mid || (rem == mid && (q & 1u) == 1u)));
  }
  let h = ((e - 112u) << 10u) | ((a & 0x7fffffu) >> 13u);
  let rem = a & 0x1fffu;
  return sign | (h + select(0u, 1u, rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)));
}
fn store(v: f32) -> u32 {
  if (p.toMode == 0u) { return bitcast<u32>(v); }
  if (p.toMode == 1u) { return toBf16(v); }
  if (p.toMode == 2u) { return toF16(v); }
  return bitcast<u32>(i32(v));
}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let w = flat(wid, nwg, lid);
  if (p.toMode == 0u || p.toMode == 3u) { if (w < p.n) { o[w] = store(load(w)); } return; }
  if (2u * w >= p.n) { return; }
  var hi = 0u;
  if (2u * w + 1u < p.n) { hi = store(load(2u * w + 1u)); }
  o[w] = store(load(2u * w)) | (hi << 16u);
}`;

/**
 * 16-bit elements: dst[dstOff + j] = src[srcOff + j] for j < len, one invocation per destination word (halves outside
 * the range kept), for offsets copyBufferToBuffer cannot take (it moves whole words).
 */
export const COPY16 = /* wgsl */ `
struct P { srcOff: u32, dstOff: u32, len: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
${FLAT}
${DECODE}
fn pick(at: u32, old: u32) -> u32 {
  if (at < p.dstOff || at >= p.dstOff + p.len) { return old; }
  let s = at - p.dstOff + p.srcOff;
  return half(src[s >> 1u], s);
}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let w = p.dstOff / 2u + flat(wid, nwg, lid);
  if (2u * w >= p.dstOff + p.len) { return; }
  let old = dst[w];
  dst[w] = pick(2u * w, old & 0xffffu) | (pick(2u * w + 1u, old >> 16u) << 16u);
}`;

/**
 * Rotary, one invocation per pair of x: [B, T, H, K]: (a, b) = (2j, 2j+1) or (j, j+K/2) (halves = 1); cos/sin
 * [T, K] or [B, T, K] (perBatch = 1), read at a; sign −1 rotates backwards.
 */
export const ROTARY = /* wgsl */ `
struct P { B: u32, T: u32, H: u32, K: u32, perBatch: u32, halves: u32, sign: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read> sn: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${FLAT}
@compute @workgroup_size(256)
fn main(${ELEMENTWISE_ARGS}) {
  let e = flat(wid, nwg, lid);
  let half = p.K / 2u;
  if (e >= p.B * p.T * p.H * half) { return; }
  let j = e % half;
  let row = e / half;                 // (b·T + n)·H + h
  let bn = row / p.H;                 // b·T + n
  var table = (bn % p.T) * p.K;
  if (p.perBatch == 1u) { table = bn * p.K; }
  var a = 2u * j;
  var off = 1u;
  if (p.halves == 1u) { a = j; off = half; }
  let base = row * p.K;
  let c = cs[table + a];
  let s = p.sign * sn[table + a];
  let x0 = x[base + a];
  let x1 = x[base + a + off];
  y[base + a] = x0 * c - x1 * s;
  y[base + a + off] = x1 * c + x0 * s;
}`;

/**
 * One recurrent step, one workgroup per (b, h): S' = S·decay + kᵀv·inv, o = q S', then scale' = scale·γ + 1
 * (normalize: decay = sqrt(s)γ/sqrt(s'), inv = 1/sqrt(s'); else decay = γ, inv = 1). In place on S and scale.
 */
export const RETENTION_STEP = /* wgsl */ `
struct P { B: u32, H: u32, K: u32, V: u32, normalize: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> gammas: array<f32>;
@group(0) @binding(5) var<storage, read_write> S: array<f32>;
@group(0) @binding(6) var<storage, read_write> scale: array<f32>;
@group(0) @binding(7) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = wid.x;
  let g = gammas[bh % p.H];
  let prev = scale[bh];
  let next = prev * g + 1.0;
  var decay = g;
  var inv = 1.0;
  if (p.normalize == 1u) { decay = sqrt(prev) * g / sqrt(next); inv = 1.0 / sqrt(next); }
  for (var y = lid; y < p.V; y += 64u) {
    let vy = v[bh * p.V + y] * inv;
    var acc = 0.0;
    for (var x = 0u; x < p.K; x++) {
      let e = (bh * p.K + x) * p.V + y;
      let s = S[e] * decay + k[bh * p.K + x] * vy;
      S[e] = s;
      acc += q[bh * p.K + x] * s;
    }
    o[bh * p.V + y] = acc;
  }
  storageBarrier();
  workgroupBarrier();
  if (lid == 0u) { scale[bh] = next; }
}`;

/**
 * Retention over sequences in chunks of C, one workgroup per (sequence n, head h) walking its chunks in order:
 * torchscale's chunk_recurrent_forward (normalize = 1; the parallel form is the same kernel with one chunk per
 * sequence and the 5e4 clamp, hi) or, without normalisation, fla's plain chunk recurrence (every form the same
 * function). A sequence is a batch row or a packed segment, and may continue a state (hasStart). Per chunk: the
 * intra-chunk scores A [C, C], each row's factor r = 1/(sqrt(Ŝ_i)·max(clamp(Σ|A_ij|, 1, hi), σ)), the outputs
 * (inner + q·Z·γ^(i+1)·SC/sqrt(Ŝ_i))·r·sqrt(Ŝ_i), then the state Z = Z_raw/SC [K, V] and σ = max(1, max_y Σ_x |Z_xy|)
 * (chunkwise only). Ŝ_i = S_i chunkwise, s₀γ^(i+1) + S_i parallel (docs/retention.md).
 * W holds [N·H·K·V] states (in: the initial S̃, out: the final S̃) then [N·H·C·C] scores; sc holds the scales (in s₀,
 * out s_T). tab (float32, from the host in float64) holds per head [ln γ, SC, S_0 … S_{C−1}], from seqAt per sequence
 * [b, start, length] (exact integers), from endAt per (n, h) S(length − 1).
 */
export const RETENTION_CHUNK = /* wgsl */ `
struct P { T: u32, H: u32, K: u32, V: u32, C: u32, N: u32, normalize: u32, parallel: u32, hasStart: u32,
           seqAt: u32, endAt: u32, hi: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> tab: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@group(0) @binding(6) var<storage, read_write> r: array<f32>;
@group(0) @binding(7) var<storage, read_write> W: array<f32>;
@group(0) @binding(8) var<storage, read_write> sc: array<f32>;
var<workgroup> red: array<f32, 256>;
var<workgroup> sigma: f32;
var<workgroup> seqLen: u32;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let nh = wid.x;
  let h = nh % p.H;
  let n = nh / p.H;
  let b = u32(tab[p.seqAt + 3u * n]);
  let start = u32(tab[p.seqAt + 3u * n + 1u]);
  if (lid == 0u) { seqLen = u32(tab[p.seqAt + 3u * n + 2u]); }
  let Tn = workgroupUniformLoad(&seqLen);
  let t0 = h * (p.C + 2u);
  let lam = tab[t0];
  let SC = tab[t0 + 1u];
  let zo = nh * p.K * p.V;
  let ao = p.N * p.H * p.K * p.V + nh * p.C * p.C;
  let s0 = sc[nh];
  var sp = 0.0;
  if (p.parallel == 1u) { sp = s0; }
  // Z = Z_raw / SC from the start's S̃ = Z_raw / sqrt(s₀) (or Z_raw itself, unnormalised); empty: 0.
  var w0 = 1.0;
  if (p.normalize == 1u) { w0 = sqrt(s0) / SC; }
  for (var e = lid; e < p.K * p.V; e += 256u) {
    if (p.hasStart == 1u) { W[zo + e] = W[zo + e] * w0; } else { W[zo + e] = 0.0; }
  }
  storageBarrier();
  workgroupBarrier();
  for (var c0 = 0u; c0 < Tn; c0 += p.C) {
    let L = min(p.C, Tn - c0);
    // σ of the state entering this chunk (chunkwise, normalised).
    var mx = 0.0;
    if (p.normalize == 1u && p.parallel == 0u) {
      for (var y = lid; y < p.V; y += 256u) {
        var col = 0.0;
        for (var x = 0u; x < p.K; x++) { col += abs(W[zo + x * p.V + y]); }
        mx = max(mx, col);
      }
    }
    red[lid] = mx;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
      if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
      workgroupBarrier();
    }
    if (lid == 0u) { sigma = max(1.0, red[0]); }
    workgroupBarrier();
    let sg = sigma;
    // Scores A_ij = (q_i · k_j) γ^(i−j) / sqrt(Ŝ_i), j ≤ i.
    for (var e = lid; e < L * L; e += 256u) {
      let i = e / L;
      let j = e % L;
      if (j <= i) {
        let qi = ((b * p.T + start + c0 + i) * p.H + h) * p.K;
        let kj = ((b * p.T + start + c0 + j) * p.H + h) * p.K;
        var dot = 0.0;
        for (var x = 0u; x < p.K; x++) { dot += q[qi + x] * k[kj + x]; }
        var sq = 1.0;
        if (p.normalize == 1u) { sq = sqrt(sp * exp(lam * f32(i + 1u)) + tab[t0 + 2u + i]); }
        W[ao + i * p.C + j] = dot * exp(lam * f32(i - j)) / sq;
      }
    }
    storageBarrier();
    workgroupBarrier();
    for (var i = lid; i < L; i += 256u) {
      var m = 1.0;
      var sq = 1.0;
      if (p.normalize == 1u) {
        sq = sqrt(sp * exp(lam * f32(i + 1u)) + tab[t0 + 2u + i]);
        var abs_sum = 0.0;
        for (var j = 0u; j <= i; j++) { abs_sum += abs(W[ao + i * p.C + j]); }
        m = max(clamp(abs_sum, 1.0, p.hi), sg);
      }
      r[(b * p.H + h) * p.T + start + c0 + i] = 1.0 / (sq * m);
    }
    storageBarrier();
    workgroupBarrier();
    for (var e = lid; e < L * p.V; e += 256u) {
      let i = e / p.V;
      let y = e % p.V;
      var sq = 1.0;
      if (p.normalize == 1u) { sq = sqrt(sp * exp(lam * f32(i + 1u)) + tab[t0 + 2u + i]); }
      var inner = 0.0;
      for (var j = 0u; j <= i; j++) {
        inner += W[ao + i * p.C + j] * v[((b * p.T + start + c0 + j) * p.H + h) * p.V + y];
      }
      var cross = 0.0;
      if (c0 > 0u || p.hasStart == 1u) {
        let qi = ((b * p.T + start + c0 + i) * p.H + h) * p.K;
        for (var x = 0u; x < p.K; x++) { cross += q[qi + x] * W[zo + x * p.V + y]; }
        cross *= exp(lam * f32(i + 1u)) * SC / sq;
      }
      let ri = r[(b * p.H + h) * p.T + start + c0 + i];
      o[((b * p.T + start + c0 + i) * p.H + h) * p.V + y] = (inner + cross) * ri * sq;
    }
    storageBarrier();
    workgroupBarrier();
    // Z = γ^L Z + Σ_j γ^(L−1−j) k_jᵀ v_j / SC: the state after the chunk.
    let decayL = exp(lam * f32(L));
    for (var e = lid; e < p.K * p.V; e += 256u) {
      let x = e / p.V;
      let y = e % p.V;
      var z = W[zo + e] * decayL;
      for (var j = 0u; j < L; j++) {
        let row = (b * p.T + start + c0 + j) * p.H + h;
        z += k[row * p.K + x] * v[row * p.V + y] * exp(lam * f32(L - 1u - j)) / SC;
      }
      W[zo + e] = z;
    }
    storageBarrier();
    workgroupBarrier();
  }
  // The final state S̃ = Z_raw / sqrt(s_T) (or Z_raw), s_T = s₀γ^T + S(T − 1).
  let sT = s0 * exp(lam * f32(Tn)) + tab[p.endAt + nh];
  var wT = SC;
  if (p.normalize == 1u && sT > 0.0) { wT = SC / sqrt(sT); }
  for (var e = lid; e < p.K * p.V; e += 256u) { W[zo + e] = W[zo + e] * wT; }
  storageBarrier();
  workgroupBarrier();
  if (lid == 0u) { sc[nh] = sT; }
}`;
