// `retnet bench web [--quick]`: the browser build. Bundle size of retnet/web (esbuild, plain and minified, with gzip),
// and for the tiny demo model (`retnet demo`'s preset, seeded weights; speed does not depend on training) in headless
// Debian chromium: load time, time to first token (prefill of the prompt + the first sample) and decode tokens/s,
// on the webgpu device and on the page's host device ('cpu': the reference kernels in TypeScript), against the
// Node cpu device (the native addon) on the same model; then the same for the base preset in bfloat16 (a ~40 MB
// checkpoint streamed in: load MB/s, and its tensors staying 16-bit on the device). On CI machines chromium's WebGPU adapter is SwiftShader, a
// CPU implementation: its figures say how this code runs on SwiftShader, nothing about a real GPU.

import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

import { launchChromium } from '../examples/web/chromium.js';
import { bundleForBrowser, writeDemoModel } from '../examples/web/serve.js';
import { packageRoot } from '../src/backend/cpu/load.js';
import { generate } from '../src/generate/generate.js';
import { loadModelDir, saveModelDir } from '../src/io/model-dir.js';
import { createModel } from '../src/models/registry.js';
import type { DType } from '../src/tensor/dtype.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { startStaticServer } from '../src/web/serve.js';
import { type BenchRecord, cpuCounters, otherLoad, printTable, writeResults } from './lib.js';

const PROMPT = 'The jury said that the city';

interface Run {
  load_ms: number;
  ttft_ms: number;
  decode_tokens_per_s: number;
  tokens: number;
  /** The safetensors file's size, and the bytes of the tensors the loaded model holds. */
  file_bytes: number;
  weight_bytes: number;
}

/** A record's fields that only some records have, null in the others. */
const NONE = {
  model: null,
  bytes: null,
  gzip_bytes: null,
  device: null,
  adapter: null,
  load_ms: null,
  ttft_ms: null,
  decode_tokens_per_s: null,
  tokens: null,
  file_bytes: null,
  weight_bytes: null,
  load_mb_per_s: null,
  other_load: null,
};

/**
 * The live processes of the chromium a run launched: this process's descendants, and any whose command line names
 * the run's profile folder (chromium's helper processes may leave the tree). Their CPU time is the run's own: read
 * before the browser closes, it goes into `own` (cpuCounters' helpers), so other_load counts only other programs.
 */
function chromiumProcesses(profile: string): number[] {
  const procs: { pid: number; ppid: number; cmd: string }[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      procs.push({ pid: Number(e), ppid, cmd: readFileSync(`/proc/${e}/cmdline`, 'utf8') });
    } catch {
      // exited meanwhile
    }
  }
  const ours = new Set([process.pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs)
      if (!ours.has(p.pid) && (ours.has(p.ppid) || p.cmd.includes(profile))) {
        ours.add(p.pid);
        grew = true;
      }
  }
  ours.delete(process.pid);
  return [...ours];
}

const withRate = (r: Run) => ({ ...r, load_mb_per_s: r.file_bytes / 1e6 / (r.load_ms / 1000) });

/** The page's side: a streamed load (with the weight files' bytes from its progress), then one greedy generation. */
const PAGE = `
import { loadModel } from '/retnet-web.js';
window.runBench = async (url, device, prompt, n) => {
  const files = {};
  const t0 = performance.now();
  const m = await loadModel(url, { device, onProgress: (p) => { files[p.file] = p.total; } });
  const t1 = performance.now();
  let first = 0, tokens = 0;
  for await (const ev of m.generate([{ prompt, maxNewTokens: n, sampling: { temperature: 0 }, ignoreEos: true }])) {
    if (ev.type !== 'token') continue;
    if (++tokens === 1) first = performance.now();
  }
  const end = performance.now();
  const info = m.device.info ? m.device.info.vendor + ' ' + m.device.info.architecture : m.device.name;
  const weight_bytes = m.memory().bytes;
  m.dispose();
  const file_bytes = Object.entries(files).filter(([f]) => f.endsWith('.safetensors')).reduce((a, [, b]) => a + b, 0);
  return { load_ms: t1 - t0, ttft_ms: first - t1, decode_tokens_per_s: ((tokens - 1) * 1000) / (end - first), tokens,
    file_bytes, weight_bytes, info };
};
`;

/** A model the suite measures: a preset with seeded weights in a dtype, and how many tokens to generate. */
interface BenchModel {
  what: string;
  preset: string;
  dtype: DType;
  tokens: number;
  devices: readonly ('webgpu' | 'cpu')[];
}

const MODELS: BenchModel[] = [
  { what: 'tiny demo model', preset: 'tiny', dtype: 'float32', tokens: 32, devices: ['webgpu', 'cpu'] },
  // Streamed loading of a larger 16-bit checkpoint (its Linear and Embedding weights stay bfloat16 on the device).
  { what: 'base preset, bfloat16', preset: 'base', dtype: 'bfloat16', tokens: 8, devices: ['webgpu'] },
];

