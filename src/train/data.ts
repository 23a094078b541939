// The data pipeline: a source (file, directory, JSONL or Brown) is tokenised once into binary token shards with a
// manifest (tokenizer, counts, hash of the inputs). Re-running on unchanged inputs with the same tokenizer finds the
// manifest and reuses the shards. Training streams windows of seq-len + 1 tokens from the shards, reading only what
// each batch needs, in a seeded shuffled order whose position is two integers, so a resumed run continues exactly.
//
// Split: the source is cut into segments of whole lines (about 4 KiB); every k-th segment (k = round(1 / valFraction))
// goes to validation, the rest to training. The split depends only on the inputs and valFraction, never on the seed.
// Documents end with the end-of-text token.

import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { basename, join } from 'node:path';

import { writeFileAtomic, syncDir } from '../io/atomic.js';
import { Rng } from '../tensor/random.js';
import { trainBpe } from '../tokenizer/bpe.js';
import { loadTokenizer } from '../tokenizer/load.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { DataError, type DataProblem, SEGMENT_CHARS, formatProblems, readSegments, sourceFiles } from './sources.js';

export type Split = 'train' | 'val';
export type TokenDType = 'uint16' | 'uint32';

export interface ShardInfo {
  file: string;
  split: Split;
  tokens: number;
}

export interface Manifest {
  format: 'retnet-token-shards';
  version: 1;
  /** Hash of everything the shards depend on; a manifest with another key is rebuilt. */
  key: string;
  source: string;
  inputs: { file: string; bytes: number; sha256: string }[];
  tokenizer: { type: string; vocabSize: number; eosId: number; sha256: string };
  tokenDType: TokenDType;
  valFraction: number;
  jsonlField: string;
  counts: { segments: number; documents: number; trainTokens: number; valTokens: number; problems: number };
  shards: ShardInfo[];
}

export interface PrepareOptions {
  /** A path (text file, directory, JSONL) or 'brown'. */
  source: string;
  /** A ready tokenizer, or the vocabulary size of a byte-level BPE to train on the training split. */
  tokenizer: Tokenizer | { bpeVocabSize: number };
  /** Shards live in a sub-folder of this, named by the key. */
  cacheDir: string;
  /** Default 'text'. */
  jsonlField?: string;
  /** Fraction of segments held out for validation (0 for none). Default 0.01. */
  valFraction?: number;
  /** What bad data does: 'reject' (default) stops with the list of problems, 'skip' leaves them out with a warning. */
  onBadData?: 'reject' | 'skip';
  /** Progress and warnings. */
  log?: (line: string) => void;
}

export interface PreparedData {
  dir: string;
  manifest: Manifest;
  tokenizer: Tokenizer;
  /** True when existing shards were reused. */
  reused: boolean;
}

/** Tokens per shard file. */
const SHARD_TOKENS = 1 << 26;
const TOKEN_BYTES: Record<TokenDType, number> = { uint16: 2, uint32: 4 };

const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');

