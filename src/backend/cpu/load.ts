// Loads the cpu device's addon (build target retnet_cpu of binding.gyp), built by node-gyp at install. A missing or
// unloadable addon is not fatal: the caller falls back to the reference device and reports the reason once.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { CpuAddon } from './addon.js';

/** The package root (the folder holding this package's package.json), from either src/ (tsx) or dist/src/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'retnet') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('retnet: cannot find the package root');
    dir = up;
  }
}

/** Loads build/Release/retnet_cpu.node, or the file RETNET_ADDON names (to test another build or the fallback). */
export function loadAddon(): { addon: CpuAddon | null; error: string | null } {
  const path = process.env.RETNET_ADDON || join(packageRoot(), 'build', 'Release', 'retnet_cpu.node');
  if (!existsSync(path)) return { addon: null, error: `cpu addon not built (${path} missing)` };
  // Our OpenMP kernels and OpenBLAS's own threads take turns on the same cores. With libgomp's default, threads spin
  // for a while after each parallel region and steal the cores OpenBLAS (or another process) needs next: a training
  // step of the tiny preset measured 12x slower on a busy 2-core machine. Passive waiting sleeps at once instead.
  // libgomp reads the variable when the addon loads it, so it is set here unless the user chose a policy.
  process.env.OMP_WAIT_POLICY ??= 'passive';
  try {
    const require = createRequire(import.meta.url);
    return { addon: require(path) as CpuAddon, error: null };
  } catch (e) {
    return {
      addon: null,
      error: `cpu addon failed to load: ${(e as Error).message}`,
    };
  }
}
