// Linear layers with low-precision weights (inference only): y = x Wᵀ (+ b) with W in a format of ./formats.ts and
// x, y float32.
//
// On the cpu device, up to DECODE_ROWS rows of x (a decode step of up to 16 sequences) take the
// bandwidth-bound kernels of native/cpu/lowp.h, which read W once in its stored format; more rows (prefill) convert
// W to float32 a tile of rows at a time and hand each tile to sgemm, so the float copy never exists whole. On the
// reference device the product is the definition: W dequantised, then matmul.

import { needsGrad } from '../autograd/tape.js';
import { CpuDevice } from '../backend/cpu/device.js';
import type { Device } from '../backend/device.js';
import type { HostStorage } from '../backend/host/device.js';
import { kernels } from '../backend/kernels.js';
import { BackendError, ShapeError, formatShape } from '../errors.js';
import { keep } from '../tensor/scope.js';
import { type Tensor, shapeSize } from '../tensor/tensor.js';
import { FORMAT_CODE, type Packed, type PackedData, type WeightFormat, dequantize, packedBytes } from './formats.js';

/** Rows of x up to which the native backend uses the decode kernels (the decode batch, 1 to 16). */
export const DECODE_ROWS = 16;
/** Float32 bytes of W converted per sgemm call in the prefill path. */
const TILE_BYTES = 4 << 20;

const EMPTY = new Uint8Array(0);

/** The functions of native/cpu/lowp_addon.cc (see there for the argument order). */
export interface LowpAddon {
  lowpGemv(...args: (number | ArrayBufferView)[]): void;
  lowpDequant(...args: (number | ArrayBufferView)[]): void;
  lowpWorkspace(format: number, isa: number, B: number, K: number): number;
  lowpVariants(): Record<WeightFormat, string[]>;
  lowpBest(): Record<WeightFormat, string>;
  streamRead(bytes: Uint8Array, threads: number): number;
}

/** The lowp functions of the native backend's addon. */
export function lowpAddon(be: CpuDevice): LowpAddon {
  return be.addon as unknown as LowpAddon;
}

/** A weight [N, K] in a low-precision format, its bytes held in backend storage (so the engine's accounting sees them). */
export class LowpWeight implements Packed {
  readonly data: PackedData;
  readonly scales: Float32Array | Uint16Array | null;
  private readonly holders: Tensor[];

  constructor(
    readonly backend: Device,
    packed: Packed,
  ) {
    this.format = packed.format;
    this.N = packed.N;
    this.K = packed.K;
    const bytes = packedBytes(packed.format, packed.N, packed.K);
    const hold = (n: number) => keep(backend.zeros([Math.ceil(n / 4)], 'int32'));
    const dataHolder = hold(bytes.data);
    this.holders = [dataHolder];
    this.data = view(packed.data, dataHolder, bytes.data);
    if (packed.scales) {
      const scaleHolder = hold(bytes.scales);
      this.holders.push(scaleHolder);
      this.scales = view(packed.scales, scaleHolder, bytes.scales) as Float32Array | Uint16Array;
    } else {
      this.scales = null;
    }
  }

  readonly format: WeightFormat;
  readonly N: number;
  readonly K: number;

  /** Bytes of storage (data and scales, as the engine accounts them). */
  get bytes(): number {
    return this.holders.reduce((s, t) => s + t.storage.byteLength, 0);
  }

  dispose(): void {
    for (const t of this.holders) t.dispose();
  }
}

/** A copy of `src` in the storage of `holder` (an int32 tensor of at least `bytes` bytes), as src's array type. */
function view<A extends PackedData | Uint16Array | Float32Array>(src: A, holder: Tensor, bytes: number): A {
  const words = (holder.storage as HostStorage).data;
  const Ctor = src.constructor as new (b: ArrayBuffer, offset: number, length: number) => A;
  const out = new Ctor(words.buffer as ArrayBuffer, words.byteOffset, bytes / src.BYTES_PER_ELEMENT);
  out.set(src as never);
  return out;
}

