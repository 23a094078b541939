// Reading training text: a text file, a directory of files (recursively; *.jsonl files as JSONL), a JSONL file with
// a text field, or the built-in Brown corpus. Text is yielded as segments of whole lines (a few KiB each), the unit of
// the train/validation split. Bad data is never mangled: binary files, invalid UTF-8, control characters, empty
// files and JSONL lines without the text field are reported with file and line, then skipped or rejected.

import { type Stats, closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';

import { RetnetError } from '../errors.js';
import { brownFiles, brownText } from './brown.js';

/** Data that cannot be used as it is: the message lists each problem with file and line. */
export class DataError extends RetnetError {}

export interface DataProblem {
  file: string;
  /** 1-based line number. */
  line: number;
  message: string;
}

export interface SourceOptions {
  /** The field of a JSONL record holding the text. */
  jsonlField: string;
}

/** A run of whole lines of one document. */
export interface Segment {
  text: string;
  /** The segment ends its document (the end-of-text token follows it). */
  endsDocument: boolean;
}

/** Segments are cut at the first line end after this many characters. */
export const SEGMENT_CHARS = 4096;

/** Groups lines into segments of about SEGMENT_CHARS characters. */
class Segmenter {
  private lines: string[] = [];
  private length = 0;

  /** Adds a line (with its newline); returns a full segment when one is ready. */
  push(line: string): Segment | null {
    this.lines.push(line);
    this.length += line.length;
    return this.length >= SEGMENT_CHARS ? this.take(false) : null;
  }

  /** The rest of the document. */
  finish(): Segment | null {
    return this.take(true);
  }

  private take(endsDocument: boolean): Segment | null {
    if (this.lines.length === 0) return null;
    const text = this.lines.join('');
    this.lines = [];
    this.length = 0;
    return { text, endsDocument };
  }
}

/** Splits text after each newline, keeping the newlines. */
function splitLines(text: string): string[] {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/** A closing segment that marks the end of the document, even when the last line already filled a segment. */
function* documentSegments(lines: Iterable<string>): Generator<Segment> {
  const seg = new Segmenter();
  let pending: Segment | null = null;
  for (const line of lines) {
    const s = seg.push(line);
    if (s) {
      if (pending) yield pending;
      pending = s;
    }
  }
  const rest = seg.finish();
  if (rest) {
    if (pending) yield pending;
    pending = rest;
  }
  if (pending) yield { ...pending, endsDocument: true };
}

// Control characters other than tab, newline, vertical tab, form feed and carriage return mark binary junk.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000e-\u001f\u007f]/;

/** Raw lines of a file (bytes, newline included), read in blocks so a file never has to fit in memory. */
function* rawLines(path: string): Generator<Buffer> {
  const fd = openSync(path, 'r');
  try {
    const block = Buffer.alloc(1 << 20);
    let carry = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, block, 0, block.length, null);
      if (n === 0) break;
      let buf = carry.length > 0 ? Buffer.concat([carry, block.subarray(0, n)]) : Buffer.from(block.subarray(0, n));
      let start = 0;
      for (let nl = buf.indexOf(10, start); nl >= 0; nl = buf.indexOf(10, start)) {
        yield buf.subarray(start, nl + 1);
        start = nl + 1;
      }
      buf = buf.subarray(start);
      carry = buf;
    }
    if (carry.length > 0) yield carry;
  } finally {
    closeSync(fd);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The lines of a text file as strings, reporting (and leaving out) lines that are not clean UTF-8 text. */
function* checkedLines(path: string, report: (p: DataProblem) => void): Generator<{ line: string; number: number }> {
  let number = 0;
  for (const raw of rawLines(path)) {
    number++;
    if (raw.includes(0)) {
      report({ file: path, line: number, message: 'binary data (NUL byte); the rest of the file is skipped' });
      return;
    }
    let line: string;
    try {
      line = utf8.decode(raw);
    } catch {
      report({ file: path, line: number, message: 'invalid UTF-8' });
      continue;
    }
    if (number === 1 && line.startsWith('\ufeff')) line = line.slice(1); // byte-order mark
    const control = CONTROL.exec(line);
    if (control) {
      const code = control[0].charCodeAt(0).toString(16).padStart(4, '0');
      report({ file: path, line: number, message: `control character U+${code} (binary data?)` });
      continue;
    }
    yield { line, number };
  }
}

function* textFileSegments(path: string, report: (p: DataProblem) => void): Generator<Segment> {
  let lines = 0;
  let content = false;
  // Blank lines are held back until text follows, so a file of whitespace yields nothing and is reported empty.
  function* clean(): Generator<string> {
    let blank: string[] = [];
    for (const { line, number } of checkedLines(path, report)) {
      lines = number;
      if (!content && line.trim() === '') {
        blank.push(line);
        continue;
      }
      content = true;
      yield* blank;
      blank = [];
      yield line;
    }
  }
  yield* documentSegments(clean());
  if (!content) report({ file: path, line: Math.max(lines, 1), message: 'no text (empty file)' });
}

function* jsonlSegments(path: string, opts: SourceOptions, report: (p: DataProblem) => void): Generator<Segment> {
  for (const { line, number } of checkedLines(path, report)) {
    if (line.trim() === '') continue;
    const where = { file: path, line: number };
    let record: unknown;
    try {
      record = JSON.parse(line.trimEnd());
    } catch (e) {
      report({ ...where, message: `not valid JSON (${(e as Error).message})` });
      continue;
    }
    if (record === null || typeof record !== 'object' || Array.isArray(record)) {
      report({ ...where, message: 'expected a JSON object' });
      continue;
    }
    const text = (record as Record<string, unknown>)[opts.jsonlField];
    if (text === undefined) {
      report({ ...where, message: `no "${opts.jsonlField}" field` });
      continue;
    }
    if (typeof text !== 'string') {
      report({ ...where, message: `"${opts.jsonlField}" is ${typeof text}, expected a string` });
      continue;
    }
    if (text.trim() === '') {
      report({ ...where, message: `"${opts.jsonlField}" is empty` });
      continue;
    }
    const control = CONTROL.exec(text);
    if (control) {
      report({ ...where, message: `control character U+${control[0].charCodeAt(0).toString(16).padStart(4, '0')}` });
      continue;
    }
    yield* documentSegments(splitLines(text));
  }
}

/** What a non-regular, non-directory file is, for messages. */
function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** stat that follows symbolic links, with dangling links and loops named as such. */
function statFollowing(path: string): Stats {
  try {
    return statSync(path);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ELOOP') throw new DataError(`${path}: a symbolic link loop; remove or fix the link`);
    if (code === 'ENOENT' && lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink())
      throw new DataError(
        `${path}: a dangling symbolic link (its target ${readlinkSync(path)} is missing); remove or fix it`,
      );
    throw e;
  }
}

/**
 * Every regular file under dir, hidden ones excepted, in sorted order. Symbolic links are followed; a directory
 * reached twice (a link back up the tree) is a loop and an error, as are dangling links and files that are not regular
 * (FIFOs, devices, sockets: reading one could block forever or never end).
 */
function walk(dir: string, seen = new Set<string>()): string[] {
  const dirStat = statFollowing(dir);
  const id = `${dirStat.dev}:${dirStat.ino}`;
  if (seen.has(id))
    throw new DataError(`${dir}: a symbolic link loop (this directory is already being read); remove the link`);
  seen.add(id);
  const out: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    if (entry.startsWith('.')) continue;
    const path = join(dir, entry);
    const st = statFollowing(path);
    if (st.isDirectory()) out.push(...walk(path, seen));
    else if (st.isFile()) out.push(path);
    else throw new DataError(`${path}: ${kindOf(st)}, not a regular file; remove it from the data directory`);
  }
  seen.delete(id);
  return out;
}

/** The files a data source reads, in order ('brown' is the built-in corpus). */
export function sourceFiles(source: string): string[] {
  if (source === 'brown') return brownFiles();
  if (lstatSync(source, { throwIfNoEntry: false }) === undefined)
    throw new DataError(`${source}: no such file or directory (expected a text file, a directory, JSONL or 'brown')`);
  const st = statFollowing(source);
  if (st.isDirectory()) {
    const files = walk(source);
    if (files.length === 0) throw new DataError(`${source}: the directory holds no files`);
    return files;
  }
  if (!st.isFile())
    throw new DataError(`${source}: ${kindOf(st)}; --data takes a regular file, a directory of files, or 'brown'`);
  return [source];
}

const isJsonl = (path: string) => extname(path).toLowerCase() === '.jsonl';

/**
 * The segments of a data source in a fixed order. Problems go to `report` as they are found; the caller decides
 * whether they reject the data or are skipped.
 */
export function* readSegments(
  source: string,
  opts: SourceOptions,
  report: (p: DataProblem) => void,
): Generator<Segment> {
  const files = sourceFiles(source);
  for (const path of files) {
    if (source === 'brown') yield* documentSegments(splitLines(brownText(path)));
    else if (isJsonl(path)) yield* jsonlSegments(path, opts, report);
    else yield* textFileSegments(path, report);
  }
}

/** "file:line: message" lines for up to `limit` problems, and how many more there were. */
export function formatProblems(problems: readonly DataProblem[], limit = 10): string {
  const lines = problems.slice(0, limit).map((p) => `  ${p.file}:${p.line}: ${p.message}`);
  if (problems.length > limit) lines.push(`  ... and ${problems.length - limit} more`);
  return lines.join('\n');
}
