// The safetensors format (Hugging Face), the portable half (no Node built-ins: the browser entry reads checkpoints
// with it): 8-byte little-endian header length N, N bytes of JSON header mapping each tensor name to {dtype, shape,
// data_offsets: [begin, end)} relative to the data section (plus an optional "__metadata__" map of strings), then the
// raw little-endian data. The header is checked as strictly as the reference implementation does: exact header
// length, entries with dtype/shape/data_offsets, data sections contiguous from 0 with no holes, overlaps or trailing
// bytes, no duplicate names, string metadata, sizes = product(shape) x dtype size. Every error names the file, the
// tensor and the rule. Reading files (positioned reads) and writing are Node's, in safetensors.ts.

import { FormatError } from '../errors.js';
import { decode } from '../tensor/dtype.js';

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

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1)
  throw new FormatError('safetensors: this reader needs a little-endian machine');

/**
 * Where the bytes come from: a file read with positioned reads, a buffer (tests, small files), or the header of a file
 * that streams in (the browser's loader: its tensors arrive through the stream, src/web/files.ts).
 */
export interface ByteSource {
  /** The file's size; null when not known before the file has streamed in (a transfer without a Content-Length). */
  readonly size: number | null;
  /** Fills `into` with the bytes at [position, position + into.length). */
  read(position: number, into: Uint8Array): void;
}

export function bufferSource(buf: Uint8Array): ByteSource {
  return { size: buf.length, read: (pos, into) => into.set(buf.subarray(pos, pos + into.length)) };
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

/**
 * The header length a file's first 8 bytes declare, checked against the format's limit and the file's size (when
 * known): the length of what to read next, bounded before anything is allocated for it.
 */
export function headerLength(first8: Uint8Array, size: number | null, source: string): number {
  const declared = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER))
    throw new FormatError(`${source}: header length ${declared} exceeds the format's limit of ${MAX_HEADER} bytes`);
  const headerLen = Number(declared);
  if (size !== null && 8 + headerLen > size)
    throw new FormatError(`${source}: header length ${headerLen} exceeds the file (${size} bytes)`);
  return headerLen;
}

/**
 * Reads and checks the header of a safetensors byte source; `source` names it in errors. Of a source of unknown size,
 * the data section is what the header describes (the stream's reader checks that it ends there).
 */