/** The float32 array of a host tensor. */
function f32(t: Tensor): Float32Array {
  return (t.storage as HostStorage).data as Float32Array;
}

/** y = x Wᵀ (+ bias): x [..., K] float32 -> [..., N]. Not differentiable (quantised weights are for inference). */
export function lowpLinear(x: Tensor, w: LowpWeight, bias: Tensor | null = null): Tensor {
  const be = x.device;
  if (be !== w.backend) throw new BackendError('lowpLinear: x and the weight live on different backends');
  if (x.dtype !== 'float32') throw new ShapeError(`lowpLinear: x must be float32, got ${x.dtype}`);
  if (x.rank < 1 || x.shape[x.rank - 1] !== w.K)
    throw new ShapeError(
      `lowpLinear: input ${formatShape(x.shape)} does not fit a ${w.format} weight [${w.N}, ${w.K}]`,
    );
  if (bias && (bias.rank !== 1 || bias.shape[0] !== w.N))
    throw new ShapeError(`lowpLinear: bias ${formatShape(bias.shape)} does not fit a weight [${w.N}, ${w.K}]`);
  if (needsGrad(x, bias))
    throw new BackendError(
      `lowpLinear: no gradients through ${w.format} weights (quantised weights are for inference; train in float32)`,
    );
  const rows = shapeSize(x.shape.slice(0, -1));
  const x2 = be.view(x, [rows, w.K]);
  const y2 = be instanceof CpuDevice ? nativeProduct(be, x2, w) : referenceProduct(be, x2, w);
  x2.dispose();
  const yb = bias ? kernels(be, 'float32').binary('add', y2, bias) : y2;
  if (bias) y2.dispose();
  const y = be.view(yb, [...x.shape.slice(0, -1), w.N]);
  yb.dispose();
  return y;
}

/** The definition: W dequantised to float32, then the backend's matmul. x: [R, K] -> [R, N]. */
function referenceProduct(be: Device, x: Tensor, w: LowpWeight): Tensor {
  const wt = be.fromData(dequantize(w), [w.N, w.K], 'float32');
  const y = kernels(be, 'float32').matmul(x, wt, false, true);
  wt.dispose();
  return y;
}

function nativeProduct(be: CpuDevice, x: Tensor, w: LowpWeight): Tensor {
  const R = x.shape[0]!;
  const y = be.zeros([R, w.N], 'float32');
  if (R === 0 || w.N === 0) return y;
  const addon = lowpAddon(be);
  const code = FORMAT_CODE[w.format];
  const scales = w.scales ?? EMPTY;
  if (R <= DECODE_ROWS) {
    const bytes = addon.lowpWorkspace(code, -1, R, w.K);
    const ws = be.zeros([Math.ceil(bytes / 4)], 'int32');
    const words = (ws.storage as HostStorage).data;
    const scratch = new Uint8Array(words.buffer, words.byteOffset, bytes);
    addon.lowpGemv(code, -1, w.N, w.K, R, w.data, scales, f32(x), f32(y), scratch);
    ws.dispose();
    return y;
  }
  // Prefill: tiles of rows of W in float32, y[:, n0:n1] = x · tileᵀ.
  const tileRows = Math.max(1, Math.min(w.N, Math.floor(TILE_BYTES / Math.max(1, 4 * w.K))));
  const tile = be.zeros([tileRows * w.K], 'float32');
  const td = f32(tile);
  const xd = f32(x);
  const yd = f32(y);
  for (let n0 = 0; n0 < w.N; n0 += tileRows) {
    const n1 = Math.min(w.N, n0 + tileRows);
    addon.lowpDequant(code, w.N, w.K, w.data, scales, n0, n1, td);
    // C[R, n1 − n0] (leading dimension N, at column n0) = x [R, K] · tile [n1 − n0, K]ᵀ
    be.addon.sgemm(
      false, true, R, n1 - n0, w.K, 1, xd, 0, Math.max(1, w.K), 0,
      td, 0, Math.max(1, w.K), 0, 0, yd, n0, w.N, 0, 1,
    ); // prettier-ignore
  }
  tile.dispose();
  return y;
}
