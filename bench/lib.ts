// The benchmark harness every suite uses: a description of the machine, one timing rule, a table printer and the
// JSON result file (bench/results/<suite>.json). Field names of records carry their units (`gflops`, `us_per_call`,
// `gb_per_s`, `ms_median`), so a result file reads without this code.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';

import { nativeInfo, threadCount } from '../src/backend/index.js';
import { packageRoot } from '../src/backend/addon.js';
import { writeFileAtomic } from '../src/io/atomic.js';

// ---------------------------------------------------------------------------------------------------------------------
// Machine

export interface Machine {
  cpu: string;
  cores: number;
  memory_gib: number;
  node: string;
  platform: string;
  /** The environment variable as this process saw it (null: unset). */
  openblas_coretype: string | null;
  /** The kernel set OpenBLAS chose (from the addon), null without the addon. */
  blas_core: string | null;
  blas_config: string | null;
  /** Threads of the native kernels and OpenBLAS (RETNET_THREADS, else all cores). */
  threads: number;
}

/** The CPU model name from /proc/cpuinfo ('unknown' where there is none). */
export function cpuModel(cpuinfo?: string): string {
  let text = cpuinfo;
  if (text === undefined)
    try {
      text = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return 'unknown';
    }
  const line = text.split('\n').find((l) => /^model name\s*:/.test(l));
  return line ? line.slice(line.indexOf(':') + 1).trim() : 'unknown';
}

export function describeMachine(): Machine {
  const info = nativeInfo();
  return {
    cpu: cpuModel(),
    cores: availableParallelism(),
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    openblas_coretype: process.env.OPENBLAS_CORETYPE ?? null,
    blas_core: info?.blasCoreType ?? null,
    blas_config: info?.blasConfig ?? null,
    threads: threadCount(),
  };
}

