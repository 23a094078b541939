// Element types, in one table. float32 is the working type on every device; float64 exists on the reference device
// for gradient checks and for matching reference vectors exactly; int32 holds token ids and targets. bfloat16 and
// float16 are storage types (two bytes an element, in a Uint16Array): kernels without an implementation of their own
// compute in float32 on cast copies (backend/kernels.ts). Quantized weight formats store their scales with their codes
// in one byte array; each is one entry of QUANT_FORMATS, and a tensor of one is a weight [..., rows, cols] quantized
// along its last dim (cols: the input dim of a linear weight [out, in]).

import { DTypeError } from '../errors.js';

/** Quantized weight formats (storage carries the scales). Adding one is one entry of QUANT_FORMATS below. */
export type QuantizedDType = 'qint8';
export type DType = 'float32' | 'float64' | 'int32' | 'bfloat16' | 'float16' | QuantizedDType;

export type FloatArray = Float32Array | Float64Array;
/** A storage array: elements for float32/float64/int32, raw bits for bfloat16/float16, bytes for quantized formats. */
export type DataArray = Float32Array | Float64Array | Int32Array | Uint16Array | Uint8Array;

/** Values read back from a tensor: its own elements for float32/float64/int32, float32 for the other dtypes. */
export type ValueArray = Float32Array | Float64Array | Int32Array;

type ArrayCtor = { new (length: number): DataArray; new (buffer: ArrayBuffer): DataArray; BYTES_PER_ELEMENT: number };

interface DTypeInfo {
  /**
   * 'float' values are stored and read as numbers (results of a kernel computed through a cast are cast back to
   * them); 'int' holds integers; 'quantized' is a weight format read back as float32.
   */
  kind: 'float' | 'int' | 'quantized';
  /** The storage array's type. */
  array: ArrayCtor;
  /** Bytes per element, or null for a quantized format (its size depends on the shape: see storageBytes). */
  bytes: number | null;
  /** The dtype a kernel computes in when a device has no kernel for this one (see backend/kernels.ts). */
  compute: DType;
  /** The safetensors dtype name, or null where safetensors has none. */
  safetensors: string | null;
}

const DTYPES: Record<DType, DTypeInfo> = {
  float32: { kind: 'float', array: Float32Array, bytes: 4, compute: 'float32', safetensors: 'F32' },
  float64: { kind: 'float', array: Float64Array, bytes: 8, compute: 'float64', safetensors: 'F64' },
  int32: { kind: 'int', array: Int32Array, bytes: 4, compute: 'int32', safetensors: 'I32' },
  bfloat16: { kind: 'float', array: Uint16Array, bytes: 2, compute: 'float32', safetensors: 'BF16' },
  float16: { kind: 'float', array: Uint16Array, bytes: 2, compute: 'float32', safetensors: 'F16' },
  qint8: { kind: 'quantized', array: Uint8Array, bytes: null, compute: 'float32', safetensors: null },
};

/** Every dtype, in table order. */
export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];

/**
 * A quantized weight format: how many bytes a [rows, cols] weight takes, and how values go in and out. The layout
 * inside the byte array is the format's own; kernels that read it natively (lowp's) follow the same definition.
 */
export interface QuantFormat {
  /** Bytes of storage for `rows` rows of `cols` values. */
  bytes(rows: number, cols: number): number;
  quantize(values: ArrayLike<number>, rows: number, cols: number, out: Uint8Array): void;
  dequantize(src: Uint8Array, rows: number, cols: number, out: Float32Array | Float64Array): void;
}

/**
 * qint8: symmetric int8 with one float32 scale per row: value = code · scale, scale = max|row| / 127 (0 for a zero
 * row), codes in [-127, 127]. Layout: rows float32 scales, then rows·cols int8 codes, row-major.
 */
const QINT8: QuantFormat = {
  bytes: (rows, cols) => rows * 4 + rows * cols,
  quantize(values, rows, cols, out) {
    const scales = new Float32Array(out.buffer, out.byteOffset, rows);
    const codes = new Int8Array(out.buffer, out.byteOffset + rows * 4, rows * cols);
    for (let r = 0; r < rows; r++) {
      let max = 0;
      for (let j = 0; j < cols; j++) max = Math.max(max, Math.abs(values[r * cols + j]!));
      if (!Number.isFinite(max)) throw new DTypeError(`qint8: row ${r} holds a non-finite value`);
      scales[r] = max / 127;
      const inv = max > 0 ? 127 / max : 0;
      for (let j = 0; j < cols; j++) codes[r * cols + j] = Math.round(values[r * cols + j]! * inv);
    }
  },
  dequantize(src, rows, cols, out) {
    const scales = new Float32Array(src.buffer, src.byteOffset, rows);
    const codes = new Int8Array(src.buffer, src.byteOffset + rows * 4, rows * cols);
    for (let r = 0; r < rows; r++) {
      const s = scales[r]!;
      for (let j = 0; j < cols; j++) out[r * cols + j] = codes[r * cols + j]! * s;
    }
  },
};

export const QUANT_FORMATS: Record<QuantizedDType, QuantFormat> = { qint8: QINT8 };

function info(dtype: DType): DTypeInfo {
  const i = DTYPES[dtype];
  if (i === undefined)
    throw new DTypeError(`unknown dtype '${String(dtype)}' (expected one of ${DTYPE_NAMES.join(', ')})`);
  return i;
}

export function dtypeKind(dtype: DType): DTypeInfo['kind'] {
  return info(dtype).kind;
}

