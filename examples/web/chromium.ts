// Headless Debian chromium for the page (browser tests, `npm run bench -- web`): playwright-core drives
// /usr/bin/chromium (apt package `chromium`; .ci/run installs it); nothing downloads a browser.
//
// Flags: the closed-network set (without the background-networking ones Chromium keeps connecting out) plus
// --enable-unsafe-webgpu. That one flag is all WebGPU needs here: Chromium 156 then exposes SwiftShader's adapter
// (vendor 'google', architecture 'swiftshader'; features include subgroups, not shader-f16). Checked: adding
// --enable-features=Vulkan, --use-angle=swiftshader or --use-webgpu-adapter=swiftshader gives the same adapter, and
// about:blank has no navigator.gpu at all (not a secure context), so pages come from http://localhost.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { type BrowserContext, chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--enable-unsafe-webgpu',
];

/** Why chromium cannot run here, or null when it can. */
export function chromiumMissing(): string | null {
  return existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing (apt-get install chromium; .ci/run does)`;
}

/** A headless chromium with a fresh profile; `close()` ends it and removes the profile. */
export async function launchChromium(): Promise<{ context: BrowserContext; profile: string; close(): Promise<void> }> {
  const missing = chromiumMissing();
  if (missing) throw new Error(missing);
  const profile = mkdtempSync(join(tmpdir(), 'retnet-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      // Chromium's crash reporter keeps its database under $XDG_CONFIG_HOME/chromium ("Crash Reports"), outside the
      // profile: pointed into the profile, it goes with it.
      env: { ...process.env, XDG_CONFIG_HOME: profile },
      viewport: { width: 1000, height: 760 },
    });
    return {
      context,
      profile,
      close: async () => {
        await context.close();
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
}
