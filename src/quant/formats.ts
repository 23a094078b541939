// Weight formats for inference (issue 13): the definition of each format's storage, its quantisation from float
// values and its dequantisation. The native kernels (native/cpu/lowp.h) read exactly these bytes; this file is their
// reference, in plain TypeScript.
//
//   f32   float32 [N, K].
//   bf16  bfloat16 [N, K]: the top 16 bits of the float32, rounded to nearest even.
//   int8  int8 q [N, K] and float32 scales s [N], one per output row: s = max|W[n, :]| / 127, q = round(W / s),
//         W ≈ s · q. Symmetric, so a product needs no zero-point term.
//   q4    blocks of 32 along K (K padded with zero weights to Kp, a multiple of 64). Per block a float16 scale
//         d = m / −8, m the block's value of largest magnitude, and 32 values u = clamp(round(W / d) + 8, 0, 15),
//         W ≈ d · (u − 8): m itself is exact and the other side keeps 7 steps. Bytes [N, Kp / 2], 16 per block:
//         byte i = u_i | u_(i+16) << 4; scales float16 bits [N, Kp / 32].
// Why these: int8 per row and blocks of 32 with a float16 scale are what llama.cpp's Q8_0/Q4_0 showed to hold
// quality at 8.0 and 4.5 bits per weight; one scale per row is enough at 8 bits (the error is 1/254 of the row's
// largest weight), while 4 bits need the finer blocks (a row-wide 4-bit step would swamp the small weights). The
// low/high nibble order lets the kernel unpack 32 bytes (two blocks) with one AND and one shift.

import { FormatError, ShapeError } from '../errors.js';

export type WeightFormat = 'f32' | 'bf16' | 'int8' | 'q4';

export const WEIGHT_FORMATS: readonly WeightFormat[] = ['f32', 'bf16', 'int8', 'q4'];

/** The codes of native/cpu/lowp.h's Format. */
export const FORMAT_CODE: Record<WeightFormat, number> = { f32: 0, bf16: 1, int8: 2, q4: 3 };

export const Q4_BLOCK = 32;
/** q4 rows are padded to a multiple of this many columns. */
export const Q4_ROW_ALIGN = 64;

export function parseWeightFormat(s: string, what = '--weights'): WeightFormat {
  if ((WEIGHT_FORMATS as readonly string[]).includes(s)) return s as WeightFormat;
  throw new FormatError(`${what}: unknown weight format '${s}' (expected ${WEIGHT_FORMATS.join(', ')})`);
}

export function q4PaddedK(K: number): number {
  return Math.ceil(K / Q4_ROW_ALIGN) * Q4_ROW_ALIGN;
}

export type PackedData = Float32Array | Uint16Array | Int8Array | Uint8Array;

/** A weight [N, K] (a Linear's [out, in]) in one format. */
export interface Packed {
  readonly format: WeightFormat;
  readonly N: number;
  readonly K: number;
  readonly data: PackedData;
  /** int8: float32 [N]; q4: float16 bits [N, Kp / 32]; f32, bf16: null. */
  readonly scales: Float32Array | Uint16Array | null;
}

