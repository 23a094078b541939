// Browser tests: Debian's chromium (apt package `chromium`; .ci/run installs it) driven by playwright-core, headless,
// on pages served from localhost (WebGPU needs a secure context). Nothing downloads a browser. Each page gets a fresh
// user-data-dir, removed on close with the server.
//
// Flags: the closed-network set (without the background-networking ones Chromium keeps connecting out) plus
// --enable-unsafe-webgpu. That one flag is all WebGPU needs here: Chromium 156 then exposes SwiftShader's adapter
// (vendor 'google', architecture 'swiftshader'; features include subgroups, not shader-f16). Checked: adding
// --enable-features=Vulkan, --use-angle=swiftshader or --use-webgpu-adapter=swiftshader gives the same adapter, and
// about:blank has no navigator.gpu at all (not a secure context), so pages come from http://localhost.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { build } from 'esbuild';
import { type Page, chromium } from 'playwright-core';

import { type RunningStatic, type StaticSite, startStaticServer } from '../src/web/serve.js';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--enable-unsafe-webgpu',
];

export const ROOT = join(import.meta.dirname, '..');

/** Why browser tests cannot run here, or false when they can (for `it(..., { skip })`). */
export function browserSkip(): string | false {
  return existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium; .ci/run does)`;
}

/** An ES module bundle of `entry` for the browser (esbuild), as text. */
export async function bundle(entry: string): Promise<string> {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

export interface OpenPage {
  page: Page;
  url: string;
  /** The page's console lines and uncaught errors, in order. */
  logs: string[];
  close(): Promise<void>;
}

/** Serves `site`, opens `path` in headless chromium and waits for the load event. */
export async function openPage(site: StaticSite, path = '/'): Promise<OpenPage> {
  const server: RunningStatic = await startStaticServer(site);
  const profile = mkdtempSync(join(tmpdir(), 'retnet-chromium-'));
  const cleanup = async (ctx?: { close(): Promise<void> }) => {
    await ctx?.close();
    await server.close();
    rmSync(profile, { recursive: true, force: true });
  };
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: 1000, height: 760 },
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const logs: string[] = [];
    page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(server.url + path);
    const ctx = context;
    return { page, url: server.url, logs, close: () => cleanup(ctx) };
  } catch (e) {
    await cleanup(context);
    throw e;
  }
}
