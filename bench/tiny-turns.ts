// `node --import tsx bench/tiny-turns.ts --against <checkout>[,<checkout>...] [--rounds R]`: the per-call overhead of
// tiny ops (bench gemm's overhead cases: a [1] tensor made and disposed, add, scale, a [1, 1] matmul, and the bare
// addon calls under them) of this checkout's engine and other checkouts' (e.g. built copies of older commits), all
// loaded into this one process and timed in turns (bench/lib.ts `measureEach`), R rounds with the order rotating. In
// separate processes these figures move with each process's JIT state by more than the difference between two
// engines (issue 11's closing note), so this is the before/after measurement of a change to the per-op path. Each
// checkout's sources run as they are (tsx), over its own addon build; a checkout from before the device split
// (`Backend`, the native backend) is driven through the names it had.

import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { type Batch, cpuCounters, describeMachine, measureEach, median, otherLoad, printTable } from './lib.js';

const { values } = parseArgs({
  options: {
    against: { type: 'string' },
    rounds: { type: 'string', default: '3' },
  },
});
if (!values.against) throw new Error('tiny-turns: --against <checkout>[,<checkout>...] [--rounds R]');
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`tiny-turns: --rounds must be a positive integer, got ${values.rounds}`);

/** The few engine entry points the cases use, in either checkout's names. */
interface Engine {
  name: string;
  cases: [string, () => void][];
}

type AnyFn = (...args: never[]) => unknown;
type Module = Record<string, AnyFn>;

async function load(name: string, root: string): Promise<Engine> {
  const at = (p: string) => import(pathToFileURL(resolve(root, p)).href) as Promise<Module>;
  const ops = await at('src/ops/index.ts');
  const tape = await at('src/autograd/tape.ts');
  const backends = await at('src/backend/index.ts');
  const be = (backends.getBackend as () => { name: string; addon?: unknown })();
  if (be.name !== 'cpu' && be.name !== 'native')
    throw new Error(`tiny-turns: ${root} has no native device (got ${be.name}); build its addon first`);
  const addon = be.addon as {
    binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, n: number, m: number): void;
    scale(a: Float32Array, out: Float32Array, alpha: number, n: number): void;
  };
  type T = { dispose(): void };
  const tensor = ops.tensor as unknown as (d: number[], s: number[], o: object) => T;
  const add = ops.add as unknown as (a: T, b: T) => T;
  const scale = ops.scale as unknown as (a: T, s: number) => T;
  const matmul = ops.matmul as unknown as (a: T, b: T) => T;
  const noGrad = tape.noGrad as unknown as (f: () => void) => void;
  const x = tensor([1.5], [1], { backend: be });
  const y = tensor([2.5], [1], { backend: be });
  const m = tensor([1.5], [1, 1], { backend: be });
  const [dx, dy, dout] = [new Float32Array([1.5]), new Float32Array([2.5]), new Float32Array(1)];
  // The ops run inside noGrad, as bench gemm's do (nothing is recorded).
  const op = (f: () => void) => () => noGrad(f);
  return {
    name,
    cases: [
      ['tensor([v], [1]) + dispose', op(() => tensor([1], [1], { backend: be }).dispose())],
      ['add op [1] + [1] (alloc + dispose)', op(() => add(x, y).dispose())],
      ['scale op [1] (alloc + dispose)', op(() => scale(x, 2).dispose())],
      ['matmul op [1,1] x [1,1] (alloc + dispose)', op(() => matmul(m, m).dispose())],
      ['addon.binary add, preallocated (bare call)', () => addon.binary(0, dx, dy, dout, 1, 1)],
      ['addon.scale, preallocated (bare call)', () => addon.scale(dx, dout, 2, 1)],
    ],
  };
}

const here = resolve(new URL('..', import.meta.url).pathname);
const against = values.against.split(',').filter((p) => p !== '');
const engines: Engine[] = [];
for (const [i, root] of against.entries())
  engines.push(await load(against.length === 1 ? 'against' : `against${i + 1}`, root));
engines.push(await load('this', here));

const batchOf =
  (fn: () => void): Batch =>
  (calls) => {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) fn();
    return performance.now() - t0;
  };

const timing = { warmup: 20000, minTimeMs: 800, minSamples: 15, sampleTargetMs: 10, turnMs: 20, settleMs: 0 };
const names = engines[0]!.cases.map(([what]) => what);
/** us per call, per case, engine and round (median and best of the round's samples), and the round's other load. */
const med = names.map(() => engines.map(() => [] as number[]));
const best = names.map(() => engines.map(() => [] as number[]));
const loads: number[] = [];
for (let r = 0; r < rounds; r++) {
  const order = engines.map((_, e) => (e + r) % engines.length);
  const before = cpuCounters();
  for (const [c] of names.entries()) {
    const ts = await measureEach(
      order.map((e) => batchOf(engines[e]!.cases[c]![1])),
      timing,
    );
    for (const [i, e] of order.entries()) {
      med[c]![e]!.push(ts[i]!.msMedian * 1e3);
      best[c]![e]!.push(ts[i]!.msMin * 1e3);
    }
  }
  const load = otherLoad(before, cpuCounters());
  if (load !== null) loads.push(load);
}

const m = describeMachine();
console.log(`${m.cpu}, Node ${process.version}; other_load per round: ${loads.map((l) => l.toFixed(3)).join(', ')}`);
for (const [e, engine] of engines.entries()) if (e < against.length) console.log(`${engine.name}: ${against[e]}`);
const first = engines[0]!.name;
printTable(
  `tiny-op overhead, us per call: median over ${rounds} rounds of each round's median, and the lowest sample (best)`,
  names.map((what, c) => {
    const row: Record<string, string | number> = { what };
    for (const [e, { name }] of engines.entries()) {
      row[name] = median(med[c]![e]!);
      row[`${name} (best)`] = Math.min(...best[c]![e]!);
    }
    row[`this - ${first}`] = (row.this as number) - (row[first] as number);
    row[`this - ${first} (best)`] = (row['this (best)'] as number) - (row[`${first} (best)`] as number);
    return row;
  }),
  [
    { key: 'what', header: 'case' },
    ...engines.map(({ name }) => ({ key: name, digits: 3 })),
    ...engines.map(({ name }) => ({ key: `${name} (best)`, digits: 3 })),
    { key: `this - ${first}`, digits: 3 },
    { key: `this - ${first} (best)`, digits: 3 },
  ],
);
