// `retnet bench generate [--quick]`: generation and serving speed. Part 1: generate() on RetNet presets (native
// float32) at batch 1, 4 and 16 — prefill tokens/s (chunkwise form) and decode tokens/s (recurrent form, all rows).
// Part 2: the HTTP server with 1, 4 and 16 concurrent streaming clients — aggregate tokens/s, mean time to first
// token, and the longest the event loop was blocked next to the longest single model call. Prints tables; writes
// bench/results/generate.json.

import { monitorEventLoopDelay } from 'node:perf_hooks';

import { generate } from '../src/generate/generate.js';
import type { CausalLM } from '../src/models/lm.js';
import { createModel } from '../src/models/registry.js';
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

async function benchGenerate(preset: string, batch: number, newTokens: number): Promise<BenchRecord> {
  const model = createModel('retnet', preset, { vocabSize: tok.vocabSize }, { seed: 1 });
  const times = timeCalls(model);
  const requests = Array.from({ length: batch }, (_, i) => ({
    prompt: promptOf(PROMPT_TOKENS, i),
    maxNewTokens: newTokens,
    ignoreEos: true,
    sampling: { temperature: 0 },
  }));
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
    preset,
    batch,
    promptTokens: PROMPT_TOKENS,
    newTokens: newTokens,
    prefillMs,
    prefillTokensPerS: (batch * PROMPT_TOKENS * 1000) / prefillMs,
    decodeStepMs: decodeMs / times.step.length,
    decodeTokensPerS: (batch * times.step.length * 1000) / decodeMs,
  };
}

async function benchServer(clients: number, newTokens: number): Promise<BenchRecord> {
  const model = createModel('retnet', 'tiny', { vocabSize: tok.vocabSize }, { seed: 1 });
  const times = timeCalls(model);
  const server = await startServer(model, tok, { modelId: 'bench', port: 0, maxActive: 16 });
  const loop = monitorEventLoopDelay({ resolution: 1 });
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
      let tokens = 0;
      const decoder = new TextDecoder();
      let text = '';
      for await (const bytes of r.body!) {
        if (firstMs < 0) firstMs = performance.now() - t0;
        text += decoder.decode(bytes as Uint8Array, { stream: true });
      }
      const usage = /"completion_tokens":(\d+)/.exec(text);
      tokens = usage ? Number(usage[1]) : 0;
      return { firstMs, tokens };
    }),
  );
  const wallMs = performance.now() - start;
  loop.disable();
  await server.close();
  model.dispose();
  return {
    clients,
    wallMs,
    tokensPerS: (sum(results.map((r) => r.tokens)) * 1000) / wallMs,
    meanTimeToFirstMs: sum(results.map((r) => r.firstMs)) / clients,
    maxEventLoopBlockMs: loop.max / 1e6,
    maxStepMs: Math.max(...times.step),
    maxPrefillMs: Math.max(...times.prefill),
  };
}

export async function generateSuite(values: { quick: boolean }): Promise<void> {
  const quick = values.quick;
  const newTokens = quick ? 32 : 128;
  const before = cpuCounters();
  const generateRows: BenchRecord[] = [];
  for (const preset of quick ? ['tiny'] : ['tiny', 'small'])
    for (const batch of [1, 4, 16]) generateRows.push(await benchGenerate(preset, batch, newTokens));
  const serverRows: BenchRecord[] = [];
  for (const clients of [1, 4, 16]) serverRows.push(await benchServer(clients, newTokens));
  const load = otherLoad(before, cpuCounters());
  printTable(`generate() on RetNet, float32, prompt ${PROMPT_TOKENS} tokens, ${newTokens} new tokens`, generateRows, [
    { key: 'preset' },
    { key: 'batch', digits: 0 },
    { key: 'prefillMs', header: 'prefill ms', digits: 1 },
    { key: 'prefillTokensPerS', header: 'prefill tok/s', digits: 0 },
    { key: 'decodeStepMs', header: 'step ms', digits: 2 },
    { key: 'decodeTokensPerS', header: 'decode tok/s', digits: 0 },
  ]);
  printTable('HTTP server, RetNet tiny, streaming clients', serverRows, [
    { key: 'clients', digits: 0 },
    { key: 'wallMs', header: 'wall ms', digits: 0 },
    { key: 'tokensPerS', header: 'tok/s', digits: 0 },
    { key: 'meanTimeToFirstMs', header: 'mean TTFT ms', digits: 1 },
    { key: 'maxEventLoopBlockMs', header: 'max loop block ms', digits: 2 },
    { key: 'maxStepMs', header: 'max step ms', digits: 2 },
    { key: 'maxPrefillMs', header: 'max prefill ms', digits: 2 },
  ]);
  const records = [
    ...generateRows.map((r) => ({ kind: 'generate', arch: 'retnet', ...r, other_load: load })),
    ...serverRows.map((r) => ({ kind: 'server', arch: 'retnet', preset: 'tiny', ...r, other_load: load })),
  ];
  const { path } = writeResults('generate', records);
  process.stdout.write(`\nwrote ${path}\n`);
}
