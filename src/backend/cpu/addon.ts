// The TypeScript <-> addon contract of the cpu device, in one file: the functions native/cpu/*.cc export (argument
// order as in each file's comment) and the codes both sides use for kernel kinds, ops and workspace kinds. The codes
// are defined here only: scripts/gen-native-codes.ts writes them into native/common/codes.h (a test checks that the
// header is current), so C++ and TypeScript name the same numbers.

import type { ActivationKind, BinaryOp } from '../kernels.js';

export const BINARY_OP = { add: 0, mul: 1 } as const satisfies Record<BinaryOp, number>;
export const ACTIVATION = { gelu: 0, silu: 1, relu: 2 } as const satisfies Record<ActivationKind, number>;
/** Which retention kernel a workspace size is asked for (retentionWorkspace). */
export const RETENTION_WORK = {
  parallelForward: 0,
  chunkwiseForward: 1,
  parallelBackward: 2,
  chunkwiseBackward: 3,
} as const;
/** Which attention kernel a workspace size is asked for (attentionWorkspace). */
export const ATTENTION_WORK = {
  naiveForward: 0,
  naiveBackward: 1,
  flashForward: 2,
  flashBackward: 3,
  decode: 4,
} as const;

/** Every code table, by the name of the C++ enum it becomes. */
export const ADDON_CODES = {
  BinaryOp: BINARY_OP,
  Activation: ACTIVATION,
  RetentionWork: RETENTION_WORK,
  AttentionWork: ATTENTION_WORK,
} as const;

type Code<T> = T[keyof T];
type F32 = Float32Array;
type F64 = Float64Array;
type I32 = Int32Array;

