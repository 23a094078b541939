// `node --import tsx bench/params.ts [--vocab 50257]`: the Transformer presets against the RetNet presets they are
// matched to (src/models/transformer/config.ts, matchRetNetShape): shapes and both parameter counts, with and without
// the embeddings. Counts are exact formulas, checked here against built models for the CPU presets. Prints a table
// and writes runs/bench/bench/results/params.json.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { defineCommand, int } from '../src/cli/command.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { RETNET_PRESETS, retnetParameterCount, retnetPreset } from '../src/models/retnet/config.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { transformerParameterCount, transformerPreset } from '../src/models/transformer/config.js';
import { TransformerModel } from '../src/models/transformer/model.js';
import { outputRoot } from './lib.js';

let vocabSize = 0;
const args = defineCommand({
  name: 'bench/params.ts',
  summary: 'the parameter-matched presets',
  flags: { vocab: int('vocabulary size', { min: 1, max: 2 ** 24, default: 50257 }) },
  async run({ values }) {
    vocabSize = values.vocab;
    return 0;
  },
});
await args.run(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(2);
});

const rows = Object.keys(RETNET_PRESETS).map((name) => {
  const r = retnetPreset(name, { vocabSize });
  const t = transformerPreset(name, { vocabSize });
  const rCount = retnetParameterCount(r);
  const tCount = transformerParameterCount(t);
  const embeddings = 2 * vocabSize * r.embedDim;
  if (r.embedDim <= 256) {
    // The formulas must agree with the modules (small presets only: building the paper sizes takes too long).
    const built = [new RetNetModel(r), new TransformerModel(t)];
    const counts = built.map((m) => m.parameterCount());
    for (const m of built) m.dispose();
    if (counts[0] !== rCount || counts[1] !== tCount)
      throw new Error(`${name}: built models have ${counts} parameters, formulas say ${rCount}, ${tCount}`);
  }
  return {
    preset: name,
    d: r.embedDim,
    layers: r.layers,
    retnet: `H=${r.heads} dv=${r.valueDim} ffn=${r.ffnDim}`,
    transformer: `H=${t.heads} ffn=${t.ffnDim}`,
    retnet_params: rCount,
    transformer_params: tCount,
    retnet_non_embedding: rCount - embeddings,
    transformer_non_embedding: tCount - embeddings,
    difference_pct: (100 * (tCount - rCount)) / (rCount - embeddings),
  };
});

const columns = Object.keys(rows[0]!) as (keyof (typeof rows)[number])[];
const cells = rows.map((r) => columns.map((c) => (c === 'difference_pct' ? r[c].toFixed(3) : String(r[c]))));
const widths = columns.map((c, j) => Math.max(c.length, ...cells.map((r) => r[j]!.length)));
const line = (vals: string[]) => vals.map((v, j) => v.padStart(widths[j]!)).join('  ');
process.stdout.write(
  `parameter-matched presets, vocabulary ${vocabSize} (difference relative to RetNet's non-embedding count)\n`,
);
process.stdout.write(`${line(columns)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
for (const r of cells) process.stdout.write(`${line(r)}\n`);

const dir = join(outputRoot(), 'bench', 'results');
mkdirSync(dir, { recursive: true });
const path = join(dir, 'params.json');
writeFileAtomic(path, `${JSON.stringify({ suite: 'params', vocabSize, rows }, null, 2)}\n`);
process.stdout.write(`wrote ${path}\n`);