export function readHeader(src: ByteSource, source: string): SafetensorsHeader {
  if (src.size !== null && src.size < 8)
    throw new FormatError(`${source}: not a safetensors file (${src.size} bytes, need at least 8)`);
  const lenBytes = new Uint8Array(8);
  src.read(0, lenBytes);
  const headerLen = headerLength(lenBytes, src.size, source);
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
  const dataLen = src.size === null ? null : src.size - dataStart;
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
  if (dataLen !== null && at > dataLen) {
    const last = ordered[ordered.length - 1]!;
    throw new FormatError(
      `${source}: tensor '${last.name}': data_offsets [${last.begin}, ${last.end}] lie outside the data section ` +
        `(${dataLen} bytes)`,
    );
  }
  if (dataLen !== null && at < dataLen)
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

/**
 * The bytes an entry's stored data goes into (`bytes`, exactly its size), and the tensor they make once filled
 * (`tensor()`: I64 converted to numbers).
 */
export function entryBuffer(e: TensorEntry): { bytes: Uint8Array; tensor: () => LoadedTensor } {
  const n = e.shape.reduce((a, b) => a * b, 1);
  const bytes = (arr: ArrayBufferView) => new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  if (e.dtype === 'F16' || e.dtype === 'BF16') {
    const bits = new Uint16Array(n);
    return { bytes: bytes(bits), tensor: () => ({ dtype: e.dtype as 'F16' | 'BF16', shape: e.shape, bits }) };
  }
  if (e.dtype === 'I64') {
    const raw = new BigInt64Array(n);
    return {
      bytes: bytes(raw),
      tensor: () => ({ dtype: 'I64', shape: e.shape, data: Float64Array.from(raw, Number) }),
    };
  }
  const data = allocStored(e.dtype, n);
  const dtype = e.dtype;
  return { bytes: bytes(data), tensor: () => ({ dtype, shape: e.shape, data }) };
}

export function readEntry(src: ByteSource, header: SafetensorsHeader, e: TensorEntry): LoadedTensor {
  const b = entryBuffer(e);
  src.read(header.dataStart + e.begin, b.bytes);
  return b.tensor();
}

/**
 * A safetensors file with a checked header whose tensors are read one at a time from its byte source (a file with
 * positioned reads: SafetensorsReader in safetensors.ts; bytes in memory: `bufferSource`; a streamed file's header:
 * src/web/files.ts). Call `close()` when done.
 */
export class TensorFile {
  readonly header: SafetensorsHeader;
  private open = true;

  constructor(
    private readonly src: ByteSource,
    readonly path: string,
    private readonly onClose: () => void = () => {},
  ) {
    this.header = readHeader(src, path);
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  private entryOf(name: string): TensorEntry {
    const e = this.header.entries.get(name);
    if (!e) throw new FormatError(`${this.path}: no tensor '${name}'`);
    if (!this.open) throw new FormatError(`${this.path}: reader is closed`);
    return e;
  }

  /** Reads one tensor in its stored dtype. */
  read(name: string): LoadedTensor {
    return readEntry(this.src, this.header, this.entryOf(name));
  }

  /** Reads one tensor's stored bytes into `into` (exactly its size): straight into a tensor's storage, no copy. */
  readInto(name: string, into: Uint8Array): void {
    const e = this.entryOf(name);
    if (into.length !== e.end - e.begin)
      throw new FormatError(`${this.path}: tensor '${name}' holds ${e.end - e.begin} bytes, ${into.length} asked`);
    this.src.read(this.header.dataStart + e.begin, into);
  }

  close(): void {
    if (this.open) this.onClose();
    this.open = false;
  }
}

export function valuesOf(t: LoadedTensor): TensorValues {
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

/** The values of a loaded tensor as numbers: F16/BF16 decoded to float32 (exact), everything else as stored. */
export function tensorValues(t: LoadedTensor): NumericArray {
  if (t.bits) return decode(t.dtype === 'BF16' ? 'bfloat16' : 'float16', t.bits, t.shape) as Float32Array;
  return t.data;
}

// --- checkpoints: one file or Hugging Face shards ----------------------------------------------------------------

export const WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX = 'model.safetensors.index.json';

/** The parsed shard index's weight_map, checked (an object of tensor name -> a file name in the same directory). */
function weightMap(index: unknown, indexPath: string): { map: Record<string, unknown>; byFile: Map<string, string[]> } {
  if (!plainObject(index) || !plainObject(index.weight_map))
    throw new FormatError(`${indexPath}: expected an object with a "weight_map" object (tensor name -> shard file)`);
  const map = index.weight_map;
  const byFile = new Map<string, string[]>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string' || /[\\/]/.test(file) || file === '..' || file === '.' || file === '')
      throw new FormatError(
        `${indexPath}: weight_map['${name}'] must be a file name in the same directory, got ${JSON.stringify(file)}`,
      );
    byFile.set(file, [...(byFile.get(file) ?? []), name]);
  }
  if (byFile.size === 0) throw new FormatError(`${indexPath}: weight_map lists no tensors`);
  return { map, byFile };
}

/** The shard files a parsed model.safetensors.index.json names, in order of first mention. */
export function shardFiles(index: unknown, indexPath: string): string[] {
  return [...weightMap(index, indexPath).byFile.keys()];
}

/**
 * A model's weights: `model.safetensors`, or the shards listed by `model.safetensors.index.json`
 * (`{"metadata": {"total_size": bytes, ...}, "weight_map": {tensor: shard file}}`). Tensors are read one by one from
 * their file. The index must agree with the shards exactly (every tensor in the shard it names, no tensor in two
 * shards, no shard tensor missing from the index, total_size the sum of the tensor bytes). Opening files is the
 * caller's (Node: `openWeights` in safetensors.ts; a browser: fetched buffers).
 */
export class Weights {
  private constructor(
    readonly readers: TensorFile[],
    /** Tensor name -> the file holding it. */
    readonly where: Map<string, TensorFile>,
  ) {}

  static single(r: TensorFile): Weights {
    return new Weights([r], new Map([...r.header.entries.keys()].map((n) => [n, r])));
  }

  /** Shards: `index` is the parsed index file, `open` opens a shard by its file name. */
  static fromIndex(index: unknown, indexPath: string, open: (file: string) => TensorFile): Weights {
    const { map, byFile } = weightMap(index, indexPath);
    const readers: TensorFile[] = [];
    const where = new Map<string, TensorFile>();
    try {
      for (const [file, names] of byFile) {
        const r = open(file);
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
      const total = plainObject(index) && plainObject(index.metadata) ? index.metadata.total_size : undefined;
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

  /** The files, for messages. */
  get files(): string[] {
    return this.readers.map((r) => r.path);
  }

  /** The header entry of a tensor (undefined when absent). */
  entry(name: string): TensorEntry | undefined {
    return this.where.get(name)?.header.entries.get(name);
  }

  /** The file that holds a tensor, for messages. */
  fileOf(name: string): string {
    return this.where.get(name)?.path ?? this.files.join(', ');
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
