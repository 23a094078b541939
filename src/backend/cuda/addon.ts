// Loads the CUDA addon (build/Release/retnet_cuda.node, built by scripts/cuda/build.mjs when a CUDA toolkit and
// cuBLAS are found). A missing addon or a machine without a CUDA device is not an error until the cuda device is
// asked for: `cudaUnavailableReason` says why. Device pointers are JavaScript numbers.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { packageRoot } from '../cpu/load.js';

type Ptr = number;
type Arg = number | boolean | Float64Array | Int32Array | ArrayBufferView | readonly number[];

/** The functions exported by native/cuda/addon.cc (argument order in each function's comment there). */
export interface CudaAddon {
  available(): string | null;
  info(): CudaInfo;
  alloc(bytes: number): Ptr;
  free(p: Ptr): void;
  memory(): CudaMemory;
  emptyCache(): void;
  synchronize(): void;
  /** Starts capturing what is queued into a graph (nothing runs until a replay). */
  graphBegin(): void;
  /** Ends the capture: the graph's id when `keep`, else 0 (discarded). */
  graphEnd(keep: boolean): number;
  graphLaunch(id: number): void;
  /** Frees the graph; returns the bytes of the blocks it held (back in the cache). */
  graphDestroy(id: number): number;
  /** Starts or stops the profiler's collection range (ncu --profile-from-start off). */
  profile(on: boolean): void;
  write(p: Ptr, data: ArrayBufferView): void;
  read(p: Ptr, out: ArrayBufferView): void;
  readAsync(p: Ptr, bytes: number): Promise<ArrayBuffer>;
  copy(dst: Ptr, src: Ptr, bytes: number): void;
  fill(p: Ptr, value: number, n: number): void;
  convert(from: number, x: Ptr, to: number, out: Ptr, n: number): void;
  /** out [2n] 16-bit (dtype code `to`) = hi then lo with x ≈ hi + lo. */
  split16(x: Ptr, to: number, out: Ptr, n: number): void;
  crossEntropy(...args: Arg[]): number;
  embedding(...args: Arg[]): number;
  sumSquares(x: Ptr, n: number): number;
  retentionWorkspace(
    kernel: number, B: number, H: number, T: number, K: number, V: number, C: number, tensorCores: boolean,
  ): number; // prettier-ignore
  attentionWorkspace(kernel: number, B: number, H: number, T: number, K: number, V: number): number;
  gemm(...args: Arg[]): void;
  /** gemv16(dtype, x, w, y, M, N, K): false when the shape does not suit it (nothing ran). */
  gemv16(...args: Arg[]): boolean;
  binary(...args: Arg[]): void;
  scale(...args: Arg[]): void;
  sumRows(...args: Arg[]): void;
  activation(...args: Arg[]): void;
  activationBackward(...args: Arg[]): void;
  rmsNorm(...args: Arg[]): void;
  rmsNormBackward(...args: Arg[]): void;
  gatedRmsNorm(...args: Arg[]): void;
  gatedRmsNormBackward(...args: Arg[]): void;
  layerNorm(...args: Arg[]): void;
  layerNormBackward(...args: Arg[]): void;
  softmax(...args: Arg[]): void;
  softmaxBackward(...args: Arg[]): void;
  crossEntropyBackward(...args: Arg[]): void;
  embeddingBackward(...args: Arg[]): void;
  permute(...args: Arg[]): void;
  copyBlocks(...args: Arg[]): void;
  adamw(...args: Arg[]): void;
  rotary(...args: Arg[]): void;
  retentionForward(...args: Arg[]): void;
  retentionBackward(...args: Arg[]): void;
  retentionStep(...args: Arg[]): void;
  attentionForward(...args: Arg[]): void;
  attentionBackward(...args: Arg[]): void;
  attentionDecode(...args: Arg[]): void;
}

export interface CudaInfo {
  name: string;
  computeCapability: string;
  multiprocessors: number;
  memoryBytes: number;
  l2Bytes: number;
  /** CUDA versions as 1000·major + 10·minor. */
  driver: number;
  runtime: number;
  cublas: number;
  compiledFor: string;
}

export interface CudaMemory {
  /** Bytes of live blocks (tensors' bytes rounded up to the allocator's 512-byte granule). */
  liveBytes: number;
  /** Freed blocks kept for reuse. */
  cachedBytes: number;
  /** Blocks held by captured graphs: the intermediates their replays write. */
  graphBytes: number;
  /** live + cached + graph: everything taken from cudaMalloc. */
  reservedBytes: number;
  peakReservedBytes: number;
  mallocs: number;
}

let loaded: { addon: CudaAddon | null; error: string | null } | null = null;

/** The addon when it loads and sees a device, else null with the reason. RETNET_CUDA_ADDON names another build. */
export function loadCudaAddon(): { addon: CudaAddon | null; error: string | null } {
  if (loaded) return loaded;
  const path = process.env.RETNET_CUDA_ADDON || join(packageRoot(), 'build', 'Release', 'retnet_cuda.node');
  if (!existsSync(path))
    loaded = { addon: null, error: `CUDA addon not built (${path} missing: needs a CUDA toolkit and cuBLAS)` };
  else
    try {
      const addon = createRequire(import.meta.url)(path) as CudaAddon;
      const why = addon.available();
      loaded = why === null ? { addon, error: null } : { addon: null, error: why };
    } catch (e) {
      loaded = { addon: null, error: `CUDA addon failed to load: ${(e as Error).message}` };
    }
  return loaded;
}
