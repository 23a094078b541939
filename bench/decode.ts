// `retnet bench decode [--quick]`: per-token decode latency, tokens/s and decode memory against the context length,
// RetNet's recurrent form against the Transformer's KV cache, at batch 1 and 8 (the paper's Figure 6 claims).
//
// The contexts are synthetic: `syntheticState(batch, length, rng)` gives a RetNet state or a KV cache of the shape a
// prefill of `length` tokens leaves, filled with random values. A decode step's cost depends on that shape only, so a
// real prefill of 16k tokens is not needed. Every timed step decodes at exactly `length`: the positions are set back
// after each step, so the step overwrites the same cache slot instead of growing the context while it is timed.
// All lengths of a batch size and both architectures take turns sample by sample (bench/lib.ts measureEach), so
// load from other processes falls on all of them alike: the ratios and the flatness are measured side by side.
//
// Memory is the engine's tensor accounting: the decode state (state.bytes()), the extra bytes a step allocates on top
// of it (backend.memory.peak during one step), and the weights, reported separately and summed as decode memory.

import { noGrad } from '../src/autograd/tape.js';
import { getBackend } from '../src/backend/index.js';
import type { CausalLM, DecodeState } from '../src/models/lm.js';
import { type Arch, createModel } from '../src/models/registry.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { TransformerModel } from '../src/models/transformer/model.js';
import { Rng } from '../src/tensor/random.js';
import {
  type BenchRecord,
  type TimingOptions,
  batchOf,
  cpuCounters,
  failOnFailedRecords,
  measureEach,
  otherLoad,
  printTable,
  suiteResults,
} from './lib.js';
import { markdownTable, sectionMarkdown, updateBenchmarksMd, writePlot } from './report.js';

/** The model of the decode and batch suites: the `base` preset with a BPE-sized vocabulary. */
export const DECODE_PRESET = 'base';
export const DECODE_VOCAB = 4096;

const MIB = 2 ** 20;

export interface DecodeModels {
  retnet: RetNetModel;
  transformer: TransformerModel;
}

/** RetNet and its parameter-matched Transformer of one preset (float32, native backend when built). */
export function decodeModels(preset: string, vocabSize: number): DecodeModels {
  return {
    retnet: createModel('retnet', preset, { vocabSize }, { seed: 1 }) as RetNetModel,
    transformer: createModel('transformer', preset, { vocabSize }, { seed: 1 }) as TransformerModel,
  };
}

export function disposeModels(m: DecodeModels): void {
  m.retnet.dispose();
  m.transformer.dispose();
}

/** Bytes of a model's parameter storage. */
export function weightBytes(model: CausalLM): number {
  return model.parameters().reduce((n, t) => n + t.storage.byteLength, 0);
}

/** One decode step at exactly the state's current positions (set back afterwards); returns nothing. */
export function stepInPlace(model: CausalLM, state: DecodeState & { positions: number[] }, tokens: number[]): void {
  const positions = state.positions;
  model.step(tokens, state).dispose();
  state.positions = positions;
}

/** Bytes a step allocates on top of what is live before it (the state and weights are live already). */
export function stepWorkspace(model: CausalLM, state: DecodeState & { positions: number[] }, tokens: number[]): number {
  const memory = getBackend().memory;
  const before = memory.current;
  memory.resetPeak();
  stepInPlace(model, state, tokens);
  return memory.peak - before;
}

export const FORM: Record<Arch, string> = { retnet: 'recurrent', transformer: 'kv-cache' };

export interface DecodePoint {
  length: number;
  batch: number;
}

/**
 * Measures (length, batch) points for both architectures, all of them taking turns in one measurement (so the
 * flatness across lengths and the ratios between architectures are measured side by side), and returns one record
 * per architecture and point; the Transformer's carry their ratios to RetNet. When building the states or
 * measuring throws, every record of the call is 'failed'.
 */