/** Bytes of the data and of the scales of an [N, K] weight in `format`. */
export function packedBytes(format: WeightFormat, N: number, K: number): { data: number; scales: number } {
  switch (format) {
    case 'f32':
      return { data: 4 * N * K, scales: 0 };
    case 'bf16':
      return { data: 2 * N * K, scales: 0 };
    case 'int8':
      return { data: N * K, scales: 4 * N };
    case 'q4': {
      const Kp = q4PaddedK(K);
      return { data: (N * Kp) / 2, scales: 2 * N * (Kp / Q4_BLOCK) };
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// 16-bit floats

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even; NaN stays (quiet) NaN. */
export function toBF16(v: number): number {
  f32[0] = v;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function fromBF16(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** float32 → float16 bits, round to nearest even (beyond 65504 to infinity; NaN stays NaN). */
export function toF16(v: number): number {
  f32[0] = v;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00;
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a < 0x38800000) {
    // subnormal or zero: units of 2⁻²⁴, round half to even
    const m = Math.abs(f32[0]!) * 16777216;
    let r = Math.round(m);
    if (r - m === 0.5 && r % 2 === 1) r -= 1;
    return sign | r;
  }
  return sign | ((a + 0xfff + ((a >>> 13) & 1) - 0x38000000) >>> 13);
}

export function fromF16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0x1f) return man ? NaN : sign * Infinity;
  if (exp === 0) return sign * man * 2 ** -24;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** float32 rounding of a number (Math.fround), named for the role it plays below. */
const f = Math.fround;

/** Round half to even, as the kernels' nearbyint/lrint. */
function roundEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// ---------------------------------------------------------------------------------------------------------------------
// Quantisation and dequantisation

/** Quantises w [N, K] (row-major) into `format`. Non-finite weights are rejected: they would poison a whole block. */
export function quantize(format: WeightFormat, w: ArrayLike<number>, N: number, K: number, name = 'weight'): Packed {
  if (w.length !== N * K)
    throw new ShapeError(`quantize ${name}: ${w.length} values for a [${N}, ${K}] weight (${N * K} expected)`);
  for (let i = 0; i < w.length; i++)
    if (!Number.isFinite(w[i]!))
      throw new FormatError(`quantize ${name}: element ${i} is ${w[i]}; only finite weights can be quantised`);
  switch (format) {
    case 'f32':
      return { format, N, K, data: Float32Array.from(w), scales: null };
    case 'bf16': {
      const data = new Uint16Array(N * K);
      for (let i = 0; i < data.length; i++) data[i] = toBF16(w[i]!);
      return { format, N, K, data, scales: null };
    }
    case 'int8': {
      const data = new Int8Array(N * K);
      const scales = new Float32Array(N);
      for (let n = 0; n < N; n++) {
        let amax = 0;
        for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(f(w[n * K + k]!)));
        const s = f(amax / 127);
        scales[n] = s;
        if (s === 0) continue;
        for (let k = 0; k < K; k++) data[n * K + k] = Math.max(-127, Math.min(127, roundEven(f(w[n * K + k]!) / s)));
      }
      return { format, N, K, data, scales };
    }
    case 'q4': {
      const Kp = q4PaddedK(K);
      const nb = Kp / Q4_BLOCK;
      const data = new Uint8Array((N * Kp) / 2);
      const scales = new Uint16Array(N * nb);
      for (let n = 0; n < N; n++)
        for (let j = 0; j < nb; j++) {
          const at = (i: number) => {
            const k = j * Q4_BLOCK + i;
            return k < K ? f(w[n * K + k]!) : 0;
          };
          let m = 0;
          for (let i = 0; i < Q4_BLOCK; i++) if (Math.abs(at(i)) > Math.abs(m)) m = at(i);
          const dh = toF16(m / -8);
          const d = fromF16(dh);
          scales[n * nb + j] = dh;
          for (let i = 0; i < Q4_BLOCK; i++) {
            const u = d === 0 ? 8 : Math.max(0, Math.min(15, roundEven(at(i) / d) + 8));
            data[n * (Kp / 2) + j * 16 + (i & 15)]! |= i < 16 ? u : u << 4;
          }
        }
      return { format, N, K, data, scales };
    }
  }
}

/** Row n of the weight as float32 values, into out [K]. */
export function dequantizeRow(p: Packed, n: number, out: Float32Array): void {
  const { K } = p;
  switch (p.format) {
    case 'f32':
      out.set((p.data as Float32Array).subarray(n * K, (n + 1) * K));
      return;
    case 'bf16':
      for (let k = 0; k < K; k++) out[k] = fromBF16((p.data as Uint16Array)[n * K + k]!);
      return;
    case 'int8': {
      const s = (p.scales as Float32Array)[n]!;
      for (let k = 0; k < K; k++) out[k] = s * (p.data as Int8Array)[n * K + k]!;
      return;
    }
    case 'q4': {
      const Kp = q4PaddedK(K);
      const nb = Kp / Q4_BLOCK;
      const bytes = p.data as Uint8Array;
      for (let k = 0; k < K; k++) {
        const j = Math.floor(k / Q4_BLOCK);
        const i = k % Q4_BLOCK;
        const byte = bytes[n * (Kp / 2) + j * 16 + (i & 15)]!;
        const u = i < 16 ? byte & 15 : byte >> 4;
        out[k] = fromF16((p.scales as Uint16Array)[n * nb + j]!) * (u - 8);
      }
      return;
    }
  }
}

/** The whole weight as float32 [N, K]. */
export function dequantize(p: Packed): Float32Array {
  const out = new Float32Array(p.N * p.K);
  for (let n = 0; n < p.N; n++) dequantizeRow(p, n, out.subarray(n * p.K, (n + 1) * p.K));
  return out;
}
