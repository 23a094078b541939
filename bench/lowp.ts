// `retnet bench lowp [--quick] [--models base,1.3B]`: decoding with low-precision weights (issue 13).
//
// For each model and weight format (f32, bf16, f16, int8, q4: src/quant) the decode step's ms/token and tokens/s at batch
// 1 and 8, the resident weight bytes from the engine's accounting, and the bound = weight bytes / the read bandwidth
// measured in the same run (bench/lib.ts readProbe, in turns with the decode steps, same threads). The bytes
// are those a step moves (stepBytes): every stored weight except the embedding table, of which a step reads only its
// B rows, plus the retention state read and written back. Batch 1 is
// measured with 1 thread and with all threads, so the default can be checked to be the faster. The peer is PyTorch
// (Debian's python3-torch, bench/peer_torch.py) on the same shapes in float32 and bfloat16, run after ours in each
// round. Models: `base` (the preset), and `1.3B` with fla's retnet-1.3B shapes (D 2048, 24 layers, 8 heads, value
// width 4096, FFN 2816, vocabulary 32000), random weights built in memory. Quality: validation perplexity on Brown of
// a model trained by `retnet train`, evaluated by `retnet eval --weights FORMAT`; logits of each format against
// float32 on the reference vectors. --quick: `base` only, fewer samples, results to bench/results/lowp.quick.json and
// no BENCHMARKS.md section.
//
// `--parts decode,peer,quality` (default all three) runs only those parts and merges them into the results already
// saved (mergeParts): a part's new records replace that part's old ones for the same models (and, for decode, the same
// formats), so the full suite, ~15 minutes at 1.3B, can be measured as runs of under 8 minutes each.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { noGrad } from '../src/autograd/tape.js';
import { packageRoot } from '../src/backend/cpu/load.js';
import { cpuBackend, threadCount } from '../src/backend/index.js';
import { archEntry, createModel, modelFromConfig, parseModelConfig } from '../src/models/registry.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { loadModelDir } from '../src/io/model-dir.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { tidy } from '../src/tensor/scope.js';
import { WEIGHT_FORMATS, type WeightFormat } from '../src/quant/formats.js';
import { quantizeModel, weightBytes } from '../src/quant/model.js';
import { Embedding, Linear } from '../src/nn/layers.js';
import type { Module } from '../src/nn/module.js';
import type { Tensor } from '../src/tensor/tensor.js';
import {
  BenchFailure,
  type BenchRecord,
  type Column,
  type ReadProbe,
  type ResultFile,
  commandLine,
  cpuCounters,
  describeMachine,
  gitCommit,
  measureEach,
  otherLoad,
  outputRoot,
  printTable,
  readProbe,
  resultFile,
} from './lib.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { PYTHON, checkTorch } from './peer.js';
import { markdownTable, sectionMarkdown, updateBenchmarksMd } from './report.js';

interface Shape {
  name: string;
  preset: string;
  overrides: { vocabSize: number; valueDim?: number; ffnDim?: number; heads?: number };
  /** A model directory to load instead (`--model DIR`: the 1.3B stand-in of `bench pretrained --keep`). */
  dir?: string;
}

const SHAPES: Record<string, Shape> = {
  base: { name: 'base', preset: 'base', overrides: { vocabSize: 4096 } },
  '1.3B': { name: '1.3B', preset: '1.3B', overrides: { vocabSize: 32000, valueDim: 4096, ffnDim: 2816, heads: 8 } },
};

const BATCHES = [1, 8];
/** Goals of issue 13. */
const GOAL_BOUND = 1.25;
const GOAL_INT8_VS_TORCH_F32 = 3;
const GOAL_BF16_VS_TORCH_BF16 = 1;
const GOAL_Q4_13B_TOKENS = 15;

