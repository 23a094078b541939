// Loads the cpu device's addon (binding.gyp): prebuilt (prebuilds/, scripts/prebuild.mjs) or built by node-gyp at
// install. A missing or unloadable addon is not fatal: the caller falls back to the reference device and reports the
// reason once.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BackendError } from '../../errors.js';
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

/** What node-gyp-build (the loader of prebuilt binaries) exports: `resolve(dir)` finds the file for this platform. */
interface NodeGypBuild {
  resolve(dir: string): string;
}

/**
 * The baseline build of the addon: RETNET_ADDON, else a source build (build/Release/retnet_cpu.node, as
 * `npm install` makes when no prebuilt binary fits or `npm rebuild retnet --build-from-source`), else the prebuilt
 * binary for this platform (prebuilds/<platform>-<arch>/, chosen by node-gyp-build). Returns the path or why none.
 */
function baselinePath(): { path: string } | { error: string } {
  const explicit = process.env.RETNET_ADDON;
  if (explicit)
    return existsSync(explicit)
      ? { path: explicit }
      : { error: `cpu addon not built (RETNET_ADDON names ${explicit}, which is missing)` };
  const root = packageRoot();
  const built = join(root, 'build', 'Release', 'retnet_cpu.node');
  if (existsSync(built)) return { path: built };
  try {
    const found = (createRequire(import.meta.url)('node-gyp-build') as NodeGypBuild).resolve(root);
    // node-gyp-build also answers with any other .node under build/Release (the cuda addon's): only prebuilds count.
    if (relative(join(root, 'prebuilds'), found).startsWith('..')) throw new Error(`found only ${found}`);
    return { path: found };
  } catch (e) {
    const why = (e as Error).message.split('\n')[0]!.trim();
    return { error: `cpu addon not built (no ${built}, and no prebuilt binary fits: ${why})` };
  }
}

/** RETNET_CPU_VARIANT: which build to load, 'auto' (default: avx2 when the CPU has x86-64-v3), 'baseline' or 'avx2'. */
function variantChoice(): 'auto' | 'baseline' | 'avx2' {
  const v = process.env.RETNET_CPU_VARIANT || 'auto';
  if (v === 'auto' || v === 'baseline' || v === 'avx2') return v;
  throw new BackendError(`RETNET_CPU_VARIANT must be auto, baseline or avx2, got '${v}'`);
}

/**
 * Loads the cpu addon: the baseline build (see baselinePath), then, when the CPU has x86-64-v3 and the avx2 build
 * sits beside it (avx2/retnet_cpu_avx2.node in the same folder, binding.gyp), that one instead. Both are the same kernels compiled for
 * different instruction sets; `info().variant` says which one runs.
 */
export function loadAddon(): { addon: CpuAddon | null; error: string | null; path: string | null } {
  const choice = variantChoice();
  const base = baselinePath();
  if ('error' in base) return { addon: null, error: base.error, path: null };
  // Our OpenMP kernels and OpenBLAS's own threads take turns on the same cores. With libgomp's default, threads spin
  // for a while after each parallel region and steal the cores OpenBLAS (or another process) needs next: a training
  // step of the tiny preset measured 12x slower on a busy 2-core machine. Passive waiting sleeps at once instead.
  // libgomp reads the variable when the addon loads it, so it is set here unless the user chose a policy.
  process.env.OMP_WAIT_POLICY ??= 'passive';
  const require = createRequire(import.meta.url);
  let path = base.path;
  try {
    const baseline = require(path) as CpuAddon;
    if (choice === 'baseline') return { addon: baseline, error: null, path };
    const avx2 = join(dirname(path), 'avx2', 'retnet_cpu_avx2.node');
    const cpuHasV3 = baseline.info().cpuX86_64V3 === true;
    if (choice === 'avx2' && !cpuHasV3)
      return {
        addon: null,
        error: 'RETNET_CPU_VARIANT=avx2, but this CPU lacks x86-64-v3 (AVX2, FMA, F16C, BMI2)',
        path: null,
      };
    if (choice === 'avx2' && !existsSync(avx2))
      return { addon: null, error: `RETNET_CPU_VARIANT=avx2, but ${avx2} is missing`, path: null };
    if (!cpuHasV3 || !existsSync(avx2)) return { addon: baseline, error: null, path };
    path = avx2;
    return { addon: require(path) as CpuAddon, error: null, path };
  } catch (e) {
    return {
      addon: null,
      error: `cpu addon ${path} failed to load: ${(e as Error).message.split('\n')[0]}`,
      path: null,
    };
  }
}
