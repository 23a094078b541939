// `retnet bench trainmem [--length T] [--layers L] [--steps N] [--quick]`: where a training step's memory goes, for
// RetNet chunkwise and the flash-attention Transformer (the `base` preset, batch 1, as `bench train`). For each:
//   - one forward pass under the tape, then every live storage attributed to the op whose output it is (what the
//     tape holds for backward), per token and per token per layer; what no op output accounts for (the statistics
//     kernels return beside their outputs: row factors, rstd, log-sum-exps) is listed as `saved statistics`;
//   - the peak of the whole step (forward, cross-entropy, backward with the parameters' gradients) from the engine's
//     exact accounting, with this model's weights (the other model's are not counted);
//   - with --steps N, N more steps timed in turns with the other variant (bench/lib.ts measureEach), with the load.
// Memory figures come from the accounting and do not depend on the load. Running this from two checkouts in turns
// compares their step times (the tokens/s of a change).

import { backward, tapeNodes } from '../src/autograd/tape.js';
import { getBackend } from '../src/backend/index.js';
import type { CausalLM } from '../src/models/lm.js';
import { createModel } from '../src/models/registry.js';
import { crossEntropy } from '../src/ops/nn.js';
import { tidy } from '../src/tensor/scope.js';
import type { Storage } from '../src/tensor/storage.js';
import type { Tensor } from '../src/tensor/tensor.js';
import {
  type BenchRecord,
  type Column,
  batchOf,
  cpuCounters,
  measureEach,
  otherLoad,
  printTable,
  writeResults,
} from './lib.js';

const KIB = 1024;
const MIB = 2 ** 20;

export type MemVariant = 'retnet-chunkwise' | 'transformer-flash';
export const MEM_VARIANTS: readonly MemVariant[] = ['retnet-chunkwise', 'transformer-flash'];

export interface TrainMemSettings {
  preset: string;
  layers: number;
  vocab: number;
  chunkSize: number;
  length: number;
  steps: number;
}

function forwardOf(model: CausalLM, variant: MemVariant, chunkSize: number): (ids: Tensor) => Tensor {
  return variant === 'retnet-chunkwise'
    ? (ids) =>
        (model as CausalLM & { forward(i: Tensor, o: object): Tensor }).forward(ids, { form: 'chunkwise', chunkSize })
    : (ids) => (model as CausalLM & { forward(i: Tensor, o: object): Tensor }).forward(ids, { attention: 'flash' });
}

/** Live storages attributed to the op that produced them: `op → last dim` (e.g. `linear → 1024`), bytes, nodes. */
export function liveByOp(): Map<string, { bytes: number; tensors: number }> {
  const seen = new Set<Storage>();
  const groups = new Map<string, { bytes: number; tensors: number }>();
  for (const node of tapeNodes())
    for (const t of node.outputs) {
      if (t.disposed || seen.has(t.storage)) continue;
      seen.add(t.storage);
      const key = `${node.op} → ${t.shape[t.rank - 1] ?? 1}`;
      const g = groups.get(key) ?? { bytes: 0, tensors: 0 };
      g.bytes += t.storage.byteLength;
      g.tensors++;
      groups.set(key, g);
    }
  return groups;
}