/** The model in `format`: loaded from its directory in that format, or built with random weights and converted. */
function buildModel(s: Shape, format: WeightFormat): RetNetModel {
  if (s.dir) {
    const { model } = loadModelDir(s.dir, { weights: format });
    if (!(model instanceof RetNetModel)) throw new BenchFailure(`bench lowp: ${s.dir} is not a RetNet`);
    return model;
  }
  const model = createModel('retnet', s.preset, s.overrides, { seed: 1 }) as RetNetModel;
  quantizeModel(model, format);
  return model;
}

/**
 * Median and best ms of one decode step at batch B on `threads` threads (the addon's setting), taking turns with a
 * read of `probe` on as many (GB/s alongside).
 */
async function measure(model: RetNetModel, B: number, threads: number, probe: ReadProbe, quick: boolean) {
  const state = model.emptyState(B);
  const tokens = Array.from({ length: B }, (_, i) => (i * 7) % model.vocabSize);
  const step = (calls: number) => {
    const t0 = performance.now();
    noGrad(() => {
      for (let i = 0; i < calls; i++) model.step(tokens, state).dispose();
    });
    return performance.now() - t0;
  };
  const timing = quick
    ? { warmup: 2, minTimeMs: 600, minSamples: 5, sampleTargetMs: 0, turnMs: 0 }
    : { warmup: 3, minTimeMs: 3000, minSamples: 9, sampleTargetMs: 0, turnMs: 0 };
  const before = cpuCounters();
  const [dec, rd] = await measureEach([step, probe.batch(threads)], timing);
  const load = otherLoad(before, cpuCounters());
  const stateBytes = state.bytes();
  state.dispose();
  return {
    dec: dec!,
    stateBytes,
    gbps: probe.gbps(rd!.msMin),
    gbpsMedian: probe.gbps(rd!.msMedian),
    load,
  };
}

function torchDecode(
  s: Shape,
  c: RetNetModel['config'],
  B: number,
  dtype: 'float32' | 'bfloat16',
  steps: number,
): number {
  const args = [
    join(packageRoot(), 'bench', 'peer_torch.py'),
    ...['--vocab', c.vocabSize, '--d', c.embedDim, '--dv', c.valueDim, '--heads', c.heads, '--ffn', c.ffnDim],
    ...['--layers', c.layers, '--seq', 8, '--batch', 1, '--steps', 0, '--decode', steps, '--threads', threadCount()],
    ...['--dtype', dtype, '--decode-batch', B],
  ].map(String);
  const out = execFileSync(PYTHON, args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 20,
  });
  const r = JSON.parse(out) as { decode_tokens_per_s: number };
  if (!(r.decode_tokens_per_s > 0))
    throw new BenchFailure(`lowp: PyTorch (${s.name}, ${dtype}) printed no rate: ${out}`);
  return r.decode_tokens_per_s;
}

// ---------------------------------------------------------------------------------------------------------------------
// Quality: a model trained on Brown (bytes) by `retnet train`, its validation perplexity by `retnet eval` with each
// --weights format. The goals of issue 13: bf16 within 0.5% of float32, int8 within 1%, q4 within 5%.

const QUALITY_GOAL: Record<WeightFormat, number> = { f32: 0, bf16: 0.005, f16: 0.005, int8: 0.01, q4: 0.05 };

