// `retnet bench web [--quick]`: the browser build. Bundle size of retnet/web (esbuild, plain and minified, with gzip),
// and for the tiny demo model (`retnet demo`'s preset, seeded weights; speed does not depend on training) in headless
// Debian chromium: load time, time to first token (prefill of the prompt + the first sample) and decode tokens/s,
// on the webgpu device and on the page's host device ('cpu': the reference kernels in TypeScript), against the
// Node cpu device (the native addon) on the same model. On CI machines chromium's WebGPU adapter is SwiftShader, a
// CPU implementation: its figures say how this code runs on SwiftShader, nothing about a real GPU.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

import { launchChromium } from '../examples/web/chromium.js';
import { bundleForBrowser, writeDemoModel } from '../examples/web/serve.js';
import { packageRoot } from '../src/backend/cpu/load.js';
import { generate } from '../src/generate/generate.js';
import { loadModelDir } from '../src/io/model-dir.js';
import { startStaticServer } from '../src/web/serve.js';
import { type BenchRecord, cpuCounters, otherLoad, printTable, writeResults } from './lib.js';

const PROMPT = 'The jury said that the city';

interface Run {
  load_ms: number;
  ttft_ms: number;
  decode_tokens_per_s: number;
  tokens: number;
}

/** The page's side: load, then one greedy generation timed per token. */
const PAGE = `
import { loadModel } from '/retnet-web.js';
window.runBench = async (device, prompt, n) => {
  const t0 = performance.now();
  const m = await loadModel('/model/', { device });
  const t1 = performance.now();
  let first = 0, tokens = 0;
  for await (const ev of m.generate([{ prompt, maxNewTokens: n, sampling: { temperature: 0 } }])) {
    if (ev.type !== 'token') continue;
    if (++tokens === 1) first = performance.now();
  }
  const end = performance.now();
  const info = m.device.info ? m.device.info.vendor + ' ' + m.device.info.architecture : m.device.name;
  m.dispose();
  return { load_ms: t1 - t0, ttft_ms: first - t1, decode_tokens_per_s: ((tokens - 1) * 1000) / (end - first), tokens, info };
};
`;

async function nodeRun(dir: string, n: number): Promise<Run> {
  const t0 = performance.now();
  const { model, tokenizer } = loadModelDir(dir);
  const t1 = performance.now();
  let first = 0;
  let tokens = 0;
  for await (const ev of generate(model, tokenizer!, [
    { prompt: PROMPT, maxNewTokens: n, sampling: { temperature: 0 } },
  ])) {
    if (ev.type !== 'token') continue;
    if (++tokens === 1) first = performance.now();
  }
  const end = performance.now();
  model.dispose();
  return { load_ms: t1 - t0, ttft_ms: first - t1, decode_tokens_per_s: ((tokens - 1) * 1000) / (end - first), tokens };
}

export async function webSuite(values: { quick: boolean }): Promise<void> {
  const n = values.quick ? 8 : 32;
  const records: BenchRecord[] = [];
  const entry = join(packageRoot(), 'src', 'web.ts');
  for (const minify of [false, true]) {
    const code = await bundleForBrowser(entry, minify);
    const bytes = Buffer.byteLength(code);
    records.push({
      what: `bundle${minify ? ' (minified)' : ''}`,
      bytes,
      gzip_bytes: gzipSync(code).length,
      device: null,
      adapter: null,
      load_ms: null,
      ttft_ms: null,
      decode_tokens_per_s: null,
      tokens: null,
      other_load: null,
    });
  }

  const dir = mkdtempSync(join(tmpdir(), 'retnet-bench-web-'));
  try {
    writeDemoModel(dir);
    const bundle = await bundleForBrowser(entry, true);
    const site = await startStaticServer({
      routes: {
        '/': { type: 'text/html', body: '<!doctype html><script type="module" src="/page.js"></script>' },
        '/page.js': { type: 'text/javascript', body: PAGE },
        '/retnet-web.js': { type: 'text/javascript', body: bundle },
      },
      dirs: { '/model/': dir },
    });
    try {
      for (const device of ['webgpu', 'cpu'] as const) {
        process.stderr.write(`web: tiny demo model on ${device} in chromium\n`);
        const before = cpuCounters();
        const browser = await launchChromium();
        let r: Run & { info: string };
        try {
          const page = browser.context.pages()[0] ?? (await browser.context.newPage());
          await page.goto(`${site.url}/`);
          await page.waitForFunction(() => 'runBench' in window);
          r = (await page.evaluate(
            ([d, p, k]) => (window as unknown as { runBench: (...a: unknown[]) => Promise<unknown> }).runBench(d, p, k),
            [device, PROMPT, n] as const,
          )) as Run & { info: string };
        } finally {
          await browser.close(); // chromium's CPU time counts as this process's children's once it has exited
        }
        const { info, ...run } = r;
        records.push({
          what: 'tiny demo model, chromium',
          bytes: null,
          gzip_bytes: null,
          device,
          adapter: device === 'webgpu' ? `${info} (a CPU implementation)` : 'host (reference kernels, TypeScript)',
          ...run,
          other_load: otherLoad(before, cpuCounters()),
        });
      }
    } finally {
      await site.close();
    }
    const before = cpuCounters();
    const r = await nodeRun(dir, n);
    records.push({
      what: 'tiny demo model, Node',
      bytes: null,
      gzip_bytes: null,
      device: 'cpu',
      adapter: 'native addon (OpenBLAS)',
      ...r,
      other_load: otherLoad(before, cpuCounters()),
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  printTable('retnet/web: bundle size, and the tiny demo model in chromium and in Node', records, [
    { key: 'what' },
    { key: 'bytes', header: 'bytes', digits: 0 },
    { key: 'gzip_bytes', header: 'gzip bytes', digits: 0 },
    { key: 'device' },
    { key: 'adapter' },
    { key: 'load_ms', header: 'load ms', digits: 0 },
    { key: 'ttft_ms', header: 'first token ms', digits: 0 },
    { key: 'decode_tokens_per_s', header: 'decode tok/s', digits: 1 },
    { key: 'other_load', header: 'other load', digits: 2 },
  ]);
  const { path } = writeResults('web', records);
  process.stdout.write(`\nwrote ${path}\n`);
}