export function isQuantized(dtype: DType): dtype is QuantizedDType {
  return info(dtype).kind === 'quantized';
}

/** Bytes per element of an element dtype; a quantized format has none (its size depends on the shape). */
export function bytesPerElement(dtype: DType): number {
  const b = info(dtype).bytes;
  if (b === null) throw new DTypeError(`${dtype} has no fixed size per element (use storageBytes with the shape)`);
  return b;
}

/** [rows, cols] of a quantized tensor: rows of its last dim. */
export function quantRows(shape: readonly number[]): { rows: number; cols: number } {
  const cols = shape.length === 0 ? 1 : shape[shape.length - 1]!;
  let size = 1;
  for (const d of shape) size *= d;
  return { rows: cols === 0 ? 0 : size / cols, cols };
}

/** Length of the storage array of a tensor of this dtype and shape (elements, or bytes for quantized formats). */
export function storageLength(dtype: DType, shape: readonly number[]): number {
  const i = info(dtype);
  if (i.bytes !== null) {
    let size = 1;
    for (const d of shape) size *= d;
    return size;
  }
  const { rows, cols } = quantRows(shape);
  return QUANT_FORMATS[dtype as QuantizedDType].bytes(rows, cols);
}

/** Bytes per entry of the storage array (an element, or a byte of a quantized format). */
export function arrayBytes(dtype: DType): number {
  return info(dtype).array.BYTES_PER_ELEMENT;
}

/** Bytes of storage of a tensor of this dtype and shape. */
export function storageBytes(dtype: DType, shape: readonly number[]): number {
  return storageLength(dtype, shape) * arrayBytes(dtype);
}

/** The dtype a kernel computes in when a device has no kernel for `dtype` itself. */
export function computeDType(dtype: DType): DType {
  return info(dtype).compute;
}

/** A zero-filled storage array of `length` (see storageLength). */
export function allocArray(dtype: DType, length: number): DataArray {
  return new (info(dtype).array)(length);
}

/** A storage array over an existing buffer (the buffer pool's). */
export function arrayOver(dtype: DType, buffer: ArrayBuffer): DataArray {
  return new (info(dtype).array)(buffer);
}

/** The safetensors dtype name of a dtype (null: safetensors has none, as for the quantized formats). */
export function toSafetensorsDType(dtype: DType): string | null {
  return info(dtype).safetensors;
}

/** The dtype a safetensors dtype name stores as, or null when there is none (I64, U8, BOOL, ...). */
export function fromSafetensorsDType(name: string): DType | null {
  return DTYPE_NAMES.find((d) => DTYPES[d].safetensors === name) ?? null;
}

// Conversions between numbers and the 16-bit float formats. Both round to nearest, ties to even.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bfloat16 bits of x (x first rounded to float32, as every float input to float32 storage is). */
export function toBFloat16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) & 0x8000) | 0x7fc0; // NaN stays a (quiet) NaN
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

export function fromBFloat16(bits: number): number {
  u32[0] = bits << 16;
  return f32[0]!;
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** float16 bits of x: subnormals below 2^-14, ±Infinity from 65520 up (the rounding boundary), NaN kept. */
export function toFloat16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24); // subnormal (1024 is the smallest normal's bits)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  return e > 15 ? sign | 0x7c00 : sign | ((e + 15) << 10) | m;
}

export function fromFloat16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Stores numbers into a storage array of dtype (shape gives a quantized format its rows). int32 requires integers;
 * the float formats round to nearest even; quantized formats quantize row by row.
 */
export function encode(dtype: DType, values: ArrayLike<number>, shape: readonly number[], out: DataArray): void {
  switch (dtype) {
    case 'float32':
    case 'float64':
      (out as FloatArray).set(values);
      return;
    case 'int32':
      for (let i = 0; i < out.length; i++) {
        const v = values[i]!;
        if (!Number.isInteger(v)) throw new DTypeError(`int32 tensor given non-integer value ${v} at ${i}`);
        out[i] = v;
      }
      return;
    case 'bfloat16':
      for (let i = 0; i < out.length; i++) out[i] = toBFloat16(values[i]!);
      return;
    case 'float16':
      for (let i = 0; i < out.length; i++) out[i] = toFloat16(values[i]!);
      return;
    case 'qint8': {
      const { rows, cols } = quantRows(shape);
      QUANT_FORMATS[dtype].quantize(values, rows, cols, out as Uint8Array);
      return;
    }
  }
}

/** The values of a storage array as numbers: the array itself's copy for float32/float64/int32, else float32. */
export function decode(dtype: DType, data: DataArray, shape: readonly number[]): ValueArray {
  switch (dtype) {
    case 'float32':
    case 'float64':
    case 'int32':
      return (data as ValueArray).slice();
    case 'bfloat16': {
      const out = new Float32Array(data.length);
      new Uint32Array(out.buffer).set(data as Uint16Array);
      const w = new Uint32Array(out.buffer);
      for (let i = 0; i < w.length; i++) w[i] = w[i]! << 16;
      return out;
    }
    case 'float16': {
      const out = new Float32Array(data.length);
      for (let i = 0; i < data.length; i++) out[i] = fromFloat16(data[i]!);
      return out;
    }
    case 'qint8': {
      const { rows, cols } = quantRows(shape);
      const out = new Float32Array(rows * cols);
      QUANT_FORMATS[dtype].dequantize(data as Uint8Array, rows, cols, out);
      return out;
    }
  }
}