function fileHash(path: string): { bytes: number; sha256: string } {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  const block = Buffer.alloc(1 << 20);
  let bytes = 0;
  try {
    for (let n = readSync(fd, block); n > 0; n = readSync(fd, block)) {
      hash.update(block.subarray(0, n));
      bytes += n;
    }
  } finally {
    closeSync(fd);
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** Appends token ids to numbered shard files of one split. */
class ShardWriter {
  readonly shards: ShardInfo[] = [];
  private fd = -1;
  private inShard = 0;
  private readonly buffer: Uint16Array | Uint32Array;
  private buffered = 0;

  constructor(
    private readonly dir: string,
    private readonly split: Split,
    dtype: TokenDType,
    private readonly vocabSize: number,
  ) {
    this.buffer = dtype === 'uint16' ? new Uint16Array(1 << 16) : new Uint32Array(1 << 16);
  }

  get tokens(): number {
    return this.shards.reduce((n, s) => n + s.tokens, 0) + this.buffered;
  }

  push(ids: readonly number[]): void {
    for (const id of ids) {
      if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize))
        throw new DataError(`tokenizer produced id ${id}, outside its vocabulary of ${this.vocabSize}`);
      if (this.buffered === this.buffer.length) this.flush();
      this.buffer[this.buffered++] = id;
    }
  }

  finish(): ShardInfo[] {
    this.flush();
    this.close();
    return this.shards;
  }

  private flush(): void {
    let start = 0;
    while (start < this.buffered) {
      if (this.fd < 0 || this.inShard === SHARD_TOKENS) this.open();
      const n = Math.min(this.buffered - start, SHARD_TOKENS - this.inShard);
      const bytes = Buffer.from(
        this.buffer.buffer,
        start * this.buffer.BYTES_PER_ELEMENT,
        n * this.buffer.BYTES_PER_ELEMENT,
      );
      for (let off = 0; off < bytes.length;) off += writeSync(this.fd, bytes, off);
      this.inShard += n;
      this.shards[this.shards.length - 1]!.tokens += n;
      start += n;
    }
    this.buffered = 0;
  }

  private open(): void {
    this.close();
    const file = `${this.split}-${String(this.shards.length).padStart(4, '0')}.bin`;
    this.fd = openSync(join(this.dir, file), 'w');
    this.inShard = 0;
    this.shards.push({ file, split: this.split, tokens: 0 });
  }

  private close(): void {
    if (this.fd < 0) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** Shards of a manifest that exist with the expected sizes. */
function shardsIntact(dir: string, manifest: Manifest): boolean {
  return manifest.shards.every((s) => {
    const path = join(dir, s.file);
    return existsSync(path) && statSync(path).size === s.tokens * TOKEN_BYTES[manifest.tokenDType];
  });
}

function readManifest(path: string): Manifest | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  } catch {
    return null;
  }
}

/**
 * Tokenises the source into shards under cacheDir (or finds them there from an earlier run with the same inputs,
 * tokenizer and options) and returns where they are, the manifest and the tokenizer.
 */