export async function measureDecodePoints(
  models: DecodeModels,
  preset: string,
  points: readonly DecodePoint[],
  timing: Partial<TimingOptions>,
): Promise<BenchRecord[]> {
  const archs = [models.retnet, models.transformer] as const;
  const cases = points.flatMap((p) => archs.map((model) => ({ ...p, model })));
  const base = (c: (typeof cases)[number]): BenchRecord => ({
    model: preset,
    arch: c.model.arch,
    form: FORM[c.model.arch],
    parameters: c.model.parameterCount(),
    length: c.length,
    batch: c.batch,
    context: 'synthetic',
  });
  const states: (DecodeState & { positions: number[] })[] = [];
  try {
    const rng = new Rng(7);
    for (const c of cases) states.push(noGrad(() => c.model.syntheticState(c.batch, c.length, rng)));
    const tokens = cases.map((c) => Array.from({ length: c.batch }, (_, i) => (i * 37) % c.model.vocabSize));
    const workspace = cases.map((c, i) => stepWorkspace(c.model, states[i]!, tokens[i]!));
    const before = cpuCounters();
    const timings = await measureEach(
      cases.map((c, i) => batchOf(() => stepInPlace(c.model, states[i]!, tokens[i]!))),
      timing,
    );
    const load = otherLoad(before, cpuCounters());
    const records = cases.map((c, i): BenchRecord => {
      const t = timings[i]!;
      const state = states[i]!.bytes();
      const weights = weightBytes(c.model);
      const memory = state + workspace[i]! + weights;
      return {
        ...base(c),
        status: 'ok',
        ms_per_token: t.msMedian,
        ms_per_token_min: t.msMin,
        tokens_per_s: (c.batch * 1000) / t.msMedian,
        state_bytes: state,
        step_workspace_bytes: workspace[i]!,
        weight_bytes: weights,
        decode_memory_bytes: memory,
        state_mib: state / MIB,
        decode_memory_mib: memory / MIB,
        samples: t.samples,
        other_load: load,
      };
    });
    // Cases alternate RetNet, Transformer for each point.
    for (let i = 0; i < records.length; i += 2) {
      const [r, tr] = [records[i]!, records[i + 1]!];
      tr.slowdown_vs_retnet = (tr.ms_per_token as number) / (r.ms_per_token as number);
      tr.slowdown_vs_retnet_best = (tr.ms_per_token_min as number) / (r.ms_per_token_min as number);
      tr.memory_vs_retnet = (tr.decode_memory_bytes as number) / (r.decode_memory_bytes as number);
      tr.state_vs_retnet = (tr.state_bytes as number) / (r.state_bytes as number);
    }
    return records;
  } catch (e) {
    return cases.map((c) => ({ ...base(c), status: 'failed', error: (e as Error).message }));
  } finally {
    for (const s of states) s.dispose();
  }
}

function progress(suite: string, msg: string): void {
  process.stderr.write(`${suite}: ${msg}\n`);
}

/** Goal figures of the paper (6.7B model, 8k context). */
const GOAL_FLAT = 0.1;
const GOAL_SLOWDOWN = 8.4;
const GOAL_MEMORY = 1.7;
const GOAL_LENGTH = 8192;

/**
 * The largest relative deviation of RetNet's per-token latency (`key`: the median or the best step time) from its
 * mean over the lengths, at one batch size.
 */
export function flatness(
  records: readonly BenchRecord[],
  batch: number,
  key: 'ms_per_token' | 'ms_per_token_min' = 'ms_per_token',
): number | null {
  const ms = records
    .filter((r) => r.arch === 'retnet' && r.batch === batch && r.status === 'ok')
    .map((r) => r[key] as number);
  if (ms.length < 2) return null;
  const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
  return Math.max(...ms.map((x) => Math.abs(x / mean - 1)));
}

const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');

/**
 * The goals, judged on the median step times and on the best ones: on a machine shared with other processes the
 * median carries their load (which comes in bursts that can fall on some lengths more than others), while the best
 * time of many samples is what a step costs when it gets the cores.
 */
function findings(records: BenchRecord[], batches: number[]): string[] {
  const out: string[] = [];
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  for (const b of batches) {
    const f = flatness(records, b);
    const fBest = flatness(records, b, 'ms_per_token_min');
    if (f !== null && fBest !== null)
      out.push(
        `RetNet latency flat within ±${pct(GOAL_FLAT)} across lengths at batch ${b}: largest deviation from the ` +
          `mean ${pct(f)} from median times (${verdict(f <= GOAL_FLAT)}), ${pct(fBest)} from best times ` +
          `(${verdict(fBest <= GOAL_FLAT)})`,
      );
    const at = records.find((r) => r.arch === 'transformer' && r.batch === b && r.length === GOAL_LENGTH);
    const ret = records.find((r) => r.arch === 'retnet' && r.batch === b && r.length === GOAL_LENGTH);
    if (at && ret && at.status === 'ok' && ret.status === 'ok') {
      const slow = at.slowdown_vs_retnet as number;
      const slowBest = at.slowdown_vs_retnet_best as number;
      const mem = at.memory_vs_retnet as number;
      // A step reads every weight once and the whole state: the ratio of bytes read is what a memory-bound step
      // costs, the yardstick for the measured slowdown.
      const read = (r: BenchRecord) => (r.weight_bytes as number) + (r.state_bytes as number);
      out.push(
        `at ${GOAL_LENGTH} tokens, batch ${b}: the Transformer is ${slow.toFixed(2)}× slower per token from ` +
          `median times, ${slowBest.toFixed(2)}× from best times (goal ≥ ${GOAL_SLOWDOWN}×: ` +
          `${verdict(slow >= GOAL_SLOWDOWN)}, ${verdict(slowBest >= GOAL_SLOWDOWN)}) and needs ${pct(mem - 1)} more ` +
          `decode memory (goal ≥ ${pct(GOAL_MEMORY - 1)}: ${verdict(mem >= GOAL_MEMORY)}); a step reads weights + ` +
          `state: ${(read(at) / MIB).toFixed(0)} MiB against ${(read(ret) / MIB).toFixed(0)} MiB ` +
          `(${(read(at) / read(ret)).toFixed(2)}×)`,
      );
    }
  }
  return out;
}