/** `preset` with seeded weights in `dtype` (byte tokenizer), as a model directory. */
function writeModel(dir: string, m: BenchModel): void {
  if (m.preset === 'tiny' && m.dtype === 'float32') return writeDemoModel(dir);
  const tokenizer = new ByteTokenizer();
  const model = createModel('retnet', m.preset, { vocabSize: tokenizer.vocabSize }, { seed: 7, dtype: m.dtype });
  saveModelDir(dir, model, tokenizer);
  model.dispose();
}

async function nodeRun(dir: string, n: number): Promise<Run> {
  const t0 = performance.now();
  const { model, tokenizer } = loadModelDir(dir);
  const t1 = performance.now();
  let first = 0;
  let tokens = 0;
  for await (const ev of generate(model, tokenizer!, [
    { prompt: PROMPT, maxNewTokens: n, sampling: { temperature: 0 }, ignoreEos: true },
  ])) {
    if (ev.type !== 'token') continue;
    if (++tokens === 1) first = performance.now();
  }
  const end = performance.now();
  const weight_bytes = model.backend.memory.current;
  model.dispose();
  const file_bytes = statSync(join(dir, 'model.safetensors')).size;
  return {
    load_ms: t1 - t0,
    ttft_ms: first - t1,
    decode_tokens_per_s: ((tokens - 1) * 1000) / (end - first),
    tokens,
    file_bytes,
    weight_bytes,
  };
}

export async function webSuite(values: { quick: boolean }): Promise<void> {
  const records: BenchRecord[] = [];
  const entry = join(packageRoot(), 'src', 'web.ts');
  for (const minify of [false, true]) {
    const code = await bundleForBrowser(entry, minify);
    records.push({
      ...NONE,
      what: `bundle${minify ? ' (minified)' : ''}`,
      bytes: Buffer.byteLength(code),
      gzip_bytes: gzipSync(code).length,
    });
  }

  const bundle = await bundleForBrowser(entry, true);
  const models = values.quick ? [{ ...MODELS[0]!, tokens: 8 }] : MODELS;
  for (const m of models) {
    const dir = mkdtempSync(join(tmpdir(), 'retnet-bench-web-'));
    try {
      writeModel(dir, m);
      const site = await startStaticServer({
        routes: {
          '/': { type: 'text/html', body: '<!doctype html><script type="module" src="/page.js"></script>' },
          '/page.js': { type: 'text/javascript', body: PAGE },
          '/retnet-web.js': { type: 'text/javascript', body: bundle },
        },
        dirs: { '/model/': dir },
      });
      try {
        for (const device of m.devices) {
          process.stderr.write(`web: ${m.what} on ${device} in chromium\n`);
          const before = cpuCounters();
          const browser = await launchChromium();
          let r: Run & { info: string };
          let after: ReturnType<typeof cpuCounters> = null;
          try {
            const page = browser.context.pages()[0] ?? (await browser.context.newPage());
            await page.goto(`${site.url}/`);
            await page.waitForFunction(() => 'runBench' in window);
            r = (await page.evaluate(
              ([d, p, k]) =>
                (window as unknown as { runBench: (...a: unknown[]) => Promise<unknown> }).runBench('/model/', d, p, k),
              [device, PROMPT, m.tokens] as const,
            )) as Run & { info: string };
            after = cpuCounters(chromiumProcesses(browser.profile));
          } finally {
            await browser.close();
          }
          const { info, ...run } = r;
          records.push({
            ...NONE,
            what: `${m.what}, chromium`,
            model: `${m.preset} ${m.dtype}`,
            device,
            adapter: device === 'webgpu' ? `${info} (a CPU implementation)` : 'host (reference kernels, TypeScript)',
            ...withRate(run),
            other_load: otherLoad(before, after),
          });
        }
      } finally {
        await site.close();
      }
      const before = cpuCounters();
      const r = await nodeRun(dir, m.tokens);
      records.push({
        ...NONE,
        what: `${m.what}, Node`,
        model: `${m.preset} ${m.dtype}`,
        device: 'cpu',
        adapter: 'native addon (OpenBLAS)',
        ...withRate(r),
        other_load: otherLoad(before, cpuCounters()),
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  printTable('retnet/web: bundle size, and the models in chromium and in Node', records, [
    { key: 'what' },
    { key: 'bytes', header: 'bytes', digits: 0 },
    { key: 'gzip_bytes', header: 'gzip bytes', digits: 0 },
    { key: 'device' },
    { key: 'adapter' },
    { key: 'load_ms', header: 'load ms', digits: 0 },
    { key: 'ttft_ms', header: 'first token ms', digits: 0 },
    { key: 'decode_tokens_per_s', header: 'decode tok/s', digits: 1 },
    { key: 'file_bytes', header: 'file bytes', digits: 0 },
    { key: 'weight_bytes', header: 'tensor bytes', digits: 0 },
    { key: 'load_mb_per_s', header: 'load MB/s', digits: 1 },
    { key: 'other_load', header: 'other load', digits: 2 },
  ]);
  const { path } = writeResults('web', records);
  process.stdout.write(`\nwrote ${path}\n`);
}
