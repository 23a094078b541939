// Atomic file writes: write a temporary file beside the target, fsync it, rename it over the target, fsync the
// directory. A crash at any point leaves either the old file or the new one, never a torn one.

import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** `chunks` may be a generator: each chunk is written before the next is made, so a large file never sits in memory. */
export function writeFileAtomic(path: string, chunks: Uint8Array | string | Iterable<Uint8Array | string>): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
  const parts = typeof chunks === 'string' || chunks instanceof Uint8Array ? [chunks] : chunks;
  let fd = -1;
  try {
    fd = openSync(tmp, 'w');
    for (const c of parts) {
      const buf = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  syncDir(dirname(path));
}

/** fsync a directory so a rename in it is durable (ignored where the platform refuses). */
export function syncDir(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some filesystems do not allow fsync on directories; the rename itself is still atomic.
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
