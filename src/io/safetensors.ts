// The safetensors format (Hugging Face): 8-byte little-endian header length N, N bytes of JSON header mapping each
// tensor name to {dtype, shape, data_offsets: [begin, end)} relative to the data section (plus an optional
// "__metadata__" map of strings), then the raw little-endian data. No maintained npm package reads and writes it
// (the `safetensors` package is a 0.0.1 placeholder), and the format is small, so it is implemented here.
//
// Reading is header first, then tensor by tensor with positioned reads, so a file of any size (the public
// checkpoints are 2.7-5.4 GB) never sits in one Buffer; each tensor comes back in its stored dtype (F16/BF16 as
// their raw 16-bit patterns) and is decoded only when asked. The header is checked as strictly as the reference
// implementation does: exact header length, entries with dtype/shape/data_offsets, data sections contiguous from 0
// with no holes, overlaps or trailing bytes, no duplicate names, string metadata, sizes = product(shape) x dtype size.
// Every error names the file, the tensor and the rule.

import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename, join } from 'node:path';

import { FormatError } from '../errors.js';
import { decode, encoded } from '../tensor/dtype.js';
import { writeFileAtomic } from './atomic.js';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
}; // prettier-ignore

export function safetensorsDTypeBytes(dtype: SafetensorsDType): number {
  return BYTES[dtype];
}

/** Values as stored (I64 as exact numbers: ids and counters, below 2^53). */
export type NumericArray = Float64Array | Float32Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/** A tensor as stored: F16/BF16 keep their raw 16-bit patterns in `bits` (decode with `tensorValues`). */
export type LoadedTensor =
  | { dtype: Exclude<SafetensorsDType, 'F16' | 'BF16'>; shape: number[]; data: NumericArray; bits?: undefined }
  | { dtype: 'F16' | 'BF16'; shape: number[]; bits: Uint16Array; data?: undefined };

/** One header entry; `begin`/`end` are byte offsets into the data section. */
export interface TensorEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  /** File offset of the data section (8 + header length). */
  dataStart: number;
}

/** A tensor's values as numbers (what readSafetensors gives: F16/BF16 decoded to float32, exactly). */
export interface TensorValues {
  dtype: SafetensorsDType;
  shape: number[];
  data: NumericArray;
}

export interface SafetensorsFile {
  tensors: Map<string, TensorValues>;
  metadata: Record<string, string>;
}

/** The reference implementation's bound on the header (100 MB). */
const MAX_HEADER = 100_000_000;
/** Largest single read: readSync takes at most 2^31 - 1 bytes. */
const READ_CHUNK = 1 << 30;

if (endianness() !== 'LE') throw new FormatError('safetensors: this reader needs a little-endian machine');

/** Where the bytes come from: a file read with positioned reads, or a buffer (tests, small in-memory files). */
interface ByteSource {
  readonly size: number;
  /** Fills `into` with the bytes at [position, position + into.length). */
  read(position: number, into: Uint8Array): void;
}

function bufferSource(buf: Uint8Array): ByteSource {
  return { size: buf.length, read: (pos, into) => into.set(buf.subarray(pos, pos + into.length)) };
}

function fileSource(fd: number, path: string): ByteSource {
  const size = fstatSync(fd).size;
  return {
    size,
    read(pos, into) {
      let done = 0;
      while (done < into.length) {
        const want = Math.min(READ_CHUNK, into.length - done);
        const got = readSync(fd, into, done, want, pos + done);
        if (got === 0) throw new FormatError(`${path}: file ended at byte ${pos + done} (it changed while reading?)`);
        done += got;
      }
    },
  };
}

/** The top-level keys of a JSON object text in order, duplicates kept (JSON.parse keeps only the last). */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

function plainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Reads and checks the header of a safetensors byte source; `source` names it in errors. */
function readHeader(src: ByteSource, source: string): SafetensorsHeader {
  if (src.size < 8) throw new FormatError(`${source}: not a safetensors file (${src.size} bytes, need at least 8)`);
  const lenBytes = new Uint8Array(8);
  src.read(0, lenBytes);
  const declared = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER))
    throw new FormatError(`${source}: header length ${declared} exceeds the format's limit of ${MAX_HEADER} bytes`);
  const headerLen = Number(declared);
  if (8 + headerLen > src.size)
    throw new FormatError(`${source}: header length ${headerLen} exceeds the file (${src.size} bytes)`);
  const headerBytes = new Uint8Array(headerLen);
  src.read(8, headerBytes);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new FormatError(`${source}: header is not valid UTF-8`);
  }
  if (!text.startsWith('{')) throw new FormatError(`${source}: header must start with '{' (a JSON object)`);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${source}: header is not valid JSON (${(e as Error).message})`);
  }
  if (!plainObject(header)) throw new FormatError(`${source}: header must be a JSON object`);
  const names = topLevelKeys(text);
  if (names.length !== Object.keys(header).length) {
    const seen = new Set<string>();
    const dup = names.find((n) => seen.size === seen.add(n).size);
    throw new FormatError(`${source}: tensor '${dup}' appears twice in the header`);
  }

  const dataStart = 8 + headerLen;
  const dataLen = src.size - dataStart;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!plainObject(entry)) throw new FormatError(`${source}: __metadata__ must be an object of strings`);
      for (const [k, v] of Object.entries(entry))
        if (typeof v !== 'string')
          throw new FormatError(`${source}: __metadata__ value '${k}' must be a string, got ${JSON.stringify(v)}`);
      metadata = entry as Record<string, string>;
      continue;
    }
    entries.set(name, checkEntry(name, entry, `${source}: tensor '${name}'`));
  }

  // Data sections, in offset order, must tile [0, dataLen) exactly.
  const ordered = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of ordered) {
    if (e.begin < at) {
      const prev = ordered.find((o) => o !== e && o.begin < e.end && e.begin < o.end)!;
      throw new FormatError(`${source}: tensors '${prev.name}' and '${e.name}' overlap (bytes ${e.begin}..${at})`);
    }
    if (e.begin > at)
      throw new FormatError(
        `${source}: tensor '${e.name}' starts at byte ${e.begin} of the data section, leaving a hole after byte ${at}`,
      );
    at = e.end;
  }
  if (at > dataLen) {
    const last = ordered[ordered.length - 1]!;
    throw new FormatError(
      `${source}: tensor '${last.name}': data_offsets [${last.begin}, ${last.end}] lie outside the data section ` +
        `(${dataLen} bytes)`,
    );
  }
  if (at < dataLen)
    throw new FormatError(
      `${source}: ${dataLen - at} trailing bytes after the last tensor (data section ${dataLen} bytes, tensors end ` +
        `at ${at}; the header length may be wrong)`,
    );
  return { entries, metadata, dataStart };
}

function checkEntry(name: string, entry: unknown, where: string): TensorEntry {
  if (!plainObject(entry))
    throw new FormatError(
      `${where}: entry must be an object with dtype, shape, data_offsets, got ${JSON.stringify(entry)}`,
    );
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== 'string' || !Object.hasOwn(BYTES, dtype))
    throw new FormatError(
      `${where}: unsupported dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(BYTES).join(', ')})`,
    );
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || (d as number) < 0))
    throw new FormatError(`${where}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    offsets.some((o) => !Number.isSafeInteger(o) || (o as number) < 0)
  )
    throw new FormatError(`${where}: data_offsets must be [begin, end] of non-negative integers`);
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw new FormatError(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
  const n = (shape as number[]).reduce((a, b) => a * b, 1);
  const bytes = n * BYTES[dtype as SafetensorsDType];
  if (!Number.isSafeInteger(bytes))
    throw new FormatError(`${where}: shape ${JSON.stringify(shape)} is too large to address`);
  if (end - begin !== bytes)
    throw new FormatError(
      `${where}: ${end - begin} bytes of data for shape [${(shape as number[]).join(', ')}] of ${dtype} (need ${bytes})`,
    );
  return { name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end };
}

function allocStored(dtype: Exclude<SafetensorsDType, 'F16' | 'BF16' | 'I64'>, n: number): NumericArray {
  switch (dtype) {
    case 'F64': return new Float64Array(n);
    case 'F32': return new Float32Array(n);
    case 'I32': return new Int32Array(n);
    case 'I16': return new Int16Array(n);
    case 'I8': return new Int8Array(n);
    case 'U8': case 'BOOL': return new Uint8Array(n);
  }
} // prettier-ignore

function readEntry(src: ByteSource, header: SafetensorsHeader, e: TensorEntry): LoadedTensor {
  const n = e.shape.reduce((a, b) => a * b, 1);
  const pos = header.dataStart + e.begin;
  const bytes = (arr: ArrayBufferView) => new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  if (e.dtype === 'F16' || e.dtype === 'BF16') {
    const bits = new Uint16Array(n);
    src.read(pos, bytes(bits));
    return { dtype: e.dtype, shape: e.shape, bits };
  }
  if (e.dtype === 'I64') {
    const raw = new BigInt64Array(n);
    src.read(pos, bytes(raw));
    return { dtype: e.dtype, shape: e.shape, data: Float64Array.from(raw, Number) };
  }
  const data = allocStored(e.dtype, n);
  src.read(pos, bytes(data));
  return { dtype: e.dtype, shape: e.shape, data };
}

/**
 * An open safetensors file: the checked header, and tensors read one at a time on demand. Call `close()` when done
 * (or use `withSafetensors`).
 */
export class SafetensorsReader {
  readonly header: SafetensorsHeader;
  private fd: number;
  private readonly src: ByteSource;