function cli(args: string[]): string {
  const runner = fileURLToPath(new URL(`../src/cli/run${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
  return execFileSync(process.execPath, [...process.execArgv, runner, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 16 << 20,
  });
}

function qualityRecords(quick: boolean): BenchRecord[] {
  const dir = mkdtempSync(join(tmpdir(), 'retnet-lowp-'));
  try {
    const steps = quick ? 30 : 150;
    const out = join(dir, 'model');
    process.stderr.write(`lowp: quality: training the tiny preset on Brown for ${steps} steps\n`);
    const trainArgs = ['--arch', 'retnet', '--preset', 'tiny', '--data', 'brown', '--steps', String(steps)];
    const schedule = ['--seq-len', '128', '--batch', '8', '--lr', '0.003', '--warmup', String(steps / 10)];
    cli(['train', ...trainArgs, ...schedule, '--weight-decay', '0.1', '--clip', '1', '--seed', '0', '--out', out]);
    const batches = quick ? '5' : '30';
    const ppl = (w: WeightFormat | null) => {
      const before = cpuCounters();
      const line = cli([
        'eval',
        '--model',
        out,
        '--data',
        'brown',
        '--max-batches',
        batches,
        ...(w ? ['--weights', w] : []),
      ]);
      const r = JSON.parse(line.trim().split('\n').pop()!) as { ppl: number; tokens: number };
      return { ...r, load: otherLoad(before, cpuCounters()) };
    };
    const base = ppl(null);
    return WEIGHT_FORMATS.map((format) => {
      const r = format === 'f32' ? base : ppl(format);
      const rel = r.ppl / base.ppl - 1;
      return {
        model: 'tiny (Brown)',
        format,
        what: 'quality',
        train_steps: steps,
        val_tokens: r.tokens,
        val_ppl: r.ppl,
        val_ppl_float32: base.ppl,
        ppl_change: rel,
        goal_ppl_change: QUALITY_GOAL[format],
        other_load: r.load,
      };
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Logits of each format against float32 on the reference vectors (/work/shared: torchscale's two random 48/64-wide
// configs, parallel form and recurrent decode; fla's dev checkpoint, BF16 as stored): max |Δlogit| / max |logit|.
const SHARED = join(packageRoot(), '..', 'shared');

function vectorRecords(): BenchRecord[] {
  const be = cpuBackend()!;
  const out: BenchRecord[] = [];
  const relError = (got: Float32Array, base: Float32Array) => {
    let diff = 0;
    let scale = 0;
    base.forEach((v, i) => {
      diff = Math.max(diff, Math.abs(got[i]! - v));
      scale = Math.max(scale, Math.abs(v));
    });
    return diff / scale;
  };
  const record = (model: string, form: string, errors: Map<WeightFormat, number>) => {
    for (const [format, e] of errors)
      out.push({ model, format, what: 'logits', form, max_logit_error: e, other_load: null });
  };
  const torchscale = join(SHARED, 'torchscale-vectors');
  for (const name of ['dev_default', 'dev_options']) {
    const configPath = join(torchscale, `config_${name}.json`);
    if (!existsSync(configPath)) {
      process.stderr.write(`lowp: logits: ${configPath} not found, torchscale vectors skipped\n`);
      break;
    }
    const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    const tokens = JSON.parse(readFileSync(join(torchscale, `tokens_${name}.json`), 'utf8')) as number[];
    const weights = readSafetensors(join(torchscale, `weights_${name}.safetensors`)).tensors;
    const logits = (format: WeightFormat, decode: boolean) => {
      const model = modelFromConfig(config, name, { backend: be, dtype: 'float32' }) as RetNetModel;
      model.loadValues(weights, name, (n) => n.startsWith('retnet_rel_pos.'));
      quantizeModel(model, format);
      const values = noGrad(() =>
        tidy(() => {
          if (!decode) return model.forward(be.fromData(tokens, [1, tokens.length], 'int32')).data() as Float32Array;
          const state = model.emptyState(1);
          const rows = tokens.map((t) => model.step([t], state).data() as Float32Array);
          state.dispose();
          const all = new Float32Array(rows.length * rows[0]!.length);
          rows.forEach((r, i) => all.set(r, i * r.length));
          return all;
        }),
      );
      model.dispose();
      return values;
    };
    for (const decode of [false, true]) {
      const base = logits('f32', decode);
      const errors = new Map(
        WEIGHT_FORMATS.filter((f) => f !== 'f32').map((f) => [f, relError(logits(f, decode), base)]),
      );
      record(`torchscale ${name}`, decode ? 'recurrent' : 'parallel', errors);
    }
  }
  const dev = join(SHARED, 'fla-vectors', 'dev');
  if (!existsSync(dev)) process.stderr.write(`lowp: logits: ${dev} not found, fla vectors skipped\n`);
  else {
    const tokens = (JSON.parse(readFileSync(join(dev, 'tokens.json'), 'utf8')) as { single_input_ids: number[][] })
      .single_input_ids[0]!;
    const logits = (weights?: WeightFormat) => {
      const { model } = loadModelDir(dev, { backend: be, weights });
      const values = noGrad(() => tidy(() => model.forward(be.fromData(tokens, [1, tokens.length], 'int32')).data()));
      model.dispose();
      return values as Float32Array;
    };
    const base = logits('f32');
    record(
      'fla dev (BF16 checkpoint)',
      'parallel',
      new Map(WEIGHT_FORMATS.filter((f) => f !== 'f32').map((f) => [f, relError(logits(f), base)])),
    );
  }
  return out;
}

const LOGIT_COLUMNS: Column[] = [
  { key: 'model' },
  { key: 'form' },
  { key: 'format' },
  { key: 'max_logit_error', header: 'max |Δlogit| / max |logit| vs float32', digits: 4 },
];

const QUALITY_COLUMNS: Column[] = [
  { key: 'model' },
  { key: 'format' },
  { key: 'val_tokens', header: 'val tokens', digits: 0 },
  { key: 'val_ppl', header: 'val ppl', digits: 4 },
  { key: 'ppl_change', header: 'vs float32', digits: 4 },
  { key: 'goal_ppl_change', header: 'goal (≤)', digits: 3 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

const COLUMNS: Column[] = [
  { key: 'model' },
  { key: 'format' },
  { key: 'batch', digits: 0 },
  { key: 'threads', digits: 0 },
  { key: 'ms_per_token', header: 'ms/step', digits: 2 },
  { key: 'ms_per_token_best', header: 'ms/step (best)', digits: 2 },
  { key: 'tokens_per_s', header: 'tokens/s', digits: 1 },
  { key: 'weight_mib', header: 'weights MiB', digits: 1 },
  { key: 'step_mib', header: 'moved MiB', digits: 1 },
  { key: 'read_gb_per_s', header: 'read GB/s', digits: 1 },
  { key: 'bound_ms_per_token', header: 'bound ms', digits: 2 },
  { key: 'vs_bound', header: 'best / bound', digits: 2 },
  { key: 'peer_tokens_per_s_float32', header: 'PyTorch f32 tok/s', digits: 1 },
  { key: 'peer_tokens_per_s_bfloat16', header: 'PyTorch bf16 tok/s', digits: 2 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export const LOWP_PARTS = ['decode', 'peer', 'quality'] as const;
export type LowpPart = (typeof LOWP_PARTS)[number];

/** The part a record belongs to: decode points carry no `what`; the peer's are 'peer'; quality and logits 'quality'. */
export function partOf(r: BenchRecord): LowpPart {
  return r.what === 'peer' ? 'peer' : r.what === 'quality' || r.what === 'logits' ? 'quality' : 'decode';
}

/**
 * The saved records with a run's records merged in: a fresh record replaces the old ones of its part for the same
 * model (decode: the same model and format; quality: all of them), the rest stay. Then every decode record gets the
 * peer's tokens/s of its model and batch (null where the peer has not run). Sorted by part, model, format, batch and
 * threads, so the table reads the same whatever order the parts ran in.
 */
export function mergeParts(saved: readonly BenchRecord[], fresh: readonly BenchRecord[]): BenchRecord[] {
  const key = (r: BenchRecord) => {
    const part = partOf(r);
    return part === 'quality' ? part : part === 'peer' ? `peer/${r.model}` : `decode/${r.model}/${r.format}`;
  };
  const replaced = new Set(fresh.map(key));
  const out = [...saved.filter((r) => !replaced.has(key(r))), ...fresh].map((r) => ({ ...r }));
  const peer = (model: unknown, batch: unknown, dtype: string) =>
    out.find((q) => q.what === 'peer' && q.model === model && q.batch === batch && q.dtype === dtype);
  for (const r of out)
    if (partOf(r) === 'decode') {
      r.peer_tokens_per_s_float32 = (peer(r.model, r.batch, 'float32')?.tokens_per_s as number | undefined) ?? null;
      r.peer_tokens_per_s_bfloat16 = (peer(r.model, r.batch, 'bfloat16')?.tokens_per_s as number | undefined) ?? null;
    }
  const models = ['base', '1.3B'];
  const rank = (v: unknown, order: readonly unknown[]) => (order.includes(v) ? order.indexOf(v) : order.length);
  const num = (v: unknown) => (typeof v === 'number' ? v : 0);
  return out
    .map((r, i) => ({ r, i }))
    .sort(
      (a, b) =>
        rank(partOf(a.r), LOWP_PARTS) - rank(partOf(b.r), LOWP_PARTS) ||
        rank(a.r.model, models) - rank(b.r.model, models) ||
        String(a.r.model).localeCompare(String(b.r.model)) ||
        rank(a.r.format, WEIGHT_FORMATS) - rank(b.r.format, WEIGHT_FORMATS) ||
        num(a.r.batch) - num(b.r.batch) ||
        num(a.r.threads) - num(b.r.threads) ||
        a.i - b.i,
    )
    .map(({ r }) => r);
}

/**
 * The bytes one decode step of `batch` rows must move: every stored weight once, except an embedding table that no
 * product uses (a tied head reads it whole), of which the step reads only its `batch` rows; plus the retention state,
 * read and written back (`stateBytes`: the state of all rows).
 */
export function stepBytes(
  model: Module,
  batch: number,
  stateBytes: number,
): { total: number; weights: number; embeddingRows: number; state: number } {
  const products = new Set<Tensor>();
  for (const [, m] of model.namedModules()) if (m instanceof Linear) products.add(m.weight);
  let table = 0;
  let rows = 0;
  for (const [, m] of model.namedModules())
    if (m instanceof Embedding && !products.has(m.weight)) {
      const bytes = m.weight.storage.byteLength;
      table += bytes;
      rows += Math.min(bytes, (batch * bytes) / m.weight.shape[0]!);
    }
  const weights = weightBytes(model) - table + rows;
  return { total: weights + 2 * stateBytes, weights, embeddingRows: rows, state: 2 * stateBytes };
}

export interface LowpFlags {
  quick: boolean;
  models: string[] | undefined;
  model: string | undefined;
  formats: WeightFormat[] | undefined;
  parts: LowpPart[] | undefined;
}

/** The records already saved in bench/results/NAME.json under the output root (none if there is no such file). */
function savedRecords(name: string): BenchRecord[] {
  const path = join(outputRoot(), 'bench', 'results', `${name}.json`);
  if (!existsSync(path)) return [];
  const file = JSON.parse(readFileSync(path, 'utf8')) as ResultFile;
  if (file.suite !== name && file.suite !== 'lowp') throw new BenchFailure(`bench lowp: ${path} is not lowp's`);
  return file.records;
}

/** A model's config without building it: from its directory's config.json, or the preset with the overrides. */
function shapeConfig(s: Shape): RetNetModel['config'] {
  const spec = s.dir
    ? parseModelConfig(JSON.parse(readFileSync(join(s.dir, 'config.json'), 'utf8')), s.dir)
    : { arch: 'retnet' as const, config: archEntry('retnet', 'bench lowp').preset(s.preset, s.overrides) };
  if (spec.arch !== 'retnet') throw new BenchFailure(`bench lowp: ${s.name} is not a RetNet`);
  return spec.config as RetNetModel['config'];
}

async function decodeRecords(shape: Shape, formats: readonly WeightFormat[], quick: boolean): Promise<BenchRecord[]> {
  const be = cpuBackend()!;
  const threads = threadCount();
  const probe = readProbe((quick ? 128 : 512) << 20, 'bench lowp');
  const records: BenchRecord[] = [];
  for (const format of formats) {
    process.stderr.write(`lowp: ${shape.name} ${format}: building and quantising\n`);
    const model = buildModel(shape, format);
    const resident = weightBytes(model);
    const threadSet = threads > 1 ? [1, threads] : [1];
    for (const B of BATCHES)
      for (const t of B === 1 ? threadSet : [threads]) {
        be.addon.setThreads(t);
        const m = await measure(model, B, t, probe, quick);
        be.addon.setThreads(threads);
        const moved = stepBytes(model, B, m.stateBytes);
        const bound = moved.total / (m.gbps * 1e6);
        records.push({
          model: shape.name,
          format,
          batch: B,
          threads: t,
          ms_per_token: m.dec.msMedian,
          ms_per_token_best: m.dec.msMin,
          tokens_per_s: B / (m.dec.msMedian / 1000),
          weight_bytes: resident,
          weight_mib: resident / 2 ** 20,
          step_bytes: moved.total,
          step_weight_bytes: moved.weights,
          step_embedding_bytes: moved.embeddingRows,
          step_state_bytes: moved.state,
          step_mib: moved.total / 2 ** 20,
          read_gb_per_s: m.gbps,
          read_gb_per_s_median: m.gbpsMedian,
          bound_ms_per_token: bound,
          vs_bound: m.dec.msMin / bound,
          peer_tokens_per_s_float32: null,
          peer_tokens_per_s_bfloat16: null,
          other_load: m.load,
        });
      }
    model.dispose();
  }
  return records;
}

function peerRecords(shape: Shape, quick: boolean, torchVersion: string): BenchRecord[] {
  const config = shapeConfig(shape);
  const out: BenchRecord[] = [];
  for (const B of BATCHES)
    for (const dtype of ['float32', 'bfloat16'] as const) {
      process.stderr.write(`lowp: ${shape.name}: PyTorch ${torchVersion} ${dtype}, batch ${B}\n`);
      const steps = dtype === 'float32' ? (quick ? 8 : 32) : quick || shape.name !== 'base' ? 2 : 4;
      const before = cpuCounters();
      const tps = torchDecode(shape, config, B, dtype, steps);
      out.push({
        model: shape.name,
        what: 'peer',
        dtype,
        batch: B,
        threads: threadCount(),
        torch: torchVersion,
        decode_steps: steps,
        tokens_per_s: tps,
        other_load: otherLoad(before, cpuCounters()),
      });
    }
  return out;
}

export async function lowpSuite(values: LowpFlags): Promise<void> {
  const quick = values.quick;
  const names = values.model ? ['dir'] : (values.models ?? (quick ? ['base'] : ['base', '1.3B']));
  const shapes: Record<string, Shape> = values.model
    ? { dir: { name: basename(values.model), preset: '', overrides: { vocabSize: 0 }, dir: values.model } }
    : SHAPES;
  for (const n of names) if (!shapes[n]) throw new BenchFailure(`bench lowp: unknown model '${n}' (base, 1.3B)`);
  const formats = values.formats ?? WEIGHT_FORMATS;
  // A directory of its own (--model) is a measurement of decode and the peer alone.
  const parts = new Set<LowpPart>(values.parts ?? (values.model ? ['decode', 'peer'] : LOWP_PARTS));
  const be = cpuBackend();
  if (!be) throw new BenchFailure('bench lowp: needs the cpu device (the native addon)');
  const torchVersion = parts.has('peer') ? checkTorch() : '';
  const threads = threadCount();
  const command = commandLine();
  const fresh: BenchRecord[] = [];
  for (const name of names) {
    const shape = shapes[name]!;
    if (parts.has('decode')) fresh.push(...(await decodeRecords(shape, formats, quick)));
    // the peer after our formats (the same shapes, the same threads)
    if (parts.has('peer')) fresh.push(...peerRecords(shape, quick, torchVersion));
  }
  if (parts.has('quality')) fresh.push(...qualityRecords(quick), ...vectorRecords());
  const commit = gitCommit();
  for (const r of fresh) {
    r.command = command;
    r.commit = commit;
  }
  const fileName = quick ? 'lowp.quick' : 'lowp';
  const records = mergeParts(savedRecords(fileName), fresh);
  const decode = records.filter((r) => partOf(r) === 'decode');
  const quality = records.filter((r) => r.what === 'quality');
  const logitErrors = records.filter((r) => r.what === 'logits');
  printTable(`lowp: decode with low-precision weights (${threads} threads default)`, decode, COLUMNS);
  printTable('lowp: validation perplexity by weight format', quality, QUALITY_COLUMNS);
  printTable('lowp: logits of each format against float32 on the reference vectors', logitErrors, LOGIT_COLUMNS);
  const findings = [...judge(decode, threads), ...qualityFindings(quality)];
  for (const f of findings) process.stdout.write(`- ${f}\n`);
  // the file names every command and commit whose records it holds (records saved before commits were recorded
  // per record count as unknown)
  const each = (key: string) => [
    ...new Set(records.map((r) => (typeof r[key] === 'string' ? (r[key] as string) : 'unknown'))),
  ];
  const file = resultFile(fileName, records, {
    machine: describeMachine(),
    commit: each('commit').join(', '),
    command: each('command').join(' ; '),
  });
  const path = join(outputRoot(), 'bench', 'results', `${fileName}.json`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`);
  process.stdout.write(`\nwrote ${path}\n`);
  if (quick) return;
  updateBenchmarksMd(
    'lowp',
    sectionMarkdown({
      title: 'Low-precision weights: decode against the memory bound',
      intro:
        'Every Linear (projections, FFN, head) in f32, bf16, f16, int8 (one scale per output row) or q4 (blocks of ' +
        '32, float16 scale; the dtypes of src/tensor/dtype.ts), activations and state float32. One decode step per ' +
        'sample; the read bandwidth is a read of 512 MiB (1 MiB parts, each as 8 streams side by side: bench/lib.ts ' +
        'readProbe) through the same worker pool, timed in turns with the steps; bound = the bytes a step moves (stored weights less the embedding table, plus the B embedding ' +
        'rows looked up, plus the retention state read and written) / the best read rate. PyTorch (Debian ' +
        'python3-torch, bench/peer_torch.py) decodes the same shapes in float32 and bfloat16 with the same threads, ' +
        'after ours. Quality: the tiny preset trained on Brown (bytes) by `retnet train`, validation perplexity by ' +
        '`retnet eval --weights FORMAT` (prefill-size products: weights converted to float32 in tiles, so this is the ' +
        "formats' error; the decode kernels' own error is bounded by test/lowp.test.ts). Logits: max |Δlogit| / max " +
        "|logit| of each format against float32 on the reference vectors (../shared: torchscale's two random " +
        "configs in the parallel and recurrent forms through the native kernels, fla's dev checkpoint). The parts " +
        'ran as separate commands (`--parts`), each under 8 minutes; the command line above lists them.',
      file,
      table: `${markdownTable(decode, COLUMNS)}\n\n${markdownTable(quality, QUALITY_COLUMNS)}\n\n${markdownTable(logitErrors, LOGIT_COLUMNS)}`,
      findings,
      plot: null,
    }),
  );
}

function qualityFindings(quality: readonly BenchRecord[]): string[] {
  const out: string[] = [];
  for (const q of quality)
    if (q.format !== 'f32') {
      const ch = q.ppl_change as number;
      const goal = q.goal_ppl_change as number;
      out.push(
        `validation perplexity in ${q.format}: ${(q.val_ppl as number).toFixed(4)} vs ${(q.val_ppl_float32 as number).toFixed(4)} in float32 ` +
          `(${(100 * ch).toFixed(3)}%; goal within ${100 * goal}%: ${Math.abs(ch) <= goal ? 'met' : 'NOT met'})`,
      );
    }
  return out;
}

/** Above this share of the CPU used by other processes, the findings say that ratios to the bound do not hold. */
const BUSY_LOAD = 0.5;

function judge(records: BenchRecord[], threads: number): string[] {
  const out: string[] = [];
  const loads = records.map((r) => r.other_load).filter((v): v is number => typeof v === 'number');
  if (loads.length > 0 && Math.max(...loads) > BUSY_LOAD)
    out.push(
      `other processes used up to ${(100 * Math.max(...loads)).toFixed(0)}% of the CPU during these measurements: ` +
        'the read probe and the decode steps were slowed by different, unknown shares, so the ratios to the bound ' +
        '(some below 1) and the 1-vs-2-thread comparison are not measures of the kernels; rerun on a quiet machine',
    );
  const at = (model: string, format: WeightFormat, batch: number, t: number) =>
    records.find(
      (r) => r.what === undefined && r.model === model && r.format === format && r.batch === batch && r.threads === t,
    );
  for (const model of new Set(records.map((r) => r.model as string))) {
    for (const format of WEIGHT_FORMATS) {
      const r = at(model, format, 1, threads);
      const one = at(model, format, 1, 1);
      if (!r) continue;
      const ratio = r.vs_bound as number;
      out.push(
        `${model} ${format}, batch 1: best step ${(r.ms_per_token_best as number).toFixed(2)} ms = ${ratio.toFixed(2)}× ` +
          `its bound ${(r.bound_ms_per_token as number).toFixed(2)} ms (goal ≤ ${GOAL_BOUND}×: ${ratio <= GOAL_BOUND ? 'met' : 'NOT met'})` +
          (one && one !== r
            ? `; ${threads} threads ${(r.ms_per_token as number).toFixed(2)} ms vs 1 thread ` +
              `${(one.ms_per_token as number).toFixed(2)} ms (median)`
            : ''),
      );
    }
    const i8 = at(model, 'int8', 1, threads);
    const b16 = at(model, 'bf16', 1, threads);
    if (i8 && typeof i8.peer_tokens_per_s_float32 === 'number') {
      const x = (i8.tokens_per_s as number) / i8.peer_tokens_per_s_float32;
      out.push(
        `${model}: int8 / PyTorch float32 decode tokens/s = ${x.toFixed(2)} (goal ≥ ${GOAL_INT8_VS_TORCH_F32}: ${x >= GOAL_INT8_VS_TORCH_F32 ? 'met' : 'NOT met'})`,
      );
    }
    if (b16 && typeof b16.peer_tokens_per_s_bfloat16 === 'number') {
      const x = (b16.tokens_per_s as number) / b16.peer_tokens_per_s_bfloat16;
      out.push(
        `${model}: bf16 / PyTorch bfloat16 decode tokens/s = ${x.toFixed(2)} (goal ≥ ${GOAL_BF16_VS_TORCH_BF16}: ${x >= GOAL_BF16_VS_TORCH_BF16 ? 'met' : 'NOT met'})`,
      );
    }
    const q4 = at(model, 'q4', 1, threads);
    if (model === '1.3B' && q4) {
      const tps = q4.tokens_per_s as number;
      out.push(
        `1.3B in q4 decodes at ${tps.toFixed(1)} tokens/s (goal ≥ ${GOAL_Q4_13B_TOKENS}: ${tps >= GOAL_Q4_13B_TOKENS ? 'met' : 'NOT met'})`,
      );
    }
  }
  return out;
}
