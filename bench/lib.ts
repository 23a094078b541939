// The benchmark harness every suite uses: a description of the machine, one timing rule, a table printer and the
// JSON result file (bench/results/<suite>.json). Field names of records carry their units (`gflops`, `us_per_call`,
// `gb_per_s`, `ms_median`), so a result file reads without this code.
//
// A suite is an async function of its parsed flags, declared in bench/suites.ts (its flag table and summary),
// times with `measure` / `measureEach`, prints with `printTable` and ends with `writeResults(name, records)`. Record
// `other_load` (cpuCounters before and after, then otherLoad) beside timings: the machines are often shared, and a
// figure taken while other processes ran is not a ceiling.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, realpathSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { extname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

import { cpuBackend, cpuInfo, getBackend, threadCount } from '../src/backend/index.js';
import { lowpAddon } from '../src/backend/cpu/lowp.js';
import { packageRoot } from '../src/backend/cpu/load.js';
import { RetnetError } from '../src/errors.js';
import { writeFileAtomic } from '../src/io/atomic.js';

// ---------------------------------------------------------------------------------------------------------------------
// Machine

export interface Machine {
  cpu: string;
  cores: number;
  memory_gib: number;
  node: string;
  platform: string;
  /** The environment variables as this process saw them (null: unset). */
  openblas_coretype: string | null;
  omp_wait_policy: string | null;
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
  const info = cpuInfo();
  return {
    cpu: cpuModel(),
    cores: availableParallelism(),
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    openblas_coretype: process.env.OPENBLAS_CORETYPE ?? null,
    omp_wait_policy: process.env.OMP_WAIT_POLICY ?? null,
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

/** CPU time counters (clock ticks) of the whole machine and of this benchmark's own processes. */
export interface CpuCounters {
  busy: number;
  total: number;
  own: number;
}

/** utime + stime (+ cutime + cstime: children waited for) of a process, from /proc/PID/stat. */
function processTicks(pid: number | 'self', withChildren: boolean): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // After the command name (which may hold spaces) comes field 3; utime, stime, cutime, cstime are fields 14..17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0);
}

/**
 * Reads /proc/stat and the stat files of this process and of `helpers` (running child processes, such as the C
 * harness, whose time is not yet in this process's children's total); null where /proc does not exist.
 */
export function cpuCounters(helpers: readonly number[] = []): CpuCounters | null {
  try {
    // cpu  user nice system idle iowait irq softirq steal ...
    const [user, nice, system, idle, iowait, irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]!
      .trim()
      .split(/\s+/)
      .slice(1, 9)
      .map(Number) as [number, number, number, number, number, number, number, number];
    const busy = user + nice + system + irq + softirq + steal;
    let own = processTicks('self', true);
    for (const pid of helpers) own += processTicks(pid, false);
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
  /** Single calls before measuring; the last one sizes the samples. 0: no warm-up, one call per sample. */
  warmup: number;
  /** Keep sampling until the samples add up to this much time (all variants together)... */
  minTimeMs: number;
  /** ...and each variant has at least this many samples. */
  minSamples: number;
  /** Each sample times a batch of calls lasting about this long, so that timer resolution does not matter. */
  sampleTargetMs: number;
  /** Variants take turns of about this long: samples until their time reaches it, at least one. */
  turnMs: number;
  /**
   * Idle pause before each turn when variants run in different processes: OpenBLAS worker threads spin for a while
   * after a call (about 0.1 s), and would otherwise take cores from the next process's turn.
   */
  settleMs: number;
}

export const DEFAULT_TIMING: TimingOptions = {
  warmup: 2,
  minTimeMs: 500,
  minSamples: 5,
  sampleTargetMs: 20,
  turnMs: 0,
  settleMs: 0,
};

export interface Timing {
  /** Samples taken and calls per sample. */
  samples: number;
  callsPerSample: number;
  /** Per-call time: median and minimum over the samples. */
  msMedian: number;
  msMin: number;
}

/** Runs `calls` calls of something and returns the milliseconds they took (async where another process runs them). */
export type Batch = (calls: number) => number | Promise<number>;

const now = () => performance.now();

/**
 * A batch of calls of fn, timed with `clock` (ms). On a device that computes asynchronously (cuda) a call returns
 * once its kernels are queued, so the batch waits for the device before each clock reading: the time is the work's,
 * not the queueing's (the device is that of tensors made without one, which the suites' `--device` sets).
 */
export function batchOf(fn: () => void, clock = now): Batch {
  const device = getBackend();
  const sync = () => device.synchronize?.();
  return (calls) => {
    sync();
    const t0 = clock();
    for (let i = 0; i < calls; i++) fn();
    sync();
    return clock() - t0;
  };
}

/**
 * The timing rule. Each batch gets `warmup` single calls, the last of which sizes its samples to about
 * `sampleTargetMs` (without warm-up, a sample is one call); then the batches take turns of about `turnMs` (after
 * `settleMs` idle), until the samples add up to `minTimeMs` and each batch has `minSamples`. Taking turns means that
 * load from other processes falls on every variant alike, so ratios between them hold better on a shared machine.
 * Reports per-call median and minimum.
 */
export async function measureEach(batches: readonly Batch[], opts: Partial<TimingOptions> = {}): Promise<Timing[]> {
  const o = { ...DEFAULT_TIMING, ...opts };
  const callsPerSample: number[] = [];
  for (const batch of batches) {
    let single = Infinity;
    for (let i = 0; i < o.warmup; i++) single = await batch(1);
    callsPerSample.push(Math.max(1, Math.ceil(o.sampleTargetMs / Math.max(single, 1e-6))));
  }
  const perCall: number[][] = batches.map(() => []);
  let sampled = 0;
  while (perCall[0]!.length < o.minSamples || sampled < o.minTimeMs)
    for (const [v, batch] of batches.entries()) {
      if (o.settleMs > 0) await new Promise((resolve) => setTimeout(resolve, o.settleMs));
      let turn = 0;
      do {
        const ms = await batch(callsPerSample[v]!);
        turn += ms;
        perCall[v]!.push(ms / callsPerSample[v]!);
      } while (turn < o.turnMs);
      sampled += turn;
    }
  return perCall.map((xs, v) => ({
    samples: xs.length,
    callsPerSample: callsPerSample[v]!,
    msMedian: median(xs),
    msMin: Math.min(...xs),
  }));
}

/** The timing rule for one function; `clock` (ms) is replaceable for tests. */
export async function measure(fn: () => void, opts: Partial<TimingOptions> = {}, clock = now): Promise<Timing> {
  return (await measureEach([batchOf(fn, clock)], opts))[0]!;
}

/** GFLOP/s of a square n x n x n GEMM (2 n^3 flops) taking `ms`. */
export function gemmGflops(n: number, ms: number): number {
  return (2 * n ** 3) / (ms * 1e6);
}

/** GB/s (1e9 bytes) moving `bytes` in `ms`. */
export function gbPerS(bytes: number, ms: number): number {
  return bytes / (ms * 1e6);
}

/**
 * The read-bandwidth probe that decode bounds divide by (bench lowp, budget, peer): native/cpu/lowp.h streamRead of
 * `bytes` bytes, which reads 1 MiB parts as 8 streams side by side (as the f32 kernel reads 8 rows; one stream per
 * thread read a third less on this stop's Intel Xeon). `batch(threads)` is a Batch of reads on that many
 * threads, for measureEach to run in turns with the steps it bounds; `gbps(ms)` the rate of one read taking `ms`.
 *
 * What it reads is real, but the machine's rate moves: on this stop's 2-core AMD EPYC (cpuid family 26 model 2, a KVM
 * guest; timing lock) a 512 MiB read every ~2 s for 40 s (best of 3 each time) took 23.4-32.0 GB/s on 1 thread and
 * 32.9-57.6 on 2, in windows of a few seconds, with the bytes all ones (as here) and random read within a few % of
 * each other at every moment (so no merging of the constant pages underneath). The decode products move with it: 400
 * simulated 1.3B q4 steps (the 193 products on their own weights, 723 MB), each followed by a 2-thread read, grouped
 * by that read's rate: 25-30 GB/s -> the step's products at 26.8 GB/s (median), 30-35 -> 28.6, 35-40 -> 31.0, 40-45 ->
 * 33.3, 45-50 -> 35.3. The best read is the machine's best moment, so a bound from it is a tight one.
 */
export interface ReadProbe {
  bytes: number;
  batch(threads: number): (calls: number) => number;
  gbps(ms: number): number;
}

export function readProbe(bytes: number, suite: string): ReadProbe {
  const be = cpuBackend();
  if (!be) throw new BenchFailure(`${suite}: the read probe needs the cpu device (its addon did not load)`);
  const data = new Uint8Array(bytes).fill(1);
  const addon = lowpAddon(be.addon);
  return {
    bytes,
    batch: (threads) => (calls) => {
      const t0 = now();
      for (let i = 0; i < calls; i++) addon.streamRead(data, threads);
      return now() - t0;
    },
    gbps: (ms) => gbPerS(bytes, ms),
  };
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

/** Environment variables that change what a benchmark measures; a command line shows those that are set. */
const SETTINGS_ENV = ['RETNET_THREADS', 'OPENBLAS_CORETYPE', 'OMP_WAIT_POLICY'];

/**
 * The command that produced this run, as one would type it again (paths relative to the package root). The script
 * is named by its real path: `npx retnet` runs bin/retnet.js through a link in npm's cache.
 */
export function commandLine(argv = process.argv, execArgv = process.execArgv, env = process.env): string {
  const path = argv[1] && existsSync(argv[1]) ? realpathSync(argv[1]) : argv[1];
  const script = path ? relative(packageRoot(), path) : '';
  const settings = SETTINGS_ENV.filter((k) => env[k] !== undefined).map((k) => `${k}=${env[k]}`);
  return [...settings, 'node', ...execArgv, script, ...argv.slice(2)].join(' ');
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

let root = resolve('runs', 'bench');

/**
 * Where results, charts and BENCHMARKS.md go (as bench/results/SUITE.* and BENCHMARKS.md inside it): the suite's
 * --out folder, or the package root with --save (bench/suites.ts sets it before a suite runs).
 */
export function outputRoot(): string {
  return root;
}

export function setOutputRoot(dir: string): void {
  root = dir;
}

/** Writes bench/results/<suite>.json (atomically, under the output root) and returns its path and contents. */
export function writeResults(suite: string, records: BenchRecord[]): { path: string; file: ResultFile } {
  const file = resultFile(suite, records, { machine: describeMachine(), commit: gitCommit(), command: commandLine() });
  const dir = join(outputRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${suite}.json`);
  writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`);
  return { path, file };
}

/**
 * The results of a suite: measured now (and written), or with `report`, read back from the saved
 * bench/results/<suite>.json to draw its chart and section again without measuring (the file keeps the command,
 * commit and machine of the run that measured it). `quick` must match the saved run's.
 */
export async function suiteResults(
  suite: string,
  opts: { report: boolean; quick: boolean },
  measure: () => Promise<BenchRecord[]>,
): Promise<{ path: string; file: ResultFile }> {
  if (!opts.report) return writeResults(suite, await measure());
  const path = join(outputRoot(), 'bench', 'results', `${suite}.json`);
  let file: ResultFile;
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as ResultFile;
  } catch (e) {
    throw new BenchFailure(`${suite} --report: cannot read ${path} (${(e as Error).message.split('\n')[0]})`);
  }
  if (file.suite !== suite || !Array.isArray(file.records))
    throw new BenchFailure(`${suite} --report: ${path} holds no results of suite '${suite}'`);
  checkRecords(suite, file.records);
  const savedQuick = / --quick\b/.test(file.command);
  if (savedQuick !== opts.quick)
    throw new BenchFailure(
      `${suite} --report: ${path} comes from ${savedQuick ? 'a --quick run' : 'a full run'}; ` +
        `${savedQuick ? 'add' : 'leave out'} --quick`,
    );
  return { path, file };
}

/** A measured point that could not be completed; the suite still writes its results, then exits non-zero. */
export class BenchFailure extends RetnetError {}

/** Throws a BenchFailure listing the records whose status is 'failed'. */
export function failOnFailedRecords(suite: string, records: readonly BenchRecord[]): void {
  const failed = records.filter((r) => r.status === 'failed');
  if (failed.length > 0)
    throw new BenchFailure(
      `${suite}: ${failed.length} of ${records.length} points failed: ${failed.map((r) => r.error).join('; ')}`,
    );
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
  // The runner beside this file: bench/run.ts under tsx, dist/bench/run.js in the compiled CLI.
  const runner = fileURLToPath(new URL(`./run${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
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
