// Where a browser reads a model directory from: a base URL (fetch) or files the user picked (an <input type=file
// webkitdirectory> FileList, or any File[]). Either way a file is a stream of bytes (a fetch body, File.stream())
// read in order as it arrives, with progress: JSON files whole, safetensors files header first, then each tensor's
// bytes straight into what the loader reads it into (no whole-file buffer: src/web/model.ts).

import { FormatError } from '../errors.js';
import { type ByteSource, TensorFile, headerLength } from '../io/safetensors-format.js';

/** A directory URL ('/model/', 'https://host/dir') or picked files. */
export type ModelSource = string | URL | FileList | readonly File[];

export interface LoadProgress {
  /** The file being read ('model.safetensors'). */
  file: string;
  /** Bytes of it read so far. */
  loaded: number;
  /**
   * Its size: a File's size or a Content-Length, else (a compressed or chunked transfer) what a safetensors header
   * says once it is read; null until known.
   */
  total: number | null;
}

/** One file of the directory, read from the start in order. */
export class StreamedFile {
  private pending: Uint8Array = new Uint8Array(0);
  private at = 0;
  /** Bytes consumed so far. */
  get position(): number {
    return this.at;
  }

  constructor(
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    /** The file's name in the directory ('model.safetensors'), for progress. */
    readonly name: string,
    /** Names the file in messages (its URL, or folder/name). */
    readonly where: string,
    /** Its size when known before reading (see LoadProgress.total). */
    public size: number | null,
    private readonly onProgress?: (p: LoadProgress) => void,
  ) {
    onProgress?.({ file: name, loaded: 0, total: size });
  }

  /** The next chunk of the stream (null at its end). */
  private async chunk(): Promise<Uint8Array | null> {
    if (this.pending.length > 0) return this.pending;
    for (;;) {
      const { done, value } = await this.reader.read();
      if (done) return null;
      if (value.length === 0) continue;
      this.pending = value;
      return value;
    }
  }

  private consume(n: number): void {
    this.pending = this.pending.subarray(n);
    this.at += n;
    this.onProgress?.({ file: this.name, loaded: this.at, total: this.size });
  }

  private ended(what: string, end: number): FormatError {
    return new FormatError(
      `${this.where}: the file ends at byte ${this.at}, but ${what} needs bytes up to ${end} (a truncated file or an ` +
        `interrupted transfer)`,
    );
  }

  /** Fills `into` with the next bytes; `what` names them if the file ends first. */
  async readInto(into: Uint8Array, what: string): Promise<void> {
    const end = this.at + into.length;
    for (let done = 0; done < into.length;) {
      const c = await this.chunk();
      if (!c) throw this.ended(what, end);
      const n = Math.min(c.length, into.length - done);
      into.set(c.subarray(0, n), done);
      done += n;
      this.consume(n);
    }
  }

  /** Skips to byte `pos` (not behind the current one); `what` names the bytes there if the file ends first. */
  async skipTo(pos: number, what: string): Promise<void> {
    if (pos < this.at) throw new Error(`${this.where}: read of byte ${pos} after byte ${this.at} (reads go in order)`);
    while (this.at < pos) {
      const c = await this.chunk();
      if (!c) throw this.ended(what, pos);
      this.consume(Math.min(c.length, pos - this.at));
    }
  }

  /** The file must end here (a safetensors file at the end of the data section its header describes). */
  async expectEnd(what: string): Promise<void> {
    let extra = 0;
    for (let c = await this.chunk(); c; c = await this.chunk()) {
      extra += c.length;
      this.consume(c.length);
    }
    if (extra > 0)
      throw new FormatError(`${this.where}: ${extra} bytes follow ${what} (the file is longer than its header says)`);
  }

