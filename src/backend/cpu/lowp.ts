// The cpu device's products with weights held in a storage dtype (bfloat16, float16, qint8, qint4: src/tensor/dtype.ts):
// matmul(x, W, false, true) for x [R, K] float32 and W [N, K] (a Linear's weight), registered in the kernel table for
// the weight's dtype, so linear() picks these by W's dtype. Up to DECODE_ROWS rows of x (a decode step of up to 16
// sequences) take the bandwidth-bound kernels of native/cpu/lowp.h, which read W once in its stored format; more rows
// (prefill, large decode batches) convert W to float32 a tile of rows at a time and hand each tile to sgemm, one part
// of W's rows per thread (lowp.h tiledProduct), so a float copy of W never exists whole. Other layouts (the gradient of x, a product of two 16-bit tensors) compute through float32 copies,
// as the kernel table's cast fallback does.

import { type DType, isQuantized, quantParts } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { HostDevice } from '../host/device.js';
import { throughFloat32 } from '../host/stored.js';
import { type Kernels, kernelsOf } from '../kernels.js';
import type { CpuAddon } from './addon.js';

/** Rows of x up to which the decode kernels run (the decode batch, 1 to 16). */
export const DECODE_ROWS = 16;

/** The weight dtypes these kernels read, with native/cpu/lowp.h's Format code of each. */
export const LOWP_FORMAT: Partial<Record<DType, number>> = {
  float32: 0,
  bfloat16: 1,
  qint8: 2,
  qint4: 3,
  float16: 4,
};
export const LOWP_DTYPES: DType[] = ['bfloat16', 'float16', 'qint8', 'qint4'];

type Args = (number | ArrayBufferView)[];

/** The functions of native/cpu/lowp_addon.cc (see there for the argument order). */
export interface LowpAddon {
  lowpGemv(...args: Args): void;
  lowpGemvShared(...args: Args): void;
  lowpTiled(...args: Args): void;
  lowpTiledFloats(N: number, K: number): number;
  lowpWorkspace(format: number, isa: number, B: number, K: number): number;
  lowpVariants(): Record<string, string[]>;
  lowpBest(): Record<string, string>;
  streamRead(bytes: Uint8Array, threads: number): number;
}

export function lowpAddon(addon: CpuAddon): LowpAddon {
  return addon as unknown as LowpAddon;
}

/** The scales argument of a weight format without scales (float32, the 16-bit floats). */
export const NO_SCALES = new Uint8Array(0);

/** W's stored bytes as the native functions take them: the data (codes) and the scales (empty for 16-bit floats). */
export function weightParts(device: HostDevice, w: Tensor): { data: ArrayBufferView; scales: ArrayBufferView } {
  const raw = device.raw(w);
  if (!isQuantized(w.dtype)) return { data: raw, scales: NO_SCALES };
  const bytes = raw as Uint8Array;
  const [scales, codes] = quantParts(w.dtype, w.shape);
  return {
    scales: bytes.subarray(scales!.offset, scales!.offset + scales!.bytes),
    data: bytes.subarray(codes!.offset, codes!.offset + codes!.bytes),
  };
}

/** yd [R, N] = xd [R, K] · Wᵀ by the decode kernels (R ≤ DECODE_ROWS), W [N, K] in `format` as weightParts gives it. */
export function decodeProduct(
  _device: HostDevice, // (the scratch below replaced a tensor of the device; kept for the callers)
  lowp: LowpAddon,
  format: number,
  isa: number,
  N: number,
  K: number,
  R: number,
  data: ArrayBufferView,
  scales: ArrayBufferView,
  xd: Float32Array,
  yd: Float32Array,
): void {
  lowp.lowpGemv(format, isa, N, K, R, data, scales, xd, yd, workspace(workspaceBytes(lowp, format, isa, R, K)));
}

/**
 * lowpWorkspace's bytes for each (format, isa, rows, K) a product has asked for: the answer depends on nothing else,
 * and a step asked it once per product (193 native calls a 1.3B step).
 */
const workspaceSizes = new Map<number, number>();
function workspaceBytes(lowp: LowpAddon, format: number, isa: number, R: number, K: number): number {
  const key = ((K * (DECODE_ROWS + 1) + R) * 8 + isa + 1) * 8 + format;
  let bytes = workspaceSizes.get(key);
  if (bytes === undefined) workspaceSizes.set(key, (bytes = lowp.lowpWorkspace(format, isa, R, K)));
  return bytes;
}

