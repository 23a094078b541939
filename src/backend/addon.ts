// Loads the native addon built by node-gyp at install. Missing or unloadable addon is not fatal: the caller falls back
// to the reference backend and reports the reason once.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The functions exported by native/*.cc (see each file for the argument order). */
export interface NativeAddon {
  sgemm(...args: (boolean | number | Float32Array)[]): void;
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, n: number, m: number): void;
  scale(a: Float32Array, out: Float32Array, alpha: number, n: number): void;
  sumRows(g: Float32Array, out: Float32Array, rows: number, m: number): void;
  activation(kind: number, x: Float32Array, out: Float32Array, n: number): void;
  activationBackward(kind: number, x: Float32Array, g: Float32Array, dx: Float32Array, n: number): void;
  rmsNorm(...args: (boolean | number | Float32Array)[]): void;
  rmsNormBackward(...args: (boolean | number | Float32Array)[]): void;
  layerNorm(...args: (number | Float32Array)[]): void;
  layerNormBackward(...args: (number | Float32Array)[]): void;
  softmax(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  softmaxBackward(y: Float32Array, g: Float32Array, dx: Float32Array, rows: number, cols: number): void;
  crossEntropy(...args: (number | Float32Array | Int32Array)[]): void;
  crossEntropyBackward(...args: (number | Float32Array | Int32Array)[]): void;
  embedding(...args: (number | Float32Array | Int32Array)[]): void;
  embeddingBackward(...args: (number | Float32Array | Int32Array)[]): void;
  permute(x: Float32Array | Int32Array, out: Float32Array | Int32Array, shape: Int32Array, perm: Int32Array): void;
  copyBlocks(...args: (number | Float32Array)[]): void;
  adamw(...args: (number | Float32Array)[]): void;
  sumSquares(xs: Float32Array[]): number;
  dropoutMask(out: Float32Array, n: number, rowSize: number, p: number, seed: number): void;
  retentionParallel(...args: (boolean | number | Float32Array | Float64Array)[]): void;
  retentionChunkwise(...args: (boolean | number | Float32Array | Float64Array)[]): void;
  retentionBackwardParallel(...args: (number | Float32Array | Float64Array)[]): void;
  retentionBackwardChunkwise(...args: (number | Float32Array | Float64Array)[]): void;
  retentionStep(...args: (boolean | number | Float32Array | Float64Array)[]): void;
  retentionWorkspace(kernel: number, B: number, H: number, T: number, K: number, V: number, C: number): number;
  rotary(...args: (boolean | number | Float32Array)[]): void;
  attentionNaive(...args: (number | Float32Array)[]): void;
  attentionNaiveBackward(...args: (number | Float32Array)[]): void;
  attentionFlash(...args: (number | Float32Array)[]): void;
  attentionFlashBackward(...args: (number | Float32Array)[]): void;
  attentionDecode(...args: (number | Float32Array | Int32Array)[]): void;
  attentionWorkspace(kernel: number, B: number, H: number, T: number, V: number): number;
  setThreads(n: number): void;
  info(): NativeInfo;
  [kernel: string]: unknown;
}

export interface NativeInfo {
  blas: string;
  blasConfig: string;
  blasCoreType: string;
  blasThreads: number;
  threads: number;
  openmp: number;
  compiler: string;
  avx512: boolean;
  avx2: boolean;
}

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

/** Loads build/Release/retnet_native.node, or the file RETNET_ADDON names (to test another build or the fallback). */
export function loadAddon(): { addon: NativeAddon | null; error: string | null } {
  const path = process.env.RETNET_ADDON || join(packageRoot(), 'build', 'Release', 'retnet_native.node');
  if (!existsSync(path)) return { addon: null, error: `native addon not built (${path} missing)` };
  // Our OpenMP kernels and OpenBLAS's own threads take turns on the same cores. With libgomp's default, threads spin
  // for a while after each parallel region and steal the cores OpenBLAS (or another process) needs next: a training
  // step of the tiny preset measured 12x slower on a busy 2-core machine. Passive waiting sleeps at once instead.
  // libgomp reads the variable when the addon loads it, so it is set here unless the user chose a policy.
  process.env.OMP_WAIT_POLICY ??= 'passive';
  try {
    const require = createRequire(import.meta.url);
    return { addon: require(path) as NativeAddon, error: null };
  } catch (e) {
    return {
      addon: null,
      error: `native addon failed to load: ${(e as Error).message}`,
    };
  }
}