  /** The rest of the file in one array (JSON files). */
  async readAll(): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for (let c = await this.chunk(); c; c = await this.chunk()) {
      chunks.push(c);
      this.consume(c.length);
    }
    const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    chunks.reduce((at, c) => (out.set(c, at), at + c.length), 0);
    if (this.size !== null && this.at !== this.size)
      throw new FormatError(
        `${this.where}: received ${this.at} bytes, expected ${this.size} (the transfer was cut short?)`,
      );
    return out;
  }

  /** Stops reading (the transfer is cancelled). */
  cancel(): void {
    void this.reader.cancel().catch(() => {});
  }

  /**
   * Reads a safetensors file's header (its length checked against the format's limit and the file's size before it
   * is read): a TensorFile whose tensors then come through `readInto` in offset order. A file of unknown size is
   * taken to be as long as its header says (expectEnd checks that it is).
   */
  async safetensorsHeader(): Promise<TensorFile> {
    const first8 = new Uint8Array(8);
    await this.readInto(first8, 'the 8-byte header length');
    const len = headerLength(first8, this.size, this.where);
    const prefix = new Uint8Array(8 + len);
    prefix.set(first8);
    await this.readInto(prefix.subarray(8), `the ${len}-byte header`);
    const file = new TensorFile(headerSource(prefix, this.size, this.where), this.where);
    if (this.size === null) {
      const end = Math.max(0, ...[...file.header.entries.values()].map((e) => e.end));
      this.size = file.header.dataStart + end;
      this.onProgress?.({ file: this.name, loaded: this.at, total: this.size });
    }
    return file;
  }
}

/** A streamed safetensors file's header bytes, as the source its TensorFile checks them from. */
function headerSource(prefix: Uint8Array, size: number | null, where: string): ByteSource {
  return {
    size,
    read(pos, into) {
      if (pos + into.length > prefix.length)
        throw new Error(`${where}: a streamed file's tensors are read through its stream, in order`);
      into.set(prefix.subarray(pos, pos + into.length));
    },
  };
}

export interface ModelFiles {
  /** Names the directory in messages. */
  readonly where: string;
  /** The file as a stream, or null when the directory has no such file. */
  open(name: string, onProgress?: (p: LoadProgress) => void, signal?: AbortSignal): Promise<StreamedFile | null>;
}

/** The size a response's Content-Length gives the body, when it gives it (not for a compressed transfer). */
function bodySize(res: Response): number | null {
  const length = res.headers.get('content-length');
  const encoding = res.headers.get('content-encoding');
  if (length === null || (encoding !== null && encoding !== 'identity')) return null;
  const n = Number(length);
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

function urlFiles(base: string | URL): ModelFiles {
  const href = String(base);
  const dir = new URL(href.endsWith('/') ? href : `${href}/`, globalThis.location?.href);
  return {
    where: dir.href,
    async open(name, onProgress, signal) {
      const url = new URL(name, dir);
      let res: Response;
      try {
        res = await fetch(url, { signal });
      } catch (e) {
        throw new FormatError(`${url.href}: cannot fetch (${(e as Error).message})`);
      }
      if (res.status === 404) return null;
      if (!res.ok) throw new FormatError(`${url.href}: HTTP ${res.status} ${res.statusText}`);
      const body = res.body ?? new Response(new Uint8Array(0)).body!;
      return new StreamedFile(body.getReader(), name, url.href, bodySize(res), onProgress);
    },
  };
}

/** Picked files by name; from a picked folder (webkitRelativePath 'dir/sub/x'), the shallowest file of that name. */
function pickedFiles(list: FileList | readonly File[]): ModelFiles {
  const files = Array.from(list as ArrayLike<File>);
  const depth = (f: File) => (f.webkitRelativePath || f.name).split('/').length;
  const find = (name: string) => files.filter((f) => f.name === name).sort((a, b) => depth(a) - depth(b))[0] ?? null;
  const top = files.map((f) => f.webkitRelativePath.split('/')[0]).find((d) => d) ?? 'the picked files';
  return {
    where: top,
    async open(name, onProgress) {
      const f = find(name);
      if (!f) return null;
      return new StreamedFile(f.stream().getReader(), name, f.webkitRelativePath || f.name, f.size, onProgress);
    },
  };
}

export function modelFiles(source: ModelSource): ModelFiles {
  return typeof source === 'string' || source instanceof URL ? urlFiles(source) : pickedFiles(source);
}