export function prepareData(opts: PrepareOptions): PreparedData {
  const log = opts.log ?? (() => {});
  const jsonlField = opts.jsonlField ?? 'text';
  const valFraction = opts.valFraction ?? 0.01;
  const onBadData = opts.onBadData ?? 'reject';
  if (!(valFraction >= 0 && valFraction <= 0.5))
    throw new DataError(`validation fraction must be in [0, 0.5], got ${valFraction}`);
  const source = opts.source;
  const files = sourceFiles(source);
  const inputs = files.map((file) => ({
    file: source === 'brown' ? `brown/${basename(file)}` : file,
    ...fileHash(file),
  }));
  const given = 'encode' in opts.tokenizer ? opts.tokenizer : null;
  const tokenizerKey = given
    ? sha256(given.toJSON())
    : `bpe:${(opts.tokenizer as { bpeVocabSize: number }).bpeVocabSize}`;
  const key = sha256(
    JSON.stringify({ version: 1, inputs, tokenizerKey, valFraction, jsonlField, onBadData, SEGMENT_CHARS }),
  );
  const dir = join(opts.cacheDir, key.slice(0, 16));

  const existing = readManifest(join(dir, 'manifest.json'));
  if (existing && existing.key === key && shardsIntact(dir, existing)) {
    const tokenizer =
      given ?? loadTokenizer(readFileSync(join(dir, 'tokenizer.json'), 'utf8'), join(dir, 'tokenizer.json'));
    log(`data: reusing ${existing.counts.trainTokens} train / ${existing.counts.valTokens} val tokens in ${dir}`);
    return { dir, manifest: existing, tokenizer, reused: true };
  }

  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const k = valFraction > 0 ? Math.max(2, Math.round(1 / valFraction)) : 0;
    const isVal = (segment: number) => k > 0 && segment % k === k - 1;
    const scan = (visit: (text: string, endsDocument: boolean, segment: number) => void): DataProblem[] => {
      const problems: DataProblem[] = [];
      let segment = 0;
      for (const s of readSegments(source, { jsonlField }, (p) => problems.push(p)))
        visit(s.text, s.endsDocument, segment++);
      if (problems.length > 0 && onBadData === 'reject')
        throw new DataError(
          `${problems.length} problem(s) in the data (pass --skip-bad-data to leave them out):\n${formatProblems(problems)}`,
        );
      return problems;
    };

    let tokenizer: Tokenizer;
    if (given) tokenizer = given;
    else {
      const corpus = join(tmp, 'bpe-corpus.txt');
      const fd = openSync(corpus, 'w');
      try {
        scan((text, _end, segment) => {
          if (!isVal(segment)) writeSync(fd, text);
        });
      } finally {
        closeSync(fd);
      }
      const vocab = (opts.tokenizer as { bpeVocabSize: number }).bpeVocabSize;
      log(`data: training a byte-level BPE with ${vocab} tokens on the training split`);
      tokenizer = trainBpe([corpus], vocab);
      rmSync(corpus);
      if (tokenizer.vocabSize < vocab) log(`data: the corpus only supports ${tokenizer.vocabSize} BPE tokens`);
    }
    writeFileSync(join(tmp, 'tokenizer.json'), tokenizer.toJSON());

    const tokenDType: TokenDType = tokenizer.vocabSize <= 65536 ? 'uint16' : 'uint32';
    const train = new ShardWriter(tmp, 'train', tokenDType, tokenizer.vocabSize);
    const val = new ShardWriter(tmp, 'val', tokenDType, tokenizer.vocabSize);
    // Each segment is written one step late, so that the last one can still go to validation when the data is too
    // small for every k-th segment to have given one.
    let held: number[] | null = null;
    let documents = 0;
    let segments = 0;
    const problems = scan((text, endsDocument, segment) => {
      if (held) train.push(held);
      held = null;
      const ids = tokenizer.encode(text);
      if (endsDocument) {
        ids.push(tokenizer.eosId);
        documents++;
      }
      segments++;
      if (isVal(segment)) val.push(ids);
      else held = ids;
    });
    if (held) (k > 0 && val.tokens === 0 && segments > 1 ? val : train).push(held);
    if (problems.length > 0)
      log(`data: skipped ${problems.length} problem(s) in the data:\n${formatProblems(problems)}`);
    if (segments === 0) throw new DataError(`${source}: no usable text`);
    if (k > 0 && val.tokens === 0)
      throw new DataError(
        `${source}: too little text to hold out a validation split (${segments} segment of up to ${SEGMENT_CHARS} characters); pass a validation fraction of 0 or more data`,
      );

    const shards = [...train.finish(), ...val.finish()];
    const manifest: Manifest = {
      format: 'retnet-token-shards',
      version: 1,
      key,
      source,
      inputs,
      tokenizer: {
        type: (JSON.parse(tokenizer.toJSON()) as { model: { type: string } }).model.type,
        vocabSize: tokenizer.vocabSize,
        eosId: tokenizer.eosId,
        sha256: sha256(tokenizer.toJSON()),
      },
      tokenDType,
      valFraction,
      jsonlField,
      counts: { segments, documents, trainTokens: train.tokens, valTokens: val.tokens, problems: problems.length },
      shards,
    };
    writeFileAtomic(join(tmp, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    syncDir(opts.cacheDir);
    log(`data: ${manifest.counts.trainTokens} train / ${manifest.counts.valTokens} val tokens written to ${dir}`);
    return { dir, manifest, tokenizer, reused: false };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Random access to the tokens of one split, read from the shard files on demand. */
export class ShardReader {
  readonly tokens: number;
  private readonly shards: { fd: number; tokens: number }[];
  private readonly bytes: number;
  private readonly dtype: TokenDType;

  constructor(dir: string, manifest: Manifest, split: Split) {
    this.dtype = manifest.tokenDType;
    this.bytes = TOKEN_BYTES[this.dtype];
    this.shards = manifest.shards
      .filter((s) => s.split === split)
      .map((s) => ({ fd: openSync(join(dir, s.file), 'r'), tokens: s.tokens }));
    this.tokens = this.shards.reduce((n, s) => n + s.tokens, 0);
  }

  /** Windows of `length` tokens, stepping by length - 1 (consecutive windows share one token), per shard. */
  windowCounts(length: number): number[] {
    return this.shards.map((s) => (s.tokens >= length ? Math.floor((s.tokens - 1) / (length - 1)) : 0));
  }

  /** Copies tokens [offset, offset + out.length) of shard `shard` into out. */
  read(shard: number, offset: number, out: Int32Array): void {
    const s = this.shards[shard]!;
    const buf = Buffer.alloc(out.length * this.bytes);
    const n = readSync(s.fd, buf, 0, buf.length, offset * this.bytes);
    if (n !== buf.length) throw new DataError(`token shard ${shard} is shorter than its manifest says`);
    const view =
      this.dtype === 'uint16'
        ? new Uint16Array(buf.buffer, buf.byteOffset, out.length)
        : new Uint32Array(buf.buffer, buf.byteOffset, out.length);
    out.set(view);
  }

  close(): void {
    for (const s of this.shards) closeSync(s.fd);
    this.shards.length = 0;
  }
}

/** A batch: inputs and next-token targets, both int32 [rows, T] flattened. */
export interface Batch {
  rows: number;
  inputs: Int32Array;
  targets: Int32Array;
}

/** Where a sampler stands: the epoch and how many windows of its order were used. */
export interface SamplerPosition {
  epoch: number;
  cursor: number;
}

/** Windows of T + 1 tokens laid end to end over the shards of one split, addressed by a global index. */
class Windows {
  readonly count: number;
  private readonly starts: number[] = [];
  private readonly counts: number[];

  constructor(
    readonly reader: ShardReader,
    readonly T: number,
  ) {
    this.counts = reader.windowCounts(T + 1);
    let n = 0;
    for (const c of this.counts) {
      this.starts.push(n);
      n += c;
    }
    this.count = n;
  }

  /** Fills row `row` of the batch with window w. */
  fill(w: number, batch: Batch, row: number): void {
    let shard = this.counts.length - 1;
    while (this.starts[shard]! > w) shard--;
    const window = new Int32Array(this.T + 1);
    this.reader.read(shard, (w - this.starts[shard]!) * this.T, window);
    batch.inputs.set(window.subarray(0, this.T), row * this.T);
    batch.targets.set(window.subarray(1), row * this.T);
  }
}

/**
 * Training batches: each epoch visits every window once in an order shuffled by (seed, epoch). The position is
 * serialisable; setting it back reproduces the same batches.
 */
export class BatchSampler {
  private readonly windows: Windows;
  private order: Uint32Array | null = null;
  private position: SamplerPosition = { epoch: 0, cursor: 0 };

  constructor(
    reader: ShardReader,
    readonly batch: number,
    readonly seqLen: number,
    readonly seed: number,
  ) {
    this.windows = new Windows(reader, seqLen);
    if (this.windows.count === 0)
      throw new DataError(
        `the training split has ${reader.tokens} tokens, too few for one sequence of ${seqLen} + 1 tokens`,
      );
  }

  get windowsPerEpoch(): number {
    return this.windows.count;
  }

  getPosition(): SamplerPosition {
    return { ...this.position };
  }

  setPosition(p: SamplerPosition): void {
    if (!(Number.isInteger(p.epoch) && p.epoch >= 0 && Number.isInteger(p.cursor) && p.cursor >= 0))
      throw new DataError(`invalid sampler position ${JSON.stringify(p)}`);
    if (p.epoch !== this.position.epoch) this.order = null;
    this.position = { ...p };
  }

  next(): Batch {
    const T = this.seqLen;
    const batch: Batch = {
      rows: this.batch,
      inputs: new Int32Array(this.batch * T),
      targets: new Int32Array(this.batch * T),
    };
    for (let row = 0; row < this.batch; row++) {
      if (this.position.cursor >= this.windows.count) this.setPosition({ epoch: this.position.epoch + 1, cursor: 0 });
      this.order ??= this.shuffled(this.position.epoch);
      this.windows.fill(this.order[this.position.cursor++]!, batch, row);
    }
    return batch;
  }

  private shuffled(epoch: number): Uint32Array {
    const n = this.windows.count;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    const rng = new Rng((Math.imul(this.seed, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    return order;
  }
}

/** Evaluation batches: the windows of a split in order, the last batch possibly smaller; at most maxBatches. */
export function* sequentialBatches(
  reader: ShardReader,
  batch: number,
  seqLen: number,
  maxBatches = Infinity,
): Generator<Batch> {
  const windows = new Windows(reader, seqLen);
  for (let w = 0, b = 0; w < windows.count && b < maxBatches; b++) {
    const rows = Math.min(batch, windows.count - w);
    const out: Batch = { rows, inputs: new Int32Array(rows * seqLen), targets: new Int32Array(rows * seqLen) };
    for (let row = 0; row < rows; row++) windows.fill(w++, out, row);
    yield out;
  }
}