const COLUMNS = [
  { key: 'arch' },
  { key: 'batch', digits: 0 },
  { key: 'length', digits: 0 },
  { key: 'ms_per_token', header: 'ms/token', digits: 2 },
  { key: 'ms_per_token_min', header: 'ms/token (best)', digits: 2 },
  { key: 'tokens_per_s', header: 'tokens/s', digits: 1 },
  { key: 'state_mib', header: 'state MiB', digits: 2 },
  { key: 'decode_memory_mib', header: 'decode memory MiB', digits: 1 },
  { key: 'slowdown_vs_retnet', header: 'slowdown vs RetNet', digits: 2 },
  { key: 'slowdown_vs_retnet_best', header: 'slowdown (best times)', digits: 2 },
  { key: 'memory_vs_retnet', header: 'memory vs RetNet', digits: 2 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export const decodeSeries = (r: BenchRecord) => `${r.arch} B=${r.batch}`;

export async function decodeSuite(values: { quick: boolean; report: boolean }): Promise<void> {
  const quick = values.quick;
  const lengths = quick ? [512, 2048] : [512, 1024, 2048, 4096, 8192, 16384];
  const batches = [1, 8];
  const timing: Partial<TimingOptions> = quick
    ? { warmup: 2, minTimeMs: 1000, minSamples: 3, sampleTargetMs: 30 }
    : { warmup: 3, minTimeMs: 30000, minSamples: 9, sampleTargetMs: 60 };
  const { path, file } = await suiteResults('decode', { report: values.report, quick }, async () => {
    const models = decodeModels(DECODE_PRESET, DECODE_VOCAB);
    const records: BenchRecord[] = [];
    try {
      for (const batch of batches) {
        progress('decode', `batch ${batch}, contexts ${lengths.join(', ')} in turns`);
        const points = lengths.map((length) => ({ length, batch }));
        records.push(...(await measureDecodePoints(models, DECODE_PRESET, points, timing)));
      }
    } finally {
      disposeModels(models);
    }
    return records;
  });
  const records = file.records;
  printTable(`Decode per token, ${DECODE_PRESET} preset, float32, synthetic contexts`, records, COLUMNS);
  const goals = findings(records, batches);
  for (const g of goals) process.stdout.write(`${g}\n`);
  const ok = records.filter((r) => r.status === 'ok');
  const plot = await writePlot(
    'decode',
    `Decoding one token: RetNet recurrent vs Transformer KV cache (${DECODE_PRESET} preset, float32, CPU)`,
    [
      {
        title: 'latency per token (ms)',
        records: ok,
        x: { field: 'length', title: 'context length (tokens)', log: true },
        y: { field: 'ms_per_token', title: 'ms per token', log: true },
        series: decodeSeries,
      },
      {
        title: 'throughput (tokens/s)',
        records: ok,
        x: { field: 'length', title: 'context length (tokens)', log: true },
        y: { field: 'tokens_per_s', title: 'tokens/s', log: true },
        series: decodeSeries,
      },
      {
        title: 'decode memory: weights + state + step workspace (MiB)',
        records: ok,
        x: { field: 'length', title: 'context length (tokens)', log: true },
        y: { field: 'decode_memory_mib', title: 'MiB', log: true },
        series: decodeSeries,
      },
    ],
    3,
  );
  const params = ok.map((r) => `${r.arch} ${((r.parameters as number) / 1e6).toFixed(1)}M`);
  updateBenchmarksMd(
    'decode',
    sectionMarkdown({
      title: 'Decoding: latency, throughput and memory against context length',
      intro:
        `Model: the \`${DECODE_PRESET}\` preset (d = 512, 6 layers, RetNet value and FFN width 1024, 4 heads; the ` +
        `Transformer parameter-matched: ${[...new Set(params)].join(', ')} parameters, vocabulary ${DECODE_VOCAB}), ` +
        'float32 on the native backend. One decode step per timed call; ms/token is the median step time (each ' +
        'row of the batch gets one token per step), tokens/s = batch / step time. Contexts are **synthetic**: the ' +
        'RetNet state or KV cache of a given length is filled with random values (the cost of a step depends on its ' +
        'shape only), and every step decodes at exactly that length. Decode memory = weights + decode state + the ' +
        "step's workspace, from the engine's tensor accounting; the state alone is listed too. All lengths of a " +
        'batch size and both architectures take turns sample by sample, so the ratios and the flatness are ' +
        'measured side by side. Goals are judged on median step times and on best (minimum) ones: on a shared ' +
        "machine the median carries the other processes' load, the best time is what a step costs with the core.",
      file,
      table: markdownTable(records, COLUMNS),
      findings: goals,
      plot,
    }),
  );
  process.stdout.write(`\nwrote ${path}, ${plot.png}, ${plot.svg} and the decode section of BENCHMARKS.md\n`);
  failOnFailedRecords('decode', records);
}