/**
 * The prepared copy of x of every decode product, in one buffer that grows to the largest a product has needed (the
 * native code overwrites every byte it reads, and products run one at a time on this thread): a decode step makes
 * ~7 products per layer, and a fresh zeroed tensor for each was allocation, zeroing and disposal on the step's path.
 */
let scratch = new Uint8Array(0);
function workspace(bytes: number): Uint8Array {
  if (scratch.byteLength < bytes) scratch = new Uint8Array(Math.max(bytes, 2 * scratch.byteLength));
  return scratch;
}

/**
 * y [R, N] = x [R, K] · Wᵀ for x float32 and W [N, K] in `format`, with the variant `isa` (-1: the fastest this CPU
 * has; tests name the others).
 */
export function lowpProduct(device: HostDevice, addon: CpuAddon, x: Tensor, w: Tensor, isa = -1): Tensor {
  const lowp = lowpAddon(addon);
  const [R, K] = x.shape as [number, number];
  const N = w.shape[0]!;
  const format = LOWP_FORMAT[w.dtype]!;
  // The decode kernels write every element of y (lowp.h gemv, zeros where K is 0), so it needs no zero fill.
  const y = R <= DECODE_ROWS ? device.empty([R, N], 'float32') : device.zeros([R, N], 'float32');
  if (R === 0 || N === 0) return y;
  const { data, scales } = weightParts(device, w);
  const xd = device.raw(x) as Float32Array;
  const yd = device.raw(y) as Float32Array;
  if (R <= DECODE_ROWS) {
    decodeProduct(device, lowp, format, isa, N, K, R, data, scales, xd, yd);
    return y;
  }
  // Prefill: tiles of rows of W in float32, each multiplied by sgemm.
  const tiles = device.empty([lowp.lowpTiledFloats(N, K)], 'float32');
  lowp.lowpTiled(format, N, K, R, data, scales, xd, yd, device.raw(tiles));
  tiles.dispose();
  return y;
}

/**
 * ys[i] [R, Nᵢ] = x [R, K] · wsᵢᵀ (the kernel table's matmulShared) for x float32 and weights of one dtype (float32
 * or a lowp dtype): one native call of the decode kernels (lowp.h gemvShared: x prepared once, one job for the
 * threads) when R ≤ DECODE_ROWS and every weight is [Nᵢ, K]; product by product otherwise.
 */
export function sharedProduct(device: HostDevice, addon: CpuAddon, x: Tensor, ws: readonly Tensor[]): Tensor[] {
  const [R, K] = x.shape as [number, number];
  const dtype = ws[0]?.dtype;
  const format = dtype === undefined ? undefined : LOWP_FORMAT[dtype];
  const fits =
    format !== undefined &&
    x.dtype === 'float32' &&
    x.rank === 2 &&
    R > 0 &&
    R <= DECODE_ROWS &&
    ws.every((w) => w.dtype === dtype && w.rank === 2 && w.shape[1] === K);
  if (!fits) return ws.map((w) => kernelsOf(w).matmul(x, w, false, true));
  const lowp = lowpAddon(addon);
  const ys: Tensor[] = [];
  const args: Args = [format, -1, K, R, device.raw(x), workspace(workspaceBytes(lowp, format, -1, R, K))];
  for (const w of ws) {
    const N = w.shape[0]!;
    const y = device.empty([R, N], 'float32');
    ys.push(y);
    const { data, scales } = weightParts(device, w);
    args.push(N, data, scales, device.raw(y));
  }
  lowp.lowpGemvShared(...args);
  return ys;
}

/** The cpu matmul for a weight dtype: native for x float32 · Wᵀ with W rank 2, through float32 copies otherwise. */
export function lowpKernels(device: HostDevice, addon: CpuAddon): Pick<Kernels, 'matmul' | 'matmulShared'> {
  return {
    matmulShared: (x: Tensor, ws: readonly Tensor[]) => sharedProduct(device, addon, x, ws),
    matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
      if (a.dtype === 'float32' && b.rank === 2 && a.rank === 2 && !transA && transB && b.dtype !== 'float32')
        return lowpProduct(device, addon, a, b);
      return throughFloat32(a, b, transA, transB);
    },
  };
}