export async function measureTrainMem(s: TrainMemSettings): Promise<BenchRecord[]> {
  const be = getBackend();
  const T = s.length;
  const idsData = Array.from({ length: T }, (_, i) => (i * 7919) % s.vocab);
  const ids = be.fromData(idsData, [1, T], 'int32');
  const targets = be.fromData(
    idsData.map((x) => (x + 1) % s.vocab),
    [1, T],
    'int32',
  );
  const models = MEM_VARIANTS.map((v) =>
    createModel(
      v.startsWith('retnet') ? 'retnet' : 'transformer',
      s.preset,
      { vocabSize: s.vocab, layers: s.layers },
      {
        seed: 1,
      },
    ),
  );
  const records: BenchRecord[] = [];
  const steps: (() => void)[] = [];
  try {
    MEM_VARIANTS.forEach((variant, i) => {
      const model = models[i]!;
      const forward = forwardOf(model, variant, s.chunkSize);
      const weights = model.parameters().reduce((n, t) => n + t.storage.byteLength, 0);
      const base = { variant, length: T, layers: s.layers, parameters: model.parameterCount() };
      process.stderr.write(`trainmem: ${variant} at ${T} (one step, attributing live memory)\n`);
      const live = be.memory.current;
      be.memory.resetPeak();
      let afterForward = 0;
      let groups = new Map<string, { bytes: number; tensors: number }>();
      tidy(() => {
        const logits = forward(ids);
        afterForward = be.memory.current - live;
        groups = liveByOp();
        backward(crossEntropy(logits, targets));
      });
      const peak = be.memory.peak - live;
      model.zeroGrad();
      const attributed = [...groups.values()].reduce((n, g) => n + g.bytes, 0);
      const rows = [...groups.entries()].sort((a, b) => b[1].bytes - a[1].bytes);
      for (const [group, g] of rows)
        records.push({
          ...base,
          kind: 'op',
          group,
          tensors: g.tensors,
          bytes: g.bytes,
          kib_per_token: g.bytes / T / KIB,
          kib_per_token_layer: g.bytes / T / s.layers / KIB,
        });
      records.push({
        ...base,
        kind: 'op',
        group: 'saved statistics',
        tensors: null,
        bytes: afterForward - attributed,
        kib_per_token: (afterForward - attributed) / T / KIB,
        kib_per_token_layer: (afterForward - attributed) / T / s.layers / KIB,
      });
      records.push({
        ...base,
        kind: 'step',
        group: 'after forward (all)',
        bytes: afterForward,
        kib_per_token: afterForward / T / KIB,
        weight_bytes: weights,
        peak_bytes: peak + weights,
        peak_mib: (peak + weights) / MIB,
        peak_kib_per_token: peak / T / KIB,
      });
      steps.push(() => {
        tidy(() => backward(crossEntropy(forward(ids), targets)));
        model.zeroGrad();
      });
    });
    if (s.steps > 0) {
      process.stderr.write(`trainmem: timing ${s.steps} steps of each in turns\n`);
      const before = cpuCounters();
      const timings = await measureEach(
        steps.map((f) => batchOf(f)),
        {
          warmup: 0,
          minTimeMs: 0,
          minSamples: s.steps,
          sampleTargetMs: 0,
        },
      );
      const load = otherLoad(before, cpuCounters());
      MEM_VARIANTS.forEach((variant, i) => {
        const step = records.find((r) => r.variant === variant && r.kind === 'step')!;
        Object.assign(step, {
          ms_per_step: timings[i]!.msMedian,
          ms_per_step_min: timings[i]!.msMin,
          tokens_per_s: (T * 1000) / timings[i]!.msMedian,
          tokens_per_s_best: (T * 1000) / timings[i]!.msMin,
          samples: timings[i]!.samples,
          other_load: load,
        });
      });
    }
  } finally {
    for (const m of models) m.dispose();
    ids.dispose();
    targets.dispose();
  }
  return records;
}

const OP_COLUMNS: Column[] = [
  { key: 'variant' },
  { key: 'group', header: 'produced by' },
  { key: 'tensors', digits: 0 },
  { key: 'kib_per_token', header: 'KiB/token', digits: 1 },
  { key: 'kib_per_token_layer', header: 'KiB/token/layer', digits: 2 },
];

const STEP_COLUMNS: Column[] = [
  { key: 'variant' },
  { key: 'length', digits: 0 },
  { key: 'kib_per_token', header: 'after forward KiB/token', digits: 1 },
  { key: 'peak_kib_per_token', header: 'step peak KiB/token', digits: 1 },
  { key: 'peak_mib', header: 'peak MiB (with weights)', digits: 0 },
  { key: 'ms_per_step', header: 'ms/step', digits: 0 },
  { key: 'ms_per_step_min', header: 'best ms/step', digits: 0 },
  { key: 'tokens_per_s', header: 'tokens/s', digits: 1 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export async function trainMemSuite(values: {
  quick: boolean;
  length?: number;
  layers?: number;
  steps?: number;
}): Promise<void> {
  const s: TrainMemSettings = {
    preset: values.quick ? 'small' : 'base',
    layers: values.layers ?? (values.quick ? 2 : 12),
    vocab: 4096,
    chunkSize: 64,
    length: values.length ?? (values.quick ? 256 : 8192),
    steps: values.steps ?? 0,
  };
  const records = await measureTrainMem(s);
  const { path } = writeResults('trainmem', records);
  printTable(
    `Live memory after the forward pass by producing op, ${s.preset} preset, ${s.layers} layers, T = ${s.length}`,
    records.filter((r) => r.kind === 'op'),
    OP_COLUMNS,
  );
  printTable(
    'Training step',
    records.filter((r) => r.kind === 'step'),
    STEP_COLUMNS,
  );
  const [r, t] = MEM_VARIANTS.map((v) => records.find((x) => x.variant === v && x.kind === 'step')!);
  process.stdout.write(
    `peak: RetNet chunkwise ${(r!.peak_mib as number).toFixed(0)} MiB = ` +
      `${((r!.peak_bytes as number) / (t!.peak_bytes as number)).toFixed(3)}× the flash Transformer's ` +
      `${(t!.peak_mib as number).toFixed(0)} MiB\nwrote ${path}\n`,
  );
}