/** The functions exported by native/cpu/*.cc. */
export interface CpuAddon {
  // prettier-ignore
  sgemm(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: F32, offA: number, lda: number, strideA: number, B: F32, offB: number, ldb: number, strideB: number,
    beta: number, C: F32, offC: number, ldc: number, strideC: number, batch: number,
  ): void;
  binary(op: Code<typeof BINARY_OP>, a: F32, b: F32, out: F32, n: number, m: number): void;
  scale(a: F32, out: F32, alpha: number, n: number): void;
  sumRows(g: F32, out: F32, rows: number, m: number): void;
  activation(kind: Code<typeof ACTIVATION>, x: F32, out: F32, n: number): void;
  activationBackward(kind: Code<typeof ACTIVATION>, x: F32, g: F32, dx: F32, n: number): void;
  rmsNorm(x: F32, w: F32, y: F32, rstd: F32, rows: number, cols: number, eps: number, hasWeight: boolean): void;
  // prettier-ignore
  rmsNormBackward(
    x: F32, w: F32, rstd: F32, g: F32, dx: F32, dw: F32, rows: number, cols: number, hasWeight: boolean,
  ): void;
  // prettier-ignore
  gatedRmsNorm(
    x: F32, gate: F32, w: F32, y: F32, rstd: F32, rows: number, cols: number, eps: number, hasWeight: boolean,
  ): void;
  // prettier-ignore
  gatedRmsNormBackward(
    x: F32, gate: F32, w: F32, rstd: F32, g: F32, dx: F32, dgate: F32, dw: F32, rows: number, cols: number,
    hasWeight: boolean,
  ): void;
  softmax(x: F32, y: F32, rows: number, cols: number): void;
  softmaxBackward(y: F32, g: F32, dx: F32, rows: number, cols: number): void;
  crossEntropy(logits: F32, targets: I32, loss: F32, lse: F32, N: number, V: number, ignoreIndex: number): void;
  // prettier-ignore
  crossEntropyBackward(
    logits: F32, targets: I32, lse: F32, g: F32, dx: F32, N: number, V: number, ignoreIndex: number,
  ): void;
  embedding(table: F32, ids: I32, out: F32, n: number, D: number, V: number): void;
  embeddingBackward(g: F32, ids: I32, out: F32, n: number, D: number, V: number): void;
  permute(x: F32, out: F32, shape: I32, perm: I32): void;
  // prettier-ignore
  copyBlocks(
    src: F32, srcOff: number, srcStride: number, dst: F32, dstOff: number, dstStride: number, blocks: number,
    len: number,
  ): void;
  // prettier-ignore
  adamw(
    param: F32, grad: F32, m: F32, v: F32, n: number, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, step: number, gradScale: number,
  ): void;
  /** Σ x² over every element of every array (one call for the global gradient norm). */
  sumSquares(xs: F32[]): number;
  dropout(x: F32, out: F32, n: number, rowSize: number, p: number, seed: number): void;
  // prettier-ignore
  retentionParallel(
    q: F32, k: F32, v: F32, gammas: F64, o: F32, r: F32, ws: F32, initState: F32, initScale: F32, finalState: F32,
    finalScale: F32, segments: F64, B: number, H: number, T: number, K: number, V: number, normalize: boolean,
  ): void;
  // prettier-ignore
  retentionChunkwise(
    q: F32, k: F32, v: F32, gammas: F64, o: F32, r: F32, ws: F32, initState: F32, initScale: F32, finalState: F32,
    finalScale: F32, segments: F64, B: number, H: number, T: number, K: number, V: number, normalize: boolean,
    C: number,
  ): void;
  // prettier-ignore
  retentionBackwardParallel(
    q: F32, k: F32, v: F32, gammas: F64, r: F32, dO: F32, dq: F32, dk: F32, dv: F32, ws: F32,
    B: number, H: number, T: number, K: number, V: number,
  ): void;
  // prettier-ignore
  retentionBackwardChunkwise(
    q: F32, k: F32, v: F32, gammas: F64, r: F32, dO: F32, dq: F32, dk: F32, dv: F32, ws: F32,
    B: number, H: number, T: number, K: number, V: number, C: number,
  ): void;
  /** state: float32, or float16 bits (read as float32, stored rounded). */
  // prettier-ignore
  retentionStep(
    q: F32, k: F32, v: F32, gammas: F64, state: F32 | Uint16Array, scale: F32, o: F32, B: number, H: number, K: number,
    V: number, normalize: boolean,
  ): void;
  /** Floats of scratch the retention kernel `kind` needs. */
  // prettier-ignore
  retentionWorkspace(
    kind: Code<typeof RETENTION_WORK>, B: number, H: number, T: number, K: number, V: number, C: number,
  ): number;
  // prettier-ignore
  rotary(
    x: F32, cos: F32, sin: F32, y: F32, B: number, T: number, H: number, K: number, perBatch: boolean,
    halves: boolean, inverse: boolean,
  ): void;
  // prettier-ignore
  attentionNaive(q: F32, k: F32, v: F32, o: F32, p: F32, B: number, H: number, T: number, K: number, V: number): void;
  // prettier-ignore
  attentionNaiveBackward(
    q: F32, k: F32, v: F32, p: F32, dO: F32, dq: F32, dk: F32, dv: F32, ws: F32,
    B: number, H: number, T: number, K: number, V: number,
  ): void;
  // prettier-ignore
  attentionFlash(
    q: F32, k: F32, v: F32, o: F32, lse: F32, ws: F32, B: number, H: number, T: number, K: number, V: number,
  ): void;
  // prettier-ignore
  attentionFlashBackward(
    q: F32, k: F32, v: F32, o: F32, lse: F32, dO: F32, dq: F32, dk: F32, dv: F32, ws: F32,
    B: number, H: number, T: number, K: number, V: number,
  ): void;
  // prettier-ignore
  attentionDecode(
    q: F32, kCache: F32, vCache: F32, lengths: I32, o: F32, ws: F32, B: number, H: number, C: number, K: number,
    V: number,
  ): void;
  /** Floats of scratch the attention kernel `kind` needs (T is the cache capacity for decode). */
  attentionWorkspace(kind: Code<typeof ATTENTION_WORK>, B: number, H: number, T: number, V: number): number;
  setThreads(n: number): void;
  info(): CpuAddonInfo;
}

export interface CpuAddonInfo {
  blas: string;
  blasConfig: string;
  blasCoreType: string;
  blasThreads: number;
  threads: number;
  openmp: number;
  compiler: string;
  /** The build of binding.gyp: 'baseline' (x86-64, or the architecture's default) or 'avx2' (x86-64-v3). */
  variant: 'baseline' | 'avx2';
  /** Whether the CPU has x86-64-v3 (AVX2, FMA, F16C, BMI2), the instructions the avx2 build may use. */
  cpuX86_64V3: boolean;
}
