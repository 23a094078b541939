// Generation and serving speed, RetNet and the Transformer at the same preset (native float32).
// generate(): prefill tokens/s and decode tokens/s at batch 1, 4 and 16 (prompt 256 tokens). The HTTP server with 1, 4
// and 16 concurrent streaming clients: aggregate tokens/s, mean time to first token, and the longest the event loop
// was held next to the longest single model call (the server yields between model calls, so the two should match;
// on a loaded machine the OS descheduling the process adds to the first). Writes bench/results/generate.json.

import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { generate } from '../src/generate/generate.js';
import type { CausalLM } from '../src/models/lm.js';
import { type Arch, createModel } from '../src/models/registry.js';
import { startServer } from '../src/server/server.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { type BenchRecord, cpuCounters, otherLoad, printTable, writeResults } from './lib.js';

const tok = new ByteTokenizer();
const PROMPT_TOKENS = 256;

/** A prompt of exactly n byte tokens. */
const promptOf = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => String.fromCharCode(97 + ((i * 7 + seed) % 26))).join('');

/** Wraps prefill and step to record how long each call takes (ms). */
function timeCalls(model: CausalLM): { prefill: number[]; step: number[] } {
  const times = { prefill: [] as number[], step: [] as number[] };
  const prefill = model.prefill.bind(model);
  const step = model.step.bind(model);
  model.prefill = (prompts) => {
    const t = performance.now();
    const out = prefill(prompts);
    times.prefill.push(performance.now() - t);
    return out;
  };
  model.step = (tokens, state) => {
    const t = performance.now();
    const out = step(tokens, state);
    times.step.push(performance.now() - t);
    return out;
  };
  return times;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

async function benchGenerate(arch: Arch, preset: string, batch: number, newTokens: number): Promise<BenchRecord> {
  const model = createModel(arch, preset, { vocabSize: tok.vocabSize }, { seed: 1 });
  const times = timeCalls(model);
  const requests = Array.from({ length: batch }, (_, i) => ({
    prompt: promptOf(PROMPT_TOKENS, i),
    maxNewTokens: newTokens,
    ignoreEos: true,
    sampling: { temperature: 0 },
  }));
  const before = cpuCounters();
  // One warm-up run (kernel caches, buffer pool), then the measured one.
  for (let run = 0; run < 2; run++) {
    times.prefill.length = 0;
    times.step.length = 0;
    for await (const e of generate(model, tok, requests)) void e;
  }
  model.dispose();
  const prefillMs = sum(times.prefill);
  const decodeMs = sum(times.step);
  return {
    arch,
    preset,
    batch,
    prompt_tokens: PROMPT_TOKENS,
    new_tokens: newTokens,
    prefill_ms: prefillMs,
    prefill_tokens_per_s: (batch * PROMPT_TOKENS * 1000) / prefillMs,
    decode_step_ms: decodeMs / times.step.length,
    decode_tokens_per_s: (batch * times.step.length * 1000) / decodeMs,
    other_load: otherLoad(before, cpuCounters()),
  };
}

async function benchServer(arch: Arch, preset: string, clients: number, newTokens: number): Promise<BenchRecord> {
  const model = createModel(arch, preset, { vocabSize: tok.vocabSize }, { seed: 1 });
  const times = timeCalls(model);
  const server = await startServer(model, tok, { modelId: 'bench', port: 0, maxActive: 16 });
  const loop = monitorEventLoopDelay({ resolution: 1 });
  const before = cpuCounters();
  loop.enable();
  const start = performance.now();
  const results = await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const t0 = performance.now();
      const r = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          prompt: promptOf(PROMPT_TOKENS, i),
          max_tokens: newTokens,
          ignore_eos: true,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      let firstMs = -1;
      let text = '';
      const decoder = new TextDecoder();
      for await (const bytes of r.body!) {
        if (firstMs < 0) firstMs = performance.now() - t0;
        text += decoder.decode(bytes as Uint8Array, { stream: true });
      }
      const usage = /"completion_tokens":(\d+)/.exec(text);
      return { firstMs, tokens: usage ? Number(usage[1]) : 0 };
    }),
  );
  const wallMs = performance.now() - start;
  loop.disable();
  const load = otherLoad(before, cpuCounters());
  await server.close();
  model.dispose();
  return {
    arch,
    preset,
    clients,
    prompt_tokens: PROMPT_TOKENS,
    new_tokens: newTokens,
    wall_ms: wallMs,
    tokens_per_s: (sum(results.map((r) => r.tokens)) * 1000) / wallMs,
    ttft_ms_mean: sum(results.map((r) => r.firstMs)) / clients,
    loop_block_ms_max: loop.max / 1e6,
    step_ms_max: Math.max(...times.step),
    prefill_ms_max: Math.max(...times.prefill),
    other_load: load,
  };
}

export async function generateSuite(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean' } } });
  const quick = values.quick ?? false;
  const newTokens = quick ? 32 : 128;
  const presets = quick ? ['tiny'] : ['tiny', 'small'];
  const archs: Arch[] = ['retnet', 'transformer'];
  const generateRows: BenchRecord[] = [];
  for (const preset of presets)
    for (const arch of archs)
      for (const batch of [1, 4, 16]) generateRows.push(await benchGenerate(arch, preset, batch, newTokens));
  const serverRows: BenchRecord[] = [];
  for (const arch of archs)
    for (const clients of [1, 4, 16]) serverRows.push(await benchServer(arch, 'tiny', clients, newTokens));

  printTable(`generate(): prompt ${PROMPT_TOKENS} tokens, ${newTokens} new tokens, float32`, generateRows, [
    { key: 'arch' },
    { key: 'preset' },
    { key: 'batch', digits: 0 },
    { key: 'prefill_ms', digits: 1 },
    { key: 'prefill_tokens_per_s', header: 'prefill tok/s', digits: 0 },
    { key: 'decode_step_ms', header: 'step ms', digits: 2 },
    { key: 'decode_tokens_per_s', header: 'decode tok/s', digits: 0 },
    { key: 'other_load', digits: 2 },
  ]);
  printTable('HTTP server, preset tiny, streaming clients', serverRows, [
    { key: 'arch' },
    { key: 'clients', digits: 0 },
    { key: 'wall_ms', digits: 0 },
    { key: 'tokens_per_s', header: 'tok/s', digits: 0 },
    { key: 'ttft_ms_mean', header: 'mean TTFT ms', digits: 1 },
    { key: 'loop_block_ms_max', header: 'max loop block ms', digits: 1 },
    { key: 'step_ms_max', header: 'max step ms', digits: 1 },
    { key: 'prefill_ms_max', header: 'max prefill ms', digits: 1 },
    { key: 'other_load', digits: 2 },
  ]);
  const path = writeResults('generate', [
    ...generateRows.map((r) => ({ kind: 'generate', ...r })),
    ...serverRows.map((r) => ({ kind: 'server', ...r })),
  ]);
  process.stdout.write(`\nwrote ${path}\n`);
}
