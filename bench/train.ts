// Training pipeline benchmark: tokenising the Brown corpus into shards (byte-level and BPE, cold and reused) and
// training throughput of RetNet presets in the parallel and chunkwise forms. Prints a table, writes
// bench/results/train.json. Usage: node --import tsx bench/train.ts [--steps N] [--preset NAME] [--seq-len N]

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { getBackend } from '../src/backend/index.js';
import { createModel, saveModelDir } from '../src/models/registry.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { prepareData, type PreparedData } from '../src/train/data.js';
import { train, trainConfig } from '../src/train/trainer.js';

const { values } = parseArgs({
  options: { steps: { type: 'string' }, preset: { type: 'string' }, 'seq-len': { type: 'string' } },
});
const steps = Number(values.steps ?? 20);
const preset = values.preset ?? 'tiny';
const seqLen = Number(values['seq-len'] ?? 128);
const batch = 8;
const work = mkdtempSync(join(tmpdir(), 'retnet-bench-train-'));

function timed<T>(fn: () => T): { value: T; sec: number } {
  const t = performance.now();
  const value = fn();
  return { value, sec: (performance.now() - t) / 1000 };
}

const prep: Record<string, unknown>[] = [];
let bytesData: PreparedData | null = null;
for (const [name, tokenizer] of [
  ['bytes', new ByteTokenizer()],
  ['bpe-4096', { bpeVocabSize: 4096 }],
] as const) {
  const cacheDir = join(work, `cache-${name}`);
  const cold = timed(() => prepareData({ source: 'brown', tokenizer, cacheDir }));
  const warm = timed(() => prepareData({ source: 'brown', tokenizer, cacheDir }));
  const c = cold.value.manifest.counts;
  if (name === 'bytes') bytesData = cold.value;
  prep.push({
    tokenizer: name,
    trainTokens: c.trainTokens,
    valTokens: c.valTokens,
    coldSec: cold.sec,
    reusedSec: warm.sec,
    reused: warm.value.reused,
    tokensPerSecCold: (c.trainTokens + c.valTokens) / cold.sec,
  });
}

const throughput: Record<string, unknown>[] = [];
for (const form of ['parallel', 'chunkwise'] as const) {
  const out = join(work, `run-${form}`);
  const data = bytesData!;
  const model = createModel(
    'retnet',
    preset,
    { vocabSize: data.tokenizer.vocabSize, chunkwiseRecurrent: form === 'chunkwise', chunkSize: 32 },
    { seed: 0 },
  );
  const r = await train({
    model,
    data,
    outDir: out,
    config: trainConfig({ steps, batch, seqLen, evalBatches: 1 }),
    writeModel: (dir) => saveModelDir(dir, model, data.tokenizer),
    progress: { write: () => true },
  });
  const stepSecs = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; stepSec?: number })
    .filter((m) => m.type === 'train')
    .slice(3) // the first steps warm up allocators and caches
    .map((m) => m.stepSec!)
    .sort((a, b) => a - b);
  const median = stepSecs[Math.floor(stepSecs.length / 2)]!;
  throughput.push({
    preset,
    form,
    parameters: model.parameterCount(),
    batch,
    seqLen,
    steps,
    medianStepSec: median,
    tokensPerSec: (batch * seqLen) / median,
    finalTrainLoss: r.trainLoss,
  });
  model.dispose();
}

const result = {
  date: new Date().toISOString(),
  backend: getBackend().name,
  loadAverage: loadavg(),
  OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? null,
  dataPreparation: prep,
  trainingThroughput: throughput,
};
console.table(prep);
console.table(throughput);
console.log(
  `load average at the end: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'train.json'), `${JSON.stringify(result, null, 2)}\n`);
rmSync(work, { recursive: true, force: true });