  private constructor(
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
    this.src = fileSource(fd, path);
    this.header = readHeader(this.src, path);
  }

  static open(path: string): SafetensorsReader {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
    }
    try {
      return new SafetensorsReader(path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  /** Reads one tensor in its stored dtype. */
  read(name: string): LoadedTensor {
    const e = this.header.entries.get(name);
    if (!e) throw new FormatError(`${this.path}: no tensor '${name}'`);
    if (this.fd < 0) throw new FormatError(`${this.path}: reader is closed`);
    return readEntry(this.src, this.header, e);
  }

  /** Reads one tensor's stored bytes into `into` (exactly its size): straight into a tensor's storage, no copy. */
  readInto(name: string, into: Uint8Array): void {
    const e = this.header.entries.get(name);
    if (!e) throw new FormatError(`${this.path}: no tensor '${name}'`);
    if (this.fd < 0) throw new FormatError(`${this.path}: reader is closed`);
    if (into.length !== e.end - e.begin)
      throw new FormatError(`${this.path}: tensor '${name}' holds ${e.end - e.begin} bytes, ${into.length} asked`);
    this.src.read(this.header.dataStart + e.begin, into);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** Opens a file, runs `fn` with the reader and closes it. */
export function withSafetensors<R>(path: string, fn: (r: SafetensorsReader) => R): R {
  const r = SafetensorsReader.open(path);
  try {
    return fn(r);
  } finally {
    r.close();
  }
}

function valuesOf(t: LoadedTensor): TensorValues {
  return { dtype: t.dtype, shape: t.shape, data: tensorValues(t) };
}

/** Parses a whole safetensors buffer into values; `source` names it in errors. */
export function parseSafetensors(buf: Uint8Array, source: string): SafetensorsFile {
  const src = bufferSource(buf);
  const header = readHeader(src, source);
  const tensors = new Map<string, TensorValues>();
  for (const [name, e] of header.entries) tensors.set(name, valuesOf(readEntry(src, header, e)));
  return { tensors, metadata: header.metadata };
}

/**
 * Reads every tensor of a small file as values (F16/BF16 decoded to float32). Model weights are read tensor by
 * tensor in their stored dtype with SafetensorsReader instead.
 */
export function readSafetensors(path: string): SafetensorsFile {
  return withSafetensors(path, (r) => {
    const tensors = new Map<string, TensorValues>();
    for (const name of r.header.entries.keys()) tensors.set(name, valuesOf(r.read(name)));
    return { tensors, metadata: r.metadata };
  });
}

/** The values of a loaded tensor as numbers: F16/BF16 decoded to float32 (exact), everything else as stored. */
export function tensorValues(t: LoadedTensor): NumericArray {
  if (t.bits) return decode(t.dtype === 'BF16' ? 'bfloat16' : 'float16', t.bits, t.shape) as Float32Array;
  return t.data;
}

// --- writing ------------------------------------------------------------------------------------------------------

export interface TensorToSave {
  dtype: 'F64' | 'F32' | 'F16' | 'BF16' | 'I32' | 'I8' | 'U8';
  shape: readonly number[];
  /**
   * Values (rounded to the dtype), or for F16/BF16 a Uint16Array of bit patterns and for I8/U8 a Uint8Array of bytes
   * (a quantized weight's parts), taken as they are.
   */
  data: ArrayLike<number>;
}

function tensorBytes(name: string, t: TensorToSave): Uint8Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== n)
    throw new FormatError(
      `safetensors: tensor '${name}' has ${t.data.length} values for shape [${t.shape.join(', ')}]`,
    );
  const bits = t.data instanceof Uint16Array ? t.data : null;
  let arr: ArrayBufferView;
  switch (t.dtype) {
    case 'F64': arr = t.data instanceof Float64Array ? t.data : Float64Array.from(t.data); break;
    case 'F32': arr = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data); break;
    case 'I32': arr = t.data instanceof Int32Array ? t.data : Int32Array.from(t.data); break;
    case 'I8': case 'U8': arr = t.data instanceof Uint8Array ? t.data : Uint8Array.from(t.data); break;
    case 'BF16': arr = bits ?? encoded('bfloat16', t.data, t.shape); break;
    case 'F16': arr = bits ?? encoded('float16', t.data, t.shape); break;
  } // prettier-ignore
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

/** Header length prefix and header (sorted names, 8-byte aligned data section) for tensors of the given sizes. */
function headerChunks(tensors: Map<string, TensorToSave>, metadata: Record<string, string>): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of [...tensors.keys()].sort()) {
    const t = tensors.get(name)!;
    const bytes = t.shape.reduce((a, b) => a * b, 1) * BYTES[t.dtype];
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // align the data section
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return [head, Buffer.from(json, 'utf8')];
}

/** Serialises tensors (sorted by name, 8-byte aligned data): the header, then one chunk per tensor as it is made. */
export function* serializeSafetensors(
  tensors: Map<string, TensorToSave>,
  metadata: Record<string, string> = {},
): Generator<Uint8Array> {
  yield* headerChunks(tensors, metadata);
  for (const name of [...tensors.keys()].sort()) yield tensorBytes(name, tensors.get(name)!);
}

/** Writes a safetensors file atomically, converting one tensor at a time. */
export function writeSafetensors(
  path: string,
  tensors: Map<string, TensorToSave>,
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

// --- checkpoints: one file or Hugging Face shards ----------------------------------------------------------------

export const WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX = 'model.safetensors.index.json';

/**
 * A model's weights: `model.safetensors`, or the shards listed by `model.safetensors.index.json`
 * (`{"metadata": {"total_size": bytes, ...}, "weight_map": {tensor: shard file}}`). Only the headers are read on open;
 * tensors are read one by one. The index must agree with the shards exactly (every tensor in the shard it names, no
 * tensor in two shards, no shard tensor missing from the index, total_size the sum of the tensor bytes).
 */
export class Weights {
  private constructor(
    readonly readers: SafetensorsReader[],
    /** Tensor name -> the reader holding it. */
    readonly where: Map<string, SafetensorsReader>,
  ) {}

  static open(dir: string): Weights {
    const indexPath = join(dir, WEIGHTS_INDEX);
    if (!existsSync(indexPath)) {
      const path = join(dir, WEIGHTS_FILE);
      if (!existsSync(path)) throw new FormatError(`${dir}: missing ${path} (or ${indexPath} for shards)`);
      const r = SafetensorsReader.open(path);
      return new Weights([r], new Map([...r.header.entries.keys()].map((n) => [n, r])));
    }
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexPath, 'utf8'));
    } catch (e) {
      throw new FormatError(`${indexPath}: cannot read the shard index (${(e as Error).message})`);
    }
    if (!plainObject(index) || !plainObject(index.weight_map))
      throw new FormatError(`${indexPath}: expected an object with a "weight_map" object (tensor name -> shard file)`);
    const map = index.weight_map;
    const byFile = new Map<string, string[]>();
    for (const [name, file] of Object.entries(map)) {
      if (typeof file !== 'string' || file !== basename(file) || file === '..' || file === '.')
        throw new FormatError(
          `${indexPath}: weight_map['${name}'] must be a file name in the same directory, got ${JSON.stringify(file)}`,
        );
      byFile.set(file, [...(byFile.get(file) ?? []), name]);
    }
    if (byFile.size === 0) throw new FormatError(`${indexPath}: weight_map lists no tensors`);
    const readers: SafetensorsReader[] = [];
    const where = new Map<string, SafetensorsReader>();
    try {
      for (const [file, names] of byFile) {
        const r = SafetensorsReader.open(join(dir, file));
        readers.push(r);
        for (const n of names)
          if (!r.header.entries.has(n))
            throw new FormatError(`${indexPath}: tensor '${n}' is mapped to ${file}, which does not hold it`);
        for (const n of r.header.entries.keys()) {
          if (map[n] !== file)
            throw new FormatError(
              `${r.path}: tensor '${n}' is ${n in map ? `mapped to ${JSON.stringify(map[n])}` : 'not listed'} in ${indexPath}`,
            );
          where.set(n, r);
        }
      }
      const total = plainObject(index.metadata) ? index.metadata.total_size : undefined;
      const bytes = [...where].reduce(
        (a, [n, r]) => a + r.header.entries.get(n)!.end - r.header.entries.get(n)!.begin,
        0,
      );
      if (total !== undefined && total !== bytes)
        throw new FormatError(
          `${indexPath}: metadata.total_size is ${JSON.stringify(total)}, the shards hold ${bytes} bytes`,
        );
    } catch (e) {
      for (const r of readers) r.close();
      throw e;
    }
    return new Weights(readers, where);
  }

  /** The header entry of a tensor (undefined when absent). */
  entry(name: string): TensorEntry | undefined {
    return this.where.get(name)?.header.entries.get(name);
  }

  /** The file that holds a tensor, for messages. */
  fileOf(name: string): string {
    return this.where.get(name)?.path ?? this.readers.map((r) => r.path).join(', ');
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  read(name: string): LoadedTensor {
    const r = this.where.get(name);
    if (!r) throw new FormatError(`${this.fileOf(name)}: no tensor '${name}'`);
    return r.read(name);
  }

  readInto(name: string, into: Uint8Array): void {
    const r = this.where.get(name);
    if (!r) throw new FormatError(`${this.fileOf(name)}: no tensor '${name}'`);
    r.readInto(name, into);
  }

  close(): void {
    for (const r of this.readers) r.close();
  }
}
