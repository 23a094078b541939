// The safetensors format (Hugging Face) on Node: files read with positioned reads, and writing. No maintained npm
// package reads and writes it (the `safetensors` package is a 0.0.1 placeholder), and the format is small, so it is
// implemented here; the portable half (the header and its checks, decoding, shards) is safetensors-format.ts, which
// the browser entry reads checkpoints with, and everything in it is exported from here too.
//
// Reading is header first, then tensor by tensor with positioned reads, so a file of any size (the public
// checkpoints are 2.7-5.4 GB) never sits in one Buffer; each tensor comes back in its stored dtype (F16/BF16 as
// their raw 16-bit patterns) and is decoded only when asked, or its bytes go straight into a tensor's storage.

import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';

import { FormatError } from '../errors.js';
import { encoded } from '../tensor/dtype.js';
import { writeFileAtomic } from './atomic.js';
import {
  type ByteSource,
  type SafetensorsFile,
  type TensorValues,
  TensorFile,
  WEIGHTS_FILE,
  WEIGHTS_INDEX,
  Weights,
  safetensorsDTypeBytes,
  valuesOf,
} from './safetensors-format.js';

export * from './safetensors-format.js';

/** Largest single read: readSync takes at most 2^31 - 1 bytes. */
const READ_CHUNK = 1 << 30;

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

/**
 * An open safetensors file: the checked header, and tensors read one at a time on demand. Call `close()` when done
 * (or use `withSafetensors`).
 */
export class SafetensorsReader extends TensorFile {
  private constructor(path: string, fd: number) {
    super(fileSource(fd, path), path, () => closeSync(fd));
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

/** Opens a model directory's weights: model.safetensors, or the shards its model.safetensors.index.json lists. */
export function openWeights(dir: string): Weights {
  const indexPath = join(dir, WEIGHTS_INDEX);
  if (!existsSync(indexPath)) {
    const path = join(dir, WEIGHTS_FILE);
    if (!existsSync(path)) throw new FormatError(`${dir}: missing ${path} (or ${indexPath} for shards)`);
    return Weights.single(SafetensorsReader.open(path));
  }
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new FormatError(`${indexPath}: cannot read the shard index (${(e as Error).message})`);
  }
  return Weights.fromIndex(index, indexPath, (file) => SafetensorsReader.open(join(dir, file)));
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
    const bytes = t.shape.reduce((a, b) => a * b, 1) * safetensorsDTypeBytes(t.dtype);
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
