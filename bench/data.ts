// `retnet bench data [--quick]`: the data pipeline on the Brown corpus: tokenising it into shards from a cold cache
// (byte-level, and a byte-level BPE of 4096 tokens trained on the training split) and finding the shards again on a
// second call (reused), in tokens per second of the cold preparation. --quick runs the byte-level tokenizer only.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { type PrepareOptions, prepareData } from '../src/train/data.js';
import { type BenchRecord, cpuCounters, otherLoad, printTable, writeResults } from './lib.js';

function timed<T>(fn: () => T): { value: T; s: number } {
  const t0 = performance.now();
  const value = fn();
  return { value, s: (performance.now() - t0) / 1000 };
}

export async function dataSuite(values: { quick: boolean }): Promise<void> {
  const tokenizers: [string, PrepareOptions['tokenizer']][] = [['bytes', new ByteTokenizer()]];
  if (!values.quick) tokenizers.push(['bpe-4096', { bpeVocabSize: 4096 }]);
  const work = mkdtempSync(join(tmpdir(), 'retnet-bench-data-'));
  const records: BenchRecord[] = [];
  try {
    for (const [name, tokenizer] of tokenizers) {
      process.stderr.write(`data: brown, ${name}\n`);
      const cacheDir = join(work, name);
      const before = cpuCounters();
      const cold = timed(() => prepareData({ source: 'brown', tokenizer, cacheDir }));
      const warm = timed(() => prepareData({ source: 'brown', tokenizer, cacheDir }));
      const c = cold.value.manifest.counts;
      records.push({
        source: 'brown',
        tokenizer: name,
        vocab: cold.value.tokenizer.vocabSize,
        train_tokens: c.trainTokens,
        val_tokens: c.valTokens,
        cold_s: cold.s,
        reused_s: warm.s,
        reused: warm.value.reused,
        cold_tokens_per_s: (c.trainTokens + c.valTokens) / cold.s,
        other_load: otherLoad(before, cpuCounters()),
      });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  printTable('Brown corpus into token shards', records, [
    { key: 'tokenizer' },
    { key: 'train_tokens', header: 'train tokens', digits: 0 },
    { key: 'val_tokens', header: 'val tokens', digits: 0 },
    { key: 'cold_s', header: 'cold s', digits: 2 },
    { key: 'reused_s', header: 'reused s', digits: 3 },
    { key: 'cold_tokens_per_s', header: 'cold tokens/s', digits: 0 },
    { key: 'other_load', header: 'other load', digits: 2 },
  ]);
  const { path } = writeResults('data', records);
  process.stdout.write(`\nwrote ${path}\n`);
}
