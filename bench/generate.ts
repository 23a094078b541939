// Generation and serving speed. Part 1: generate() on RetNet presets (native float32) at batch 1, 4 and 16 —
// prefill tokens/s (chunkwise form) and decode tokens/s (recurrent form, all rows). Part 2: the HTTP server with
// 1, 4 and 16 concurrent streaming clients — aggregate tokens/s, mean time to first token, and the longest the event
// loop was blocked next to the longest single model call. Prints tables; writes bench/results/generate.json.
//
//   node --import tsx bench/generate.ts [--quick]

import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { getBackend, threadCount } from '../src/backend/index.js';
import { generate } from '../src/generate/generate.js';
import type { CausalLM } from '../src/models/lm.js';
import { createModel } from '../src/models/registry.js';
import { startServer } from '../src/server/server.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';

const quick = process.argv.includes('--quick');
const tok = new ByteTokenizer();
const PROMPT_TOKENS = 256;
const NEW_TOKENS = quick ? 32 : 128;

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
const fmt = (x: number, digits = 1) => x.toFixed(digits);

async function benchGenerate(preset: string, batch: number) {
  const model = createModel('retnet', preset, { vocabSize: tok.vocabSize }, { seed: 1 });
  const times = timeCalls(model);
  const requests = Array.from({ length: batch }, (_, i) => ({
    prompt: promptOf(PROMPT_TOKENS, i),
    maxNewTokens: NEW_TOKENS,
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
    newTokens: NEW_TOKENS,
    prefillMs,
    prefillTokensPerS: (batch * PROMPT_TOKENS * 1000) / prefillMs,
    decodeStepMs: decodeMs / times.step.length,
    decodeTokensPerS: (batch * times.step.length * 1000) / decodeMs,
  };
}

async function benchServer(clients: number) {
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
          max_tokens: NEW_TOKENS,
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

const generateRows = [];
for (const preset of quick ? ['tiny'] : ['tiny', 'small'])
  for (const batch of [1, 4, 16]) generateRows.push(await benchGenerate(preset, batch));
const serverRows = [];
for (const clients of [1, 4, 16]) serverRows.push(await benchServer(clients));

const backend = getBackend();
// The machine may be shared: the load average says how much else was running.
const load = loadavg()[0]!;
console.log(
  `backend ${backend.name}, ${threadCount()} threads, OMP_WAIT_POLICY=${process.env.OMP_WAIT_POLICY ?? '(unset)'}, ` +
    `load average ${load.toFixed(2)}, prompt ${PROMPT_TOKENS} tokens, ${NEW_TOKENS} new tokens`,
);
console.log('\ngenerate() on RetNet, float32');
console.log('preset  batch  prefill ms  prefill tok/s  step ms  decode tok/s');
for (const r of generateRows)
  console.log(
    `${r.preset.padEnd(6)}  ${String(r.batch).padStart(5)}  ${fmt(r.prefillMs).padStart(10)}  ${fmt(r.prefillTokensPerS, 0).padStart(13)}  ${fmt(r.decodeStepMs, 2).padStart(7)}  ${fmt(r.decodeTokensPerS, 0).padStart(12)}`,
  );
console.log('\nHTTP server, RetNet tiny, streaming clients');
console.log('clients  wall ms  tok/s  mean TTFT ms  max loop block ms  max step ms  max prefill ms');
for (const r of serverRows)
  console.log(
    `${String(r.clients).padStart(7)}  ${fmt(r.wallMs, 0).padStart(7)}  ${fmt(r.tokensPerS, 0).padStart(5)}  ${fmt(r.meanTimeToFirstMs).padStart(12)}  ${fmt(r.maxEventLoopBlockMs, 2).padStart(17)}  ${fmt(r.maxStepMs, 2).padStart(11)}  ${fmt(r.maxPrefillMs, 2).padStart(14)}`,
  );

const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
const out = join(dir, 'generate.json');
writeFileSync(
  out,
  `${JSON.stringify(
    {
      backend: backend.name,
      threads: threadCount(),
      ompWaitPolicy: process.env.OMP_WAIT_POLICY ?? null,
      loadAverage: load,
      node: process.version,
      quick,
      generate: generateRows,
      server: serverRows,
    },
    null,
    2,
  )}\n`,
);
console.log(`\nwrote ${out}`);
