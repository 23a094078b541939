// Browser tests: Debian's chromium headless through playwright-core (examples/web/chromium.ts has the launcher and
// why its flags are what they are), on pages served from localhost (WebGPU needs a secure context). Each page gets a
// fresh profile, removed on close with the server. Also the Node side of the comparisons: the tiny demo model as a
// model directory, and its greedy generation in Node.
import { join } from 'node:path';

import type { Page } from 'playwright-core';

import { chromiumMissing, launchChromium } from '../examples/web/chromium.js';
import { bundleForBrowser, writeDemoModel } from '../examples/web/serve.js';
import { loadForGeneration } from '../src/cli/generate.js';
import { generate } from '../src/generate/generate.js';
import type { GenerationEvent, GenerationRequest } from '../src/generate/sequence.js';
import { type StaticSite, startStaticServer } from '../src/web/serve.js';
import { tempDir } from './temp.js';

export const ROOT = join(import.meta.dirname, '..');

/** Why browser tests cannot run here, or false when they can (for `describe(..., { skip })`). */
export function browserSkip(): string | false {
  // In CI (.ci/run installs chromium) a missing browser fails the browser tests instead of skipping them.
  if (process.env.CI) return false;
  return chromiumMissing() ?? false;
}

export const bundle = bundleForBrowser;

export interface OpenPage {
  page: Page;
  url: string;
  /** The page's console lines and uncaught errors, in order. */
  logs: string[];
  close(): Promise<void>;
}

/** Serves `site`, opens `path` in headless chromium and waits for the load event. */
export async function openPage(site: StaticSite, path = '/'): Promise<OpenPage> {
  const server = await startStaticServer(site);
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  const close = async () => {
    await browser?.close();
    await server.close();
  };
  try {
    browser = await launchChromium();
    const page = browser.context.pages()[0] ?? (await browser.context.newPage());
    const logs: string[] = [];
    page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(server.url + path);
    return { page, url: server.url, logs, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** The tiny demo model in a temporary model directory (removed at exit). */
export function tinyModelDir(): string {
  const dir = tempDir('retnet-web-tiny-');
  writeDemoModel(dir);
  return dir;
}

/**
 * Greedy tokens and text (the token events' and the end event's) in Node (the default device) for a model directory
 * and prompt, with the directory's end-of-text ids as `retnet generate` takes them.
 */
export async function nodeGreedy(
  dir: string,
  prompt: string,
  n: number,
  ignoreEos = false,
): Promise<{ tokens: number[]; text: string }> {
  const tokens: number[] = [];
  let text = '';
  for (const ev of await nodeEvents(dir, [{ prompt, maxNewTokens: n, sampling: { temperature: 0 }, ignoreEos }])) {
    if (ev.type === 'token') tokens.push(ev.token);
    text += ev.text;
  }
  return { tokens, text };
}

/** Every event of Node's generate() for a model directory, requests without eosIds taking the directory's. */
export async function nodeEvents(dir: string, requests: GenerationRequest[]): Promise<GenerationEvent[]> {
  const { model, tokenizer, eosIds } = loadForGeneration(dir);
  const events: GenerationEvent[] = [];
  try {
    for await (const ev of generate(
      model,
      tokenizer,
      requests.map((r) => ({ eosIds, ...r })),
    ))
      events.push(ev);
  } finally {
    model.dispose();
  }
  return events;
}
