// The safetensors format (Hugging Face): 8-byte little-endian header length N, N bytes of JSON header mapping each
// tensor name to {dtype, shape, data_offsets: [begin, end)} relative to the data section (plus an optional
// "__metadata__" map of strings), then the raw little-endian data. No maintained npm package reads and writes it
// (the `safetensors` package is a 0.0.1 placeholder), and the format is small, so it is implemented here with full
// validation: every error names the file and the tensor.

import { readFileSync } from 'node:fs';

import { FormatError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
}; // prettier-ignore

export interface LoadedTensor {
  dtype: SafetensorsDType;
  shape: number[];
  /** Values widened to float64 (F64 exact, F32/F16/BF16 exact, integers exact below 2^53). */
  data: Float64Array;
}

export interface SafetensorsFile {
  tensors: Map<string, LoadedTensor>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 1024 * 1024;

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function decode(buf: Buffer, begin: number, dtype: SafetensorsDType, n: number): Float64Array {
  const out = new Float64Array(n);
  const dv = new DataView(buf.buffer, buf.byteOffset + begin, n * BYTES[dtype]);
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case 'F64': out[i] = dv.getFloat64(i * 8, true); break;
      case 'F32': out[i] = dv.getFloat32(i * 4, true); break;
      case 'F16': out[i] = halfToFloat(dv.getUint16(i * 2, true)); break;
      case 'BF16': {
        const f = new DataView(new ArrayBuffer(4));
        f.setUint32(0, dv.getUint16(i * 2, true) << 16, true);
        out[i] = f.getFloat32(0, true);
        break;
      }
      case 'I64': out[i] = Number(dv.getBigInt64(i * 8, true)); break;
      case 'I32': out[i] = dv.getInt32(i * 4, true); break;
      case 'I16': out[i] = dv.getInt16(i * 2, true); break;
      case 'I8': out[i] = dv.getInt8(i); break;
      case 'U8': case 'BOOL': out[i] = dv.getUint8(i); break;
    }
  } // prettier-ignore
  return out;
}

/** Parses a safetensors buffer; `source` names it in errors. */
export function parseSafetensors(buf: Buffer, source: string): SafetensorsFile {
  if (buf.length < 8) throw new FormatError(`${source}: not a safetensors file (${buf.length} bytes, need at least 8)`);
  const headerLen = Number(buf.readBigUInt64LE(0));
  if (headerLen > MAX_HEADER || 8 + headerLen > buf.length)
    throw new FormatError(`${source}: header length ${headerLen} exceeds the file (${buf.length} bytes)`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new FormatError(`${source}: header is not valid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header))
    throw new FormatError(`${source}: header must be a JSON object`);
  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, LoadedTensor>();
  let metadata: Record<string, string> = {};
  const ranges: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as {
      dtype?: unknown;
      shape?: unknown;
      data_offsets?: unknown;
    };
    const where = `${source}: tensor '${name}'`;
    if (typeof e.dtype !== 'string' || !(e.dtype in BYTES))
      throw new FormatError(
        `${where}: unsupported dtype ${JSON.stringify(e.dtype)} (expected one of ${Object.keys(BYTES).join(', ')})`,
      );
    if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isInteger(d) || d < 0))
      throw new FormatError(`${where}: shape must be a list of non-negative integers, got ${JSON.stringify(e.shape)}`);
    if (!Array.isArray(e.data_offsets) || e.data_offsets.length !== 2)
      throw new FormatError(`${where}: data_offsets must be [begin, end]`);
    const dtype = e.dtype as SafetensorsDType;
    const shape = e.shape as number[];
    const [begin, end] = e.data_offsets as [number, number];
    const n = shape.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end < begin || end > dataLen)
      throw new FormatError(
        `${where}: data_offsets [${begin}, ${end}] lie outside the data section (${dataLen} bytes)`,
      );
    if (end - begin !== n * BYTES[dtype])
      throw new FormatError(
        `${where}: ${end - begin} bytes of data for shape [${shape.join(', ')}] of ${dtype} (need ${n * BYTES[dtype]})`,
      );
    ranges.push([begin, end, name]);
    tensors.set(name, {
      dtype,
      shape,
      data: decode(buf, dataStart + begin, dtype, n),
    });
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++)
    if (ranges[i]![0] < ranges[i - 1]![1])
      throw new FormatError(`${source}: tensors '${ranges[i - 1]![2]}' and '${ranges[i]![2]}' overlap`);
  return { tensors, metadata };
}

export function readSafetensors(path: string): SafetensorsFile {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
  }
  return parseSafetensors(buf, path);
}

export interface TensorToSave {
  dtype: 'F64' | 'F32' | 'I32';
  shape: readonly number[];
  data: ArrayLike<number>;
}

/** Serialises tensors (sorted by name, 8-byte aligned data) to a safetensors buffer. */
export function serializeSafetensors(
  tensors: Map<string, TensorToSave>,
  metadata: Record<string, string> = {},
): Buffer[] {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const blobs: Buffer[] = [];
  for (const name of names) {
    const t = tensors.get(name)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n)
      throw new FormatError(
        `safetensors: tensor '${name}' has ${t.data.length} values for shape [${t.shape.join(', ')}]`,
      );
    const bytes = n * BYTES[t.dtype];
    const blob = Buffer.alloc(bytes);
    for (let i = 0; i < n; i++) {
      if (t.dtype === 'F64') blob.writeDoubleLE(t.data[i]!, i * 8);
      else if (t.dtype === 'F32') blob.writeFloatLE(t.data[i]!, i * 4);
      else blob.writeInt32LE(t.data[i]!, i * 4);
    }
    header[name] = {
      dtype: t.dtype,
      shape: [...t.shape],
      data_offsets: [offset, offset + bytes],
    };
    offset += bytes;
    blobs.push(blob);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // align the data section
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return [head, Buffer.from(json, 'utf8'), ...blobs];
}

/** Writes a safetensors file atomically. */
export function writeSafetensors(
  path: string,
  tensors: Map<string, TensorToSave>,
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
