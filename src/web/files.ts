// Where a browser reads a model directory from: a base URL (fetch) or files the user picked (an <input type=file
// webkitdirectory> FileList, or any File[]). Both stream a file's bytes and report progress as they arrive.

import { FormatError } from '../errors.js';

/** A directory URL ('/model/', 'https://host/dir') or picked files. */
export type ModelSource = string | URL | FileList | readonly File[];

export interface LoadProgress {
  /** The file being read ('model.safetensors'). */
  file: string;
  loaded: number;
  /** Its size when known (a Content-Length, a File's size). */
  total: number | null;
}

export interface ModelFiles {
  /** Names the directory in messages. */
  readonly where: string;
  /** The file's bytes, or null when the directory has no such file. */
  bytes(name: string, onProgress?: (p: LoadProgress) => void, signal?: AbortSignal): Promise<Uint8Array | null>;
}

/** Reads a stream to its end into one array (sized by `total` when known), reporting progress per chunk. */
async function drain(
  stream: ReadableStream<Uint8Array>,
  name: string,
  total: number | null,
  onProgress?: (p: LoadProgress) => void,
): Promise<Uint8Array> {
  const reader = stream.getReader();
  let out = new Uint8Array(total ?? 1 << 16);
  let loaded = 0;
  onProgress?.({ file: name, loaded, total });
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (loaded + value.length > out.length) {
      const grown = new Uint8Array(Math.max(out.length * 2, loaded + value.length));
      grown.set(out.subarray(0, loaded));
      out = grown;
    }
    out.set(value, loaded);
    loaded += value.length;
    onProgress?.({ file: name, loaded, total });
  }
  if (total !== null && loaded !== total)
    throw new FormatError(`${name}: received ${loaded} bytes, expected ${total} (the transfer was cut short?)`);
  return loaded === out.length ? out : out.slice(0, loaded);
}

function urlFiles(base: string | URL): ModelFiles {
  const href = String(base);
  const dir = new URL(href.endsWith('/') ? href : `${href}/`, globalThis.location?.href);
  return {
    where: dir.href,
    async bytes(name, onProgress, signal) {
      const url = new URL(name, dir);
      let res: Response;
      try {
        res = await fetch(url, { signal });
      } catch (e) {
        throw new FormatError(`${url.href}: cannot fetch (${(e as Error).message})`);
      }
      if (res.status === 404) return null;
      if (!res.ok) throw new FormatError(`${url.href}: HTTP ${res.status} ${res.statusText}`);
      const length = res.headers.get('content-length');
      if (!res.body) return new Uint8Array(await res.arrayBuffer());
      return drain(res.body, name, length === null ? null : Number(length), onProgress);
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
    async bytes(name, onProgress) {
      const f = find(name);
      if (!f) return null;
      return drain(f.stream(), name, f.size, onProgress);
    },
  };
}

export function modelFiles(source: ModelSource): ModelFiles {
  return typeof source === 'string' || source instanceof URL ? urlFiles(source) : pickedFiles(source);
}
