// `retnet bench train [--quick]`: one training step (forward, cross-entropy, backward) against the sequence length,
// for RetNet's parallel and chunkwise forms and the parameter-matched Transformer with naive and memory-efficient
// (flash) attention: tokens/s, peak tensor memory, and model FLOPs utilisation against the GEMM ceiling measured in
// the same run (the paper's Table 2 / Figure 5 claims).
//
// At each length the variants and a 2048³ sgemm through our matmul op take turns sample by sample (bench/lib.ts
// measureEach), so load from other processes falls on all of them alike. Peak memory is the engine's tensor
// accounting over one step (weights, gradients and activations). A variant whose peak at the next length, fitted as
// a·T + b·T² to its last two measured peaks (see predictPeak), would pass MEMORY_LIMIT is not run there: it is
// recorded as skipped, with the prediction.
//
// FLOPs per trained token (trainFlopsPerToken) are counted analytically for the algorithm that runs: 6·N_matmul
// (the weight matrices every token goes through, the LM head included, the embedding lookup not: 2 forward, 4
// backward) plus 3× the token mixer's forward FLOPs per layer, counted over the causal triangle:
//   parallel retention      T·(d + dv)                  (q·k over K and score·v over V for the T/2 earlier positions)
//   chunkwise retention     C·(d + dv) + 4·d·dv/H       (the same inside a chunk of C, plus q·S and the state update)
//   attention (either)      T·2d
// MFU = FLOPs per token × tokens/s ÷ the sgemm GFLOP/s of the same samples. Elementwise work is not counted.

