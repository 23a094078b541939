// `retnet bench generate [--quick] [--prefill-only]`: generation and serving speed. Part 1: generate() on RetNet
// presets (native float32) at batch 1, 4 and 16 — prefill tokens/s (chunkwise form) and decode tokens/s (recurrent
// form, all rows). Part 2: the HTTP server with 1, 4 and 16 concurrent streaming clients — aggregate tokens/s, mean
// time to first token, and the longest the event loop was blocked next to the longest single model call. Part 3
// (alone with --prefill-only): 32 streaming clients while one sends an 8k-token prompt — their largest gaps between
// tokens and their tokens/s, before piecewise prefill (a prompt in one call) and after — and the time to first token
// of 64 clients at once. Prints tables; writes bench/results/generate.json.

import { monitorEventLoopDelay } from 'node:perf_hooks';

import { parseFlags } from '../src/cli/command.js';
import { generate } from '../src/generate/generate.js';
import type { CausalLM } from '../src/models/lm.js';
import { createModel } from '../src/models/registry.js';
import { PREFILL_CHUNK } from '../src/generate/scheduler.js';
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
  const server = await startServer(model, tok, { modelId: 'bench', port: 0, maxActive: 16, logLevel: 'silent' });
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

/** The q-quantile of some numbers (nearest rank). */
function quantile(xs: readonly number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** Streams one completion; returns the arrival time (performance.now) of every event with a token, until aborted. */
async function streamTimes(url: string, body: object, signal?: AbortSignal, onFirst?: () => void): Promise<number[]> {
  const times: number[] = [];
  try {
    const r = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, stream: true }),
      signal,
    });
    const decoder = new TextDecoder();
    for await (const bytes of r.body!) {
      const text = decoder.decode(bytes as Uint8Array, { stream: true });
      const now = performance.now();
      const events = text.match(/"text":/g)?.length ?? 0;
      for (let i = 0; i < events; i++) if (times.push(now) === 1) onFirst?.();
    }
  } catch (e) {
    if (!signal?.aborted) throw e;
  }
  return times;
}

/**
 * Prefill interference: `clients` streams decoding when one client sends a `longTokens` prompt. The running clients'
 * gaps between tokens (p99, max) and tokens/s from the long request's arrival to its first token, and its time to
 * first token. `prefillChunk` 2^20 is the scheduler before piecewise prefill (a prompt in one call).
 */
async function benchInterference(
  clients: number,
  longTokens: number,
  prefillChunk: number,
  promptTokens: number,
): Promise<BenchRecord> {
  const model = createModel('retnet', 'tiny', { vocabSize: tok.vocabSize }, { seed: 1 });
  const server = await startServer(model, tok, {
    modelId: 'bench',
    port: 0,
    maxActive: clients + 1,
    maxPromptTokens: longTokens,
    maxTokens: 1 << 20,
    prefillChunk,
    logLevel: 'silent',
  });
  const stop = new AbortController();
  const running = Array.from({ length: clients }, (_, i) =>
    streamTimes(
      server.url,
      { prompt: promptOf(promptTokens, i), max_tokens: 1 << 20, ignore_eos: true, temperature: 0 },
      stop.signal,
    ),
  );
  // Let every client reach its decode (a first token each), then send the long prompt.
  while (
    server.scheduler.activeCount < clients ||
    (server.scheduler as unknown as { prefilling: unknown[] }).prefilling.length > 0
  )
    await new Promise((resolve) => setTimeout(resolve, 20));
  await new Promise((resolve) => setTimeout(resolve, 500));
  const sent = performance.now();
  const long = await streamTimes(server.url, {
    prompt: promptOf(longTokens, 99),
    max_tokens: 2,
    ignore_eos: true,
    temperature: 0,
  });
  const firstToken = long[0] ?? NaN;
  stop.abort();
  const times = await Promise.all(running);
  await server.close();
  model.dispose();
  // The window: from the long prompt's arrival to its first token.
  const gaps: number[] = [];
  let tokens = 0;
  for (const t of times) {
    const inWindow = t.filter((x) => x >= sent && x <= firstToken);
    tokens += inWindow.length;
    const before = t.filter((x) => x < sent).at(-1);
    const seq = before === undefined ? inWindow : [before, ...inWindow];
    for (let i = 1; i < seq.length; i++) gaps.push(seq[i]! - seq[i - 1]!);
    // The gap still open at the window's end counts too.
    const last = seq.at(-1);
    if (last !== undefined) gaps.push(firstToken - last);
  }
  return {
    clients,
    longPromptTokens: longTokens,
    prefillChunk,
    longTimeToFirstMs: firstToken - sent,
    gapP99Ms: quantile(gaps, 0.99),
    gapMaxMs: Math.max(...gaps),
    runningTokensPerS: (tokens * 1000) / (firstToken - sent),
  };
}

