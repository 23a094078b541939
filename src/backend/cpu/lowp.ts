// The cpu device's products with weights held in a storage dtype (bfloat16, float16, qint8, qint4: src/tensor/dtype.ts):
// matmul(x, W, false, true) for x [R, K] float32 and W [N, K] (a Linear's weight), registered in the kernel table for
// the weight's dtype, so linear() picks these by W's dtype. Up to DECODE_ROWS rows of x (a decode step of up to 16
// sequences) take the bandwidth-bound kernels of native/cpu/lowp.h, which read W once in its stored format; more rows
// (prefill) convert W to float32 a tile of rows at a time and hand each tile to sgemm, so a float copy of W never
// exists whole. Other layouts (the gradient of x, a product of two 16-bit tensors) compute through float32 copies,
// as the kernel table's cast fallback does.

import { type DType, isQuantized, quantParts } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { HostDevice } from '../host/device.js';
import { throughFloat32 } from '../host/stored.js';
import type { Kernels } from '../kernels.js';
import type { CpuAddon } from './addon.js';

/** Rows of x up to which the decode kernels run (the decode batch, 1 to 16). */
export const DECODE_ROWS = 16;
/** Float32 bytes of W converted per sgemm call in the prefill path. */
const TILE_BYTES = 4 << 20;

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
  lowpDequant(...args: Args): void;
  lowpWorkspace(format: number, isa: number, B: number, K: number): number;
  lowpVariants(): Record<string, string[]>;
  lowpBest(): Record<string, string>;
  streamRead(bytes: Uint8Array, threads: number): number;
}

export function lowpAddon(addon: CpuAddon): LowpAddon {
  return addon as unknown as LowpAddon;
}

const EMPTY = new Uint8Array(0);

/** W's stored bytes as the native functions take them: the data (codes) and the scales (empty for 16-bit floats). */
export function weightParts(device: HostDevice, w: Tensor): { data: ArrayBufferView; scales: ArrayBufferView } {
  const raw = device.raw(w);
  if (!isQuantized(w.dtype)) return { data: raw, scales: EMPTY };
  const bytes = raw as Uint8Array;
  const [scales, codes] = quantParts(w.dtype, w.shape);
  return {
    scales: bytes.subarray(scales!.offset, scales!.offset + scales!.bytes),
    data: bytes.subarray(codes!.offset, codes!.offset + codes!.bytes),
  };
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
  const y = device.zeros([R, N], 'float32');
  if (R === 0 || N === 0) return y;
  const { data, scales } = weightParts(device, w);
  const xd = device.raw(x) as Float32Array;
  const yd = device.raw(y) as Float32Array;
  if (R <= DECODE_ROWS) {
    const bytes = lowp.lowpWorkspace(format, isa, R, K);
    const scratch = device.zeros([Math.ceil(bytes / 4)], 'int32');
    const words = device.raw(scratch);
    lowp.lowpGemv(format, isa, N, K, R, data, scales, xd, yd, new Uint8Array(words.buffer, words.byteOffset, bytes));
    scratch.dispose();
    return y;
  }
  // Prefill: tiles of rows of W in float32, y[:, n0:n1] = x · tileᵀ.
  const tileRows = Math.max(1, Math.min(N, Math.floor(TILE_BYTES / Math.max(1, 4 * K))));
  const tile = device.empty([tileRows * K], 'float32');
  const td = device.raw(tile) as Float32Array;
  for (let n0 = 0; n0 < N; n0 += tileRows) {
    const n1 = Math.min(N, n0 + tileRows);
    lowp.lowpDequant(format, N, K, data, scales, n0, n1, td);
    // C[R, n1 − n0] (leading dimension N, at column n0) = x [R, K] · tile [n1 − n0, K]ᵀ
    addon.sgemm(
      false, true, R, n1 - n0, K, 1, xd, 0, Math.max(1, K), 0,
      td, 0, Math.max(1, K), 0, 0, yd, n0, N, 0, 1,
    ); // prettier-ignore
  }
  tile.dispose();
  return y;
}

/** The cpu matmul for a weight dtype: native for x float32 · Wᵀ with W rank 2, through float32 copies otherwise. */
export function lowpKernels(device: HostDevice, addon: CpuAddon): Pick<Kernels, 'matmul'> {
  return {
    matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
      if (a.dtype === 'float32' && b.rank === 2 && a.rank === 2 && !transA && transB && b.dtype !== 'float32')
        return lowpProduct(device, addon, a, b);
      return throughFloat32(a, b, transA, transB);
    },
  };
}