/** HEAD of the repository, with '-dirty' when the working tree has uncommitted changes; null outside git. */
export function gitCommit(): string | null {
  try {
    const git = (...args: string[]) =>
      execFileSync('git', args, { cwd: packageRoot(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const head = git('rev-parse', 'HEAD');
    const dirty = git('status', '--porcelain', '--untracked-files=no') !== '';
    return dirty ? `${head}-dirty` : head;
  } catch {
    return null;
  }
}

/** CPU time counters (clock ticks) of the whole machine and of this process with its waited-for children. */
export interface CpuCounters {
  busy: number;
  total: number;
  own: number;
}

/** Reads /proc/stat and /proc/self/stat; null where they do not exist. */
export function cpuCounters(): CpuCounters | null {
  try {
    // cpu  user nice system idle iowait irq softirq steal ...
    const [user, nice, system, idle, iowait, irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]!
      .trim()
      .split(/\s+/)
      .slice(1, 9)
      .map(Number) as [number, number, number, number, number, number, number, number];
    const busy = user + nice + system + irq + softirq + steal;
    // After the command name (which may hold spaces): state is field 3, utime..cstime are fields 14..17.
    const self = readFileSync('/proc/self/stat', 'utf8');
    const f = self.slice(self.lastIndexOf(')') + 2).split(' ');
    const own = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    return { busy, total: busy + idle + iowait, own };
  } catch {
    return null;
  }
}

/**
 * The share of the machine's CPU time (0..1, all cores) that other processes used between two readings. Benchmarks
 * record it because a shared machine makes timings slower: a figure taken at a load of 0.5 is not a ceiling.
 */
export function otherLoad(before: CpuCounters | null, after: CpuCounters | null): number | null {
  if (!before || !after || after.total <= before.total) return null;
  const other = after.busy - before.busy - (after.own - before.own);
  return Math.min(1, Math.max(0, other / (after.total - before.total)));
}

// ---------------------------------------------------------------------------------------------------------------------
// Timing

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('median of no values');
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export interface TimingOptions {
  /** Untimed calls before measuring (at least 1: the last one calibrates the batch size). */
  warmup: number;
  /** Keep sampling until this much time has been spent measuring... */
  minTimeMs: number;
  /** ...and at least this many samples were taken. */
  minSamples: number;
  /** Each sample times a batch of calls lasting about this long, so that timer resolution does not matter. */
  sampleTargetMs: number;
}

export const DEFAULT_TIMING: TimingOptions = { warmup: 2, minTimeMs: 500, minSamples: 5, sampleTargetMs: 20 };

export interface Timing {
  /** Samples taken and calls per sample. */
  samples: number;
  callsPerSample: number;
  /** Per-call time: median and minimum over the samples. */
  msMedian: number;
  msMin: number;
}

/**
 * The timing rule (bench/gemm_direct.c implements the same one): `warmup` calls, the last one timed to choose a batch
 * of calls lasting about `sampleTargetMs`; then batches are timed until `minTimeMs` has passed and `minSamples` were
 * taken. Reports the per-call median and minimum. `clock` (ms) is replaceable for tests.
 */
export function measure(fn: () => void, opts: Partial<TimingOptions> = {}, clock = () => performance.now()): Timing {
  const o = { ...DEFAULT_TIMING, ...opts };
  let single = 0;
  for (let i = 0; i < Math.max(1, o.warmup); i++) {
    const t0 = clock();
    fn();
    single = clock() - t0;
  }
  const callsPerSample = Math.max(1, Math.ceil(o.sampleTargetMs / Math.max(single, 1e-6)));
  const perCall: number[] = [];
  const start = clock();
  while (perCall.length < o.minSamples || clock() - start < o.minTimeMs) {
    const t0 = clock();
    for (let i = 0; i < callsPerSample; i++) fn();
    perCall.push((clock() - t0) / callsPerSample);
  }
  return { samples: perCall.length, callsPerSample, msMedian: median(perCall), msMin: Math.min(...perCall) };
}

/** GFLOP/s of a square n x n x n GEMM (2 n^3 flops) taking `ms`. */
export function gemmGflops(n: number, ms: number): number {
  return (2 * n ** 3) / (ms * 1e6);
}

/** GB/s (1e9 bytes) moving `bytes` in `ms`. */
export function gbPerS(bytes: number, ms: number): number {
  return bytes / (ms * 1e6);
}

// ---------------------------------------------------------------------------------------------------------------------
// Tables

export interface Column {
  key: string;
  header?: string;
  /** Digits after the point for numbers (default 2). */
  digits?: number;
}

/** A plain-text table: headers, a rule, one line per row; numbers right-aligned, text left-aligned. */
export function formatTable(rows: readonly Record<string, unknown>[], columns: readonly Column[]): string {
  const cell = (v: unknown, c: Column): string =>
    v === undefined || v === null ? '-' : typeof v === 'number' ? v.toFixed(c.digits ?? 2) : String(v);
  const cells = rows.map((r) => columns.map((c) => cell(r[c.key], c)));
  const headers = columns.map((c) => c.header ?? c.key);
  const widths = headers.map((h, j) => Math.max(h.length, ...cells.map((r) => r[j]!.length)));
  const numeric = columns.map((c) => rows.some((r) => typeof r[c.key] === 'number'));
  const line = (vals: string[]) =>
    vals
      .map((v, j) => (numeric[j] ? v.padStart(widths[j]!) : v.padEnd(widths[j]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n');
}

export function printTable(title: string, rows: readonly Record<string, unknown>[], columns: readonly Column[]): void {
  process.stdout.write(`\n${title}\n${formatTable(rows, columns)}\n`);
}

// ---------------------------------------------------------------------------------------------------------------------
// Result files

/** One measurement: its parameters and figures, flat, with units in the field names. */
export type BenchRecord = Record<string, string | number | boolean | null>;

export interface ResultFile {
  suite: string;
  machine: Machine;
  commit: string | null;
  command: string;
  createdAt: string;
  records: BenchRecord[];
}

/** Throws unless every record is flat and every number finite (JSON would turn NaN and Infinity into null). */
export function checkRecords(suite: string, records: readonly BenchRecord[]): void {
  records.forEach((r, i) => {
    if (r === null || typeof r !== 'object' || Array.isArray(r))
      throw new Error(`${suite}: record ${i} must be an object of fields`);
    for (const [k, v] of Object.entries(r)) {
      const ok = v === null || ['string', 'boolean'].includes(typeof v) || (typeof v === 'number' && isFinite(v));
      if (!ok) throw new Error(`${suite}: record ${i} field '${k}' must be a finite number, string, boolean or null`);
    }
  });
}

/** The command that produced this run, as one would type it again (paths relative to the package root). */
export function commandLine(argv = process.argv, execArgv = process.execArgv): string {
  const script = argv[1] ? relative(packageRoot(), argv[1]) : '';
  return ['node', ...execArgv, script, ...argv.slice(2)].join(' ');
}

export function resultFile(
  suite: string,
  records: BenchRecord[],
  context: { machine: Machine; commit: string | null; command: string; createdAt?: Date },
): ResultFile {
  checkRecords(suite, records);
  return {
    suite,
    machine: context.machine,
    commit: context.commit,
    command: context.command,
    createdAt: (context.createdAt ?? new Date()).toISOString(),
    records,
  };
}

/** Writes bench/results/<suite>.json (atomically) and returns its path. */
export function writeResults(suite: string, records: BenchRecord[]): string {
  const file = resultFile(suite, records, { machine: describeMachine(), commit: gitCommit(), command: commandLine() });
  const dir = join(packageRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${suite}.json`);
  writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`);
  return path;
}

/**
 * Runs `suite` again in a child process (same Node flags, bench/run.ts) with the environment changed by `env`
 * (undefined unsets a variable), and returns the records it prints as one JSON array on stdout. For settings that
 * only take effect at process start, such as OPENBLAS_CORETYPE.
 */
export function childPass(suite: string, args: string[], env: Record<string, string | undefined>): BenchRecord[] {
  const childEnv = { ...process.env };
  for (const [k, v] of Object.entries(env))
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  const runner = join(packageRoot(), 'bench', 'run.ts');
  const out = execFileSync(process.execPath, [...process.execArgv, runner, suite, ...args], {
    env: childEnv,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 2 ** 20,
  });
  const records = JSON.parse(out) as BenchRecord[];
  checkRecords(suite, records);
  return records;
}