/** Time to first token of `clients` clients sending at once (p50, p99). */
async function benchTimeToFirst(clients: number, prefillChunk: number, promptTokens: number): Promise<BenchRecord> {
  const model = createModel('retnet', 'tiny', { vocabSize: tok.vocabSize }, { seed: 1 });
  const server = await startServer(model, tok, { modelId: 'bench', port: 0, prefillChunk, logLevel: 'silent' });
  const start = performance.now();
  const firsts = await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const t = await streamTimes(server.url, {
        prompt: promptOf(promptTokens, i),
        max_tokens: 16,
        ignore_eos: true,
        temperature: 0,
      });
      return t[0]! - start;
    }),
  );
  await server.close();
  model.dispose();
  return {
    clients,
    prefillChunk,
    promptTokens,
    ttftP50Ms: quantile(firsts, 0.5),
    ttftP99Ms: quantile(firsts, 0.99),
  };
}

export async function generateSuite(argv: string[]): Promise<void> {
  const { values } = parseFlags('bench generate', argv, {
    quick: { type: 'boolean' },
    'prefill-only': { type: 'boolean' },
  });
  const quick = values.quick === true;
  const all = values['prefill-only'] !== true;
  const newTokens = quick ? 32 : 128;
  const before = cpuCounters();
  const generateRows: BenchRecord[] = [];
  const serverRows: BenchRecord[] = [];
  if (all) {
    for (const preset of quick ? ['tiny'] : ['tiny', 'small'])
      for (const batch of [1, 4, 16]) generateRows.push(await benchGenerate(preset, batch, newTokens));
    for (const clients of [1, 4, 16]) serverRows.push(await benchServer(clients, newTokens));
  }
  // Before piecewise prefill (2^20: every prompt in one call) and after (the default piece).
  const chunks = [1 << 20, PREFILL_CHUNK];
  const interferenceRows: BenchRecord[] = [];
  for (const chunk of chunks) interferenceRows.push(await benchInterference(32, quick ? 2048 : 8192, chunk, 16));
  const ttftRows: BenchRecord[] = [];
  for (const chunk of chunks) ttftRows.push(await benchTimeToFirst(64, chunk, quick ? 64 : PROMPT_TOKENS));
  const load = otherLoad(before, cpuCounters());
  if (all)
    printTable(`generate() on RetNet, float32, prompt ${PROMPT_TOKENS} tokens, ${newTokens} new tokens`, generateRows, [
      { key: 'preset' },
      { key: 'batch', digits: 0 },
      { key: 'prefillMs', header: 'prefill ms', digits: 1 },
      { key: 'prefillTokensPerS', header: 'prefill tok/s', digits: 0 },
      { key: 'decodeStepMs', header: 'step ms', digits: 2 },
      { key: 'decodeTokensPerS', header: 'decode tok/s', digits: 0 },
    ]);
  if (all)
    printTable('HTTP server, RetNet tiny, streaming clients', serverRows, [
      { key: 'clients', digits: 0 },
      { key: 'wallMs', header: 'wall ms', digits: 0 },
      { key: 'tokensPerS', header: 'tok/s', digits: 0 },
      { key: 'meanTimeToFirstMs', header: 'mean TTFT ms', digits: 1 },
      { key: 'maxEventLoopBlockMs', header: 'max loop block ms', digits: 2 },
      { key: 'maxStepMs', header: 'max step ms', digits: 2 },
      { key: 'maxPrefillMs', header: 'max prefill ms', digits: 2 },
    ]);
  printTable('HTTP server, RetNet tiny: 32 streaming clients while one sends a long prompt', interferenceRows, [
    { key: 'prefillChunk', header: 'prefill chunk', digits: 0 },
    { key: 'longPromptTokens', header: 'long prompt', digits: 0 },
    { key: 'longTimeToFirstMs', header: 'its TTFT ms', digits: 0 },
    { key: 'gapP99Ms', header: 'gap p99 ms', digits: 1 },
    { key: 'gapMaxMs', header: 'gap max ms', digits: 1 },
    { key: 'runningTokensPerS', header: 'running tok/s', digits: 0 },
  ]);
  printTable('HTTP server, RetNet tiny: 64 clients at once, 16 new tokens each', ttftRows, [
    { key: 'prefillChunk', header: 'prefill chunk', digits: 0 },
    { key: 'promptTokens', header: 'prompt', digits: 0 },
    { key: 'ttftP50Ms', header: 'TTFT p50 ms', digits: 0 },
    { key: 'ttftP99Ms', header: 'TTFT p99 ms', digits: 0 },
  ]);
  const records = [
    ...generateRows.map((r) => ({ kind: 'generate', arch: 'retnet', ...r, other_load: load })),
    ...serverRows.map((r) => ({ kind: 'server', arch: 'retnet', preset: 'tiny', ...r, other_load: load })),
    ...interferenceRows.map((r) => ({ kind: 'interference', arch: 'retnet', preset: 'tiny', ...r, other_load: load })),
    ...ttftRows.map((r) => ({ kind: 'ttft', arch: 'retnet', preset: 'tiny', ...r, other_load: load })),
  ];
  const { path } = writeResults('generate', records);
  process.stdout.write(`\nwrote ${path}\n`);
}
