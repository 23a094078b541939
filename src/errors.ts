// Error classes: each names what went wrong and what was expected, so a user can act on the message.

export class RetnetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** An op received tensors whose shapes do not fit together. */
export class ShapeError extends RetnetError {}

/** An op received a tensor of a dtype it does not accept, or a backend cannot hold that dtype. */
export class DTypeError extends RetnetError {}

/** A tensor was used after `dispose()`. */
export class DisposedError extends RetnetError {}

/** Tensors of different backends were mixed, or a backend is unavailable. */
export class BackendError extends RetnetError {}

/** A configuration field is missing or invalid. */
export class ConfigError extends RetnetError {}

/** A checkpoint, safetensors file or other input file is malformed or does not match the model. */
export class FormatError extends RetnetError {}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** What to do about a filesystem error, by its code. */
const SYSTEM_ERROR_ADVICE: Record<string, string> = {
  ENOSPC: 'no space left on the device: free some space or choose another location',
  EDQUOT: 'disk quota exceeded: free some space or choose another location',
  EROFS: 'the filesystem is read-only: choose a writable location',
  EACCES: 'permission denied: check the permissions or choose another location',
  EPERM: 'operation not permitted: check the permissions or choose another location',
  ENOTDIR: 'a part of this path is a file, not a directory: choose another path',
  EISDIR: 'this path is a directory, where a file was expected',
  ENOENT: 'no such file or directory (a dangling symbolic link?)',
  ELOOP: 'too many levels of symbolic links (a symlink loop?)',
  EEXIST: 'the path already exists',
  EMFILE: 'too many open files: raise the limit (ulimit -n) or close other programs',
  ENFILE: 'too many open files in the system',
  EIO: 'an input/output error from the device',
  ENAMETOOLONG: 'the path is too long',
};

/**
 * A one-line description of a Node.js filesystem error (one with a `code` such as ENOSPC and usually a `path`), or
 * null for any other error. The CLI prints it instead of a stack trace.
 */
export function describeSystemError(e: unknown): string | null {
  if (!(e instanceof Error)) return null;
  const { code, path, dest } = e as Error & { code?: unknown; path?: unknown; dest?: unknown };
  if (typeof code !== 'string' || !(code in SYSTEM_ERROR_ADVICE)) return null;
  const where = typeof path === 'string' ? `${path}${typeof dest === 'string' ? ` -> ${dest}` : ''}: ` : '';
  return `${where}${SYSTEM_ERROR_ADVICE[code]} (${code})`;
}