import { backward, noGrad } from '../src/autograd/tape.js';
import { getBackend } from '../src/backend/index.js';
import { matmul } from '../src/ops/index.js';
import type { CausalLM } from '../src/models/lm.js';
import { createModel } from '../src/models/registry.js';
import type { RetNetConfig } from '../src/models/retnet/config.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import type { TransformerConfig } from '../src/models/transformer/config.js';
import { TransformerModel } from '../src/models/transformer/model.js';
import { crossEntropy } from '../src/ops/nn.js';
import { tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import {
  type BenchRecord,
  type Column,
  batchOf,
  cpuCounters,
  failOnFailedRecords,
  gemmGflops,
  measureEach,
  otherLoad,
  printTable,
  suiteResults,
} from './lib.js';
import { markdownTable, sectionMarkdown, updateBenchmarksMd, writePlot } from './report.js';

const MIB = 2 ** 20;
/** The default skip limit of step memory (the machine has 24 GiB and is shared). */
export const MEMORY_LIMIT = 8 * 2 ** 30;

// ---------------------------------------------------------------------------------------------------------------------
// FLOP counting

export type Variant = 'retnet-parallel' | 'retnet-chunkwise' | 'transformer-naive' | 'transformer-flash';
export const VARIANTS: readonly Variant[] = [
  'retnet-parallel',
  'retnet-chunkwise',
  'transformer-naive',
  'transformer-flash',
];

/** Weights of the matrices each token is multiplied by: the blocks' projections and FFN, and the LM head. */
export function matmulParameters(arch: 'retnet', c: RetNetConfig): number;
export function matmulParameters(arch: 'transformer', c: TransformerConfig): number;
export function matmulParameters(arch: 'retnet' | 'transformer', c: RetNetConfig | TransformerConfig): number {
  const d = c.embedDim;
  const head = c.vocabSize * d;
  if (arch === 'transformer') return c.layers * (4 * d * d + 3 * d * c.ffnDim) + head;
  const r = c as RetNetConfig;
  return r.layers * (2 * d * d + 3 * d * r.valueDim + (r.glu ? 3 : 2) * d * r.ffnDim) + head;
}

/** Forward FLOPs of one layer's token mixer per token at length T (see the file comment). */
export function mixerFlopsPerToken(variant: Variant, c: RetNetConfig | TransformerConfig, T: number, C = T): number {
  const d = c.embedDim;
  switch (variant) {
    case 'retnet-parallel':
      return T * (d + (c as RetNetConfig).valueDim);
    case 'retnet-chunkwise': {
      const dv = (c as RetNetConfig).valueDim;
      return Math.min(C, T) * (d + dv) + (4 * d * dv) / c.heads;
    }
    case 'transformer-naive':
    case 'transformer-flash':
      return T * 2 * d;
  }
}

/** FLOPs of a training step (forward + backward) per token at length T. */
export function trainFlopsPerToken(variant: Variant, c: RetNetConfig | TransformerConfig, T: number, C = T): number {
  const n = variant.startsWith('retnet')
    ? matmulParameters('retnet', c as RetNetConfig)
    : matmulParameters('transformer', c as TransformerConfig);
  return 6 * n + 3 * c.layers * mixerFlopsPerToken(variant, c, T, C);
}

/**
 * The peak a variant would reach at length T, from its peaks at the two previous lengths: fitted as a·T + b·T² (the
 * linear part: activations; the quadratic part: T×T score matrices), or, where the two points grow more slowly than
 * that allows (b < 0: a constant part such as the gradients dominates), along the line through them. Null without
 * two points.
 */
export function predictPeak(points: readonly { length: number; peak: number }[], T: number): number | null {
  if (points.length < 2) return null;
  const [p, q] = points.slice(-2) as [{ length: number; peak: number }, { length: number; peak: number }];
  // Solve a·t + b·t² = peak at both lengths.
  const det = p.length * q.length ** 2 - q.length * p.length ** 2;
  const a = (p.peak * q.length ** 2 - q.peak * p.length ** 2) / det;
  const b = (p.length * q.peak - q.length * p.peak) / det;
  if (b >= 0) return a * T + b * T * T;
  return q.peak + ((q.peak - p.peak) / (q.length - p.length)) * (T - q.length);
}

// ---------------------------------------------------------------------------------------------------------------------
// Measurement

export interface TrainSettings {
  preset: string;
  layers: number;
  vocab: number;
  chunkSize: number;
  lengths: number[];
  batch: number;
  gemmN: number;
  samples: number;
  /** Lengths whose predicted step memory (above what is live) passes this many bytes are skipped. */
  memoryLimit: number;
}

function settings(quick: boolean): TrainSettings {
  return quick
    ? {
        preset: 'small',
        layers: 2,
        vocab: 4096,
        chunkSize: 64,
        lengths: [256, 512],
        batch: 1,
        gemmN: 1024,
        samples: 2,
        memoryLimit: MEMORY_LIMIT,
      }
    : {
        preset: 'base',
        layers: 12,
        vocab: 4096,
        chunkSize: 64,
        lengths: [512, 1024, 2048, 4096, 8192],
        batch: 1,
        gemmN: 2048,
        samples: 2,
        memoryLimit: MEMORY_LIMIT,
      };
}

interface Models {
  retnet: RetNetModel;
  transformer: TransformerModel;
}

/** The forward pass of a variant: ids [B, T] -> logits [B, T, V]. */
function forwardOf(m: Models, variant: Variant, chunkSize: number): (ids: Tensor) => Tensor {
  switch (variant) {
    case 'retnet-parallel':
      return (ids) => m.retnet.forward(ids, { form: 'parallel' });
    case 'retnet-chunkwise':
      return (ids) => m.retnet.forward(ids, { form: 'chunkwise', chunkSize });
    case 'transformer-naive':
      return (ids) => m.transformer.forward(ids, { attention: 'naive' });
    case 'transformer-flash':
      return (ids) => m.transformer.forward(ids, { attention: 'flash' });
  }
}

const modelOf = (m: Models, v: Variant): CausalLM => (v.startsWith('retnet') ? m.retnet : m.transformer);

/** One training step without the optimizer: loss, backward, gradients dropped. */
export function trainStep(model: CausalLM, forward: (ids: Tensor) => Tensor, ids: Tensor, targets: Tensor): void {
  tidy(() => backward(crossEntropy(forward(ids), targets)));
  model.zeroGrad();
}

/** Peak tensor bytes over one step (everything live included: weights of both models, inputs). */
function stepPeak(step: () => void): number {
  const memory = getBackend().memory;
  memory.resetPeak();
  step();
  return memory.peak;
}

function progress(msg: string): void {
  process.stderr.write(`train: ${msg}\n`);
}

export async function measureTrain(s: TrainSettings): Promise<BenchRecord[]> {
  const be = getBackend();
  const models: Models = {
    retnet: createModel('retnet', s.preset, { vocabSize: s.vocab, layers: s.layers }, { seed: 1 }) as RetNetModel,
    transformer: createModel(
      'transformer',
      s.preset,
      { vocabSize: s.vocab, layers: s.layers },
      { seed: 1 },
    ) as TransformerModel,
  };
  const weights = (m: CausalLM) => m.parameters().reduce((n, t) => n + t.storage.byteLength, 0);
  const a = be.zeros([s.gemmN, s.gemmN], 'float32');
  const b = be.zeros([s.gemmN, s.gemmN], 'float32');
  const records: BenchRecord[] = [];
  const peaks = new Map<Variant, { length: number; peak: number }[]>(VARIANTS.map((v) => [v, []]));
  const given = new Set<Variant>(); // variants skipped or failed at a shorter length
  const gemm = () => noGrad(() => matmul(a, b)).dispose();
  try {
    gemm();
    for (const T of s.lengths) {
      const B = s.batch;
      const idsData = Array.from({ length: B * T }, (_, i) => (i * 7919) % s.vocab);
      const ids = be.fromData(idsData, [B, T], 'int32');
      const targets = be.fromData(
        idsData.map((x) => (x + 1) % s.vocab),
        [B, T],
        'int32',
      );
      const running: { variant: Variant; step: () => void; record: BenchRecord }[] = [];
      for (const variant of VARIANTS) {
        const model = modelOf(models, variant);
        const config = (model as RetNetModel | TransformerModel).config;
        const record: BenchRecord = {
          model: `${s.preset} (${s.layers} layers)`,
          arch: model.arch,
          form: variant.slice(variant.indexOf('-') + 1),
          variant,
          parameters: model.parameterCount(),
          length: T,
          batch: B,
          chunk_size: variant === 'retnet-chunkwise' ? s.chunkSize : null,
          train_flops_per_token: trainFlopsPerToken(variant, config, T, s.chunkSize),
          weight_bytes: weights(model),
        };
        if (given.has(variant)) {
          records.push({ ...record, status: 'skipped', reason: 'skipped or failed at a shorter length' });
          continue;
        }
        const predicted = predictPeak(peaks.get(variant)!, T);
        if (predicted !== null && predicted > s.memoryLimit) {
          given.add(variant);
          records.push({
            ...record,
            status: 'skipped',
            predicted_peak_mib: predicted / MIB,
            reason:
              `predicted step memory ${(predicted / 2 ** 30).toFixed(2)} GiB > ${(s.memoryLimit / 2 ** 30).toFixed(2)} GiB ` +
              '(extrapolated from its peaks at the two previous lengths)',
          });
          continue;
        }
        progress(`length ${T}: ${variant} (memory and warm-up step)`);
        const forward = forwardOf(models, variant, s.chunkSize);
        const step = () => trainStep(model, forward, ids, targets);
        try {
          const live = be.memory.current;
          const peak = stepPeak(step);
          peaks.get(variant)!.push({ length: T, peak: peak - live });
          record.peak_bytes = peak - live + (record.weight_bytes as number);
          record.peak_mib = (record.peak_bytes as number) / MIB;
          running.push({ variant, step, record });
        } catch (e) {
          given.add(variant);
          records.push({ ...record, status: 'failed', error: `${variant} at ${T}: ${(e as Error).message}` });
        }
      }
      progress(`length ${T}: timing ${running.map((r) => r.variant).join(', ')} and the ${s.gemmN}³ sgemm in turns`);
      const before = cpuCounters();
      // The memory step warmed each variant up, and the sgemm was warmed up before the first length.
      const timings = await measureEach([...running.map((r) => batchOf(r.step)), batchOf(gemm)], {
        warmup: 0,
        minTimeMs: 0,
        minSamples: s.samples,
        sampleTargetMs: 0,
      });
      const load = otherLoad(before, cpuCounters());
      const sgemm = timings[running.length]!;
      const ceiling = gemmGflops(s.gemmN, sgemm.msMedian);
      const ceilingBest = gemmGflops(s.gemmN, sgemm.msMin);
      running.forEach(({ record }, i) => {
        const t = timings[i]!;
        const flops = record.train_flops_per_token as number;
        const tokensPerS = (B * T * 1000) / t.msMedian;
        const gflops = (flops * tokensPerS) / 1e9;
        const gflopsBest = (flops * B * T) / (t.msMin * 1e6);
        records.push({
          ...record,
          status: 'ok',
          ms_per_step: t.msMedian,
          ms_per_step_min: t.msMin,
          tokens_per_s: tokensPerS,
          tokens_per_s_best: (B * T * 1000) / t.msMin,
          model_gflops: gflops,
          gemm_ceiling_gflops: ceiling,
          mfu: gflops / ceiling,
          // The same from the best step and the best sgemm: what is reached when the cores are not taken.
          mfu_best: gflopsBest / ceilingBest,
          samples: t.samples,
          other_load: load,
        });
      });
      ids.dispose();
      targets.dispose();
    }
  } finally {
    a.dispose();
    b.dispose();
    models.retnet.dispose();
    models.transformer.dispose();
  }
  return records;
}

// ---------------------------------------------------------------------------------------------------------------------
// Report

const GOAL_MFU = 0.5;
const GOAL_MFU_LENGTH = 2048;
const GOAL_LENGTH = 8192;

function findings(records: BenchRecord[], s: TrainSettings): string[] {
  const out: string[] = [];
  const find = (variant: Variant, T: number) =>
    records.find((r) => r.variant === variant && r.length === T && r.status === 'ok');
  const chunk = find('retnet-chunkwise', GOAL_MFU_LENGTH);
  if (chunk && s.layers === 12 && s.preset === 'base') {
    const mfu = chunk.mfu as number;
    const best = chunk.mfu_best as number;
    out.push(
      `MFU of the 12-layer d=512 RetNet, chunkwise, at ${GOAL_MFU_LENGTH}: ${(mfu * 100).toFixed(1)}% of the ` +
        `${(chunk.gemm_ceiling_gflops as number).toFixed(0)} GFLOP/s sgemm ceiling measured alongside from median ` +
        `times, ${(best * 100).toFixed(1)}% from best times (goal ≥ ${GOAL_MFU * 100}%: ` +
        `${mfu >= GOAL_MFU ? 'met' : 'NOT met'}, ${best >= GOAL_MFU ? 'met' : 'NOT met'})`,
    );
  }
  const r = find('retnet-chunkwise', GOAL_LENGTH);
  const t = find('transformer-flash', GOAL_LENGTH);
  if (r && t) {
    const speed = (r.tokens_per_s as number) / (t.tokens_per_s as number);
    const speedBest = (r.tokens_per_s_best as number) / (t.tokens_per_s_best as number);
    const mem = (t.peak_bytes as number) / (r.peak_bytes as number);
    out.push(
      `at ${GOAL_LENGTH}: RetNet chunkwise trains ${speed.toFixed(2)}× as fast as the flash-attention Transformer ` +
        `(${speedBest.toFixed(2)}× from best times) ` +
        `and its peak memory is ${(1 / mem).toFixed(2)}× the Transformer's (goal: faster and smaller: ` +
        `${speed > 1 && speedBest > 1 && mem > 1 ? 'met' : 'NOT met'})`,
    );
  }
  // Where the memory goes: with chunkwise retention and flash attention both hold O(T) activations, so what
  // decides is the bytes per token, the slope of the peak between the two longest lengths.
  const slope = (variant: Variant) => {
    const ok = records.filter((x) => x.variant === variant && x.status === 'ok').slice(-2);
    if (ok.length < 2) return null;
    const [p, q] = ok as [BenchRecord, BenchRecord];
    return ((q.peak_bytes as number) - (p.peak_bytes as number)) / ((q.length as number) - (p.length as number));
  };
  const [sr, st] = [slope('retnet-chunkwise'), slope('transformer-flash')];
  if (sr !== null && st !== null)
    out.push(
      `peak memory per token of sequence (slope between the two longest lengths): RetNet chunkwise ` +
        `${(sr / 1024).toFixed(0)} KiB, flash-attention Transformer ${(st / 1024).toFixed(0)} KiB; both grow ` +
        'linearly in T' +
        (sr > st
          ? ", and RetNet's activations per token are wider (v, g, the retention output and its norm are dv = 2d " +
            "wide, the Transformer's v and attention output d), which the Transformer's wider FFN does not make up for"
          : '; what each layer keeps per token is in the "Training memory by op" section (`bench trainmem`)'),
    );
  for (const x of records.filter((x) => x.status === 'skipped' && x.predicted_peak_mib !== undefined))
    out.push(`${x.variant} at ${x.length}: skipped, ${x.reason}`);
  return out;
}

const COLUMNS: Column[] = [
  { key: 'variant' },
  { key: 'length', digits: 0 },
  { key: 'status' },
  { key: 'tokens_per_s', header: 'tokens/s', digits: 0 },
  { key: 'ms_per_step', header: 'ms/step', digits: 0 },
  { key: 'peak_mib', header: 'peak MiB', digits: 0 },
  { key: 'model_gflops', header: 'model GFLOP/s', digits: 1 },
  { key: 'gemm_ceiling_gflops', header: 'sgemm GFLOP/s', digits: 1 },
  { key: 'mfu', header: 'MFU', digits: 3 },
  { key: 'mfu_best', header: 'MFU (best)', digits: 3 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export async function trainSuite(values: { quick: boolean; report: boolean }): Promise<void> {
  const quick = values.quick;
  const s = settings(quick);
  const { path, file } = await suiteResults('train', { report: values.report, quick }, () => measureTrain(s));
  const records = file.records;
  printTable(
    `Training step (forward + backward), ${s.preset} preset with ${s.layers} layers, batch ${s.batch}`,
    records,
    COLUMNS,
  );
  const goals = findings(records, s);
  for (const g of goals) process.stdout.write(`${g}\n`);
  const ok = records.filter((r) => r.status === 'ok');
  const series = (r: BenchRecord) => r.variant as string;
  const length = { field: 'length', title: 'sequence length (tokens)', log: true };
  const plot = await writePlot(
    'train',
    `One training step against sequence length (${s.preset}, ${s.layers} layers, float32, CPU)`,
    [
      {
        title: 'throughput (tokens/s)',
        records: ok,
        x: length,
        y: { field: 'tokens_per_s', title: 'tokens/s' },
        series,
      },
      {
        title: 'peak tensor memory (MiB)',
        records: ok,
        x: length,
        y: { field: 'peak_mib', title: 'MiB', log: true },
        series,
      },
      {
        title: 'model FLOPs utilisation',
        records: ok,
        x: length,
        y: { field: 'mfu', title: 'MFU (model FLOP/s ÷ sgemm FLOP/s)' },
        series,
      },
    ],
    3,
  );
  const r = ok.find((x) => x.arch === 'retnet');
  const t = ok.find((x) => x.arch === 'transformer');
  updateBenchmarksMd(
    'train',
    sectionMarkdown({
      title: 'Training: throughput, memory and MFU against sequence length',
      intro:
        `Model: the \`${s.preset}\` preset with ${s.layers} layers (RetNet ${((r?.parameters as number) / 1e6).toFixed(1)}M ` +
        `parameters, the parameter-matched Transformer ${((t?.parameters as number) / 1e6).toFixed(1)}M, vocabulary ` +
        `${s.vocab}), float32, batch ${s.batch}, chunk size ${s.chunkSize} for the chunkwise form. One step = forward, ` +
        'cross-entropy and backward (no optimizer update). Peak memory is the tensor accounting over one step, ' +
        'weights and gradients included. MFU = model FLOP/s ÷ the GFLOP/s of a ' +
        `${s.gemmN}³ sgemm through our matmul op, timed in turns with the steps; FLOPs per token = ` +
        '6·N_matmul + 3·L·mixer, with the mixer forward per token T·(d+dv) (parallel retention), ' +
        'C·(d+dv) + 4·d·dv/H (chunkwise) and 2·T·d (attention), counted over the causal triangle. Variants whose ' +
        `predicted peak exceeds ${MEMORY_LIMIT / 2 ** 30} GiB are skipped.`,
      file,
      table: markdownTable(records, COLUMNS),
      findings: goals,
      plot,
    }),
  );
  process.stdout.write(`\nwrote ${path}, ${plot.png}, ${plot.svg} and the train section of BENCHMARKS.md\n`);
  failOnFailedRecords('train', records);
}
