// Kernels of both host devices for tensors in a storage dtype (bfloat16, float16, qint8, qint4: src/tensor/dtype.ts)
// that the kernel table's cast fallback would run too slowly or in the wrong dtype: a product of a float32
// activation with a stored weight (float32, as linear() wants it; the fallback would round it back to 16 bits) and the
// embedding lookup of a 16-bit table (rows copied as stored; the fallback would convert the whole table per call).
// The cpu device registers native products over these (backend/cpu/lowp.ts).

import { DTypeError, ShapeError } from '../../errors.js';
import { type DType, isQuantized } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import { type Kernels, kernels } from '../kernels.js';
import type { HostDevice } from './device.js';

/** The dtypes a weight may be held in besides float32/float64 (linear() takes them with float32 inputs). */
export const STORED_WEIGHT_DTYPES: DType[] = ['bfloat16', 'float16', 'qint8', 'qint4'];

/**
 * A product with one or both operands in a storage dtype, computed in float32 on cast copies. The result is float32
 * when a is (a float32 activation times a stored weight), else rounded back to a's dtype (two 16-bit tensors).
 */
export function throughFloat32(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  if (isQuantized(a.dtype)) throw new DTypeError(`matmul: a ${a.dtype} tensor can only be the weight (b) of a product`);
  const f32 = kernels(a.device, 'float32');
  const copy = (t: Tensor) => (t.dtype === 'float32' ? t : kernels(t.device, t.dtype).cast(t, 'float32'));
  const [af, bf] = [copy(a), copy(b)];
  const y = f32.matmul(af, bf, transA, transB);
  if (af !== a) af.dispose();
  if (bf !== b) bf.dispose();
  if (a.dtype === 'float32') return y;
  const back = f32.cast(y, a.dtype);
  y.dispose();
  return back;
}

/** table [V, D] in a 16-bit dtype, ids int32 [...] -> [..., D] in the table's dtype (the rows' bits copied). */
function embedding16(table: Tensor, ids: Tensor): Tensor {
  const device = table.device as HostDevice;
  const [V, D] = table.shape as [number, number];
  const src = device.raw(table) as Uint16Array;
  const idx = device.raw(ids) as Int32Array;
  const out = device.empty([...ids.shape, D], table.dtype);
  const dst = device.raw(out) as Uint16Array;
  for (let i = 0; i < idx.length; i++) {
    const id = idx[i]!;
    if (!(id >= 0 && id < V)) {
      out.dispose();
      throw new ShapeError(`embedding: id ${id} at ${i} is outside the table's ${V} rows`);
    }
    dst.set(src.subarray(id * D, (id + 1) * D), i * D);
  }
  return out;
}

/** What both host devices register: `matmul` (and `matmulShared`, product by product) for every stored weight dtype, `embedding` for the 16-bit ones. */
export function registerStoredKernels(register: (dtypes: DType[], impl: Partial<Kernels>) => void): void {
  register(STORED_WEIGHT_DTYPES, {
    matmul: throughFloat32,
    matmulShared: (x, ws) => ws.map((w) => kernels(w.device, w.dtype).matmul(x, w, false, true)),
  });
  register(['bfloat16', 'float16'], { embedding: embedding16 });
}
