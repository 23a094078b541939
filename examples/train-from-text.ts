// Train a small RetNet on a plain text file with the TypeScript API, then measure its validation perplexity.
//
//   node --import tsx examples/train-from-text.ts [FILE.txt] [--steps N] [--out DIR]
//
// Without a file it trains on this repository's own documentation (README.md and docs/*.md).

import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import {
  ByteTokenizer,
  ShardReader,
  createModel,
  evaluate,
  prepareData,
  saveModelDir,
  train,
  trainConfig,
} from 'retnet';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { steps: { type: 'string', default: '60' }, out: { type: 'string' } },
});
const work = mkdtempSync(join(tmpdir(), 'retnet-example-'));
let textFile = positionals[0];
if (textFile === undefined) {
  const root = join(import.meta.dirname, '..');
  const docs = readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md'));
  textFile = join(work, 'docs.txt');
  writeFileSync(
    textFile,
    [join(root, 'README.md'), ...docs.map((f) => join(root, 'docs', f))].map((p) => readFileSync(p, 'utf8')).join('\n'),
  );
}

const tokenizer = new ByteTokenizer();
// Tokenise once into shards; a second run on the same file reuses them.
const data = prepareData({ source: textFile, tokenizer, cacheDir: join(work, 'shards'), valFraction: 0.1 });
const model = createModel('retnet', 'tiny', { vocabSize: tokenizer.vocabSize }, { seed: 1 });
const outDir = values.out ?? join('runs', 'train-from-text');

const result = await train({
  model,
  data,
  outDir,
  config: trainConfig({ steps: Number(values.steps), batch: 8, seqLen: 64, lr: 3e-3, evalEvery: 0, logEvery: 20 }),
  writeModel: (dir) => saveModelDir(dir, model, tokenizer),
});
const val = evaluate((ids) => model.forward(ids), model, new ShardReader(data.dir, data.manifest, 'val'), 8, 64, 8);
console.log(JSON.stringify({ steps: result.step, trainLoss: result.trainLoss, valPpl: val?.ppl ?? null, outDir }));
model.dispose();
rmSync(work, { recursive: true, force: true }); // the text and its shards; the model stays in outDir
