// The cuda device: tensors in GPU memory (the addon's caching allocator over cudaMalloc); its kernels (kernels.ts,
// native/cuda/) are all queued in order on one stream, so only reads wait for the GPU. Node-only (a Node-API addon).
// Dtypes: float32 and int32, and the 16-bit storage types bfloat16 and float16 (rounded to nearest even on the host
// as they are written, widened to float32 as they are read; cast() converts on the device), which the products take
// on tensor cores (kernels.ts) and every other kernel through the kernel table's float32 cast copies.
// Memory accounting: the MemoryTracker counts each live tensor's element bytes, as on the host devices;
// `deviceMemory()` reports what the allocator holds beside them (its rounding to 512-byte blocks, its cache).

import { BackendError, DTypeError } from '../../errors.js';
import type { DType, DataArray, ValueArray } from '../../tensor/dtype.js';
import { allocArray, bytesPerElement, decode, encoded } from '../../tensor/dtype.js';
import { MemoryTracker } from '../../tensor/memory.js';
import type { Storage } from '../../tensor/storage.js';
import { Tensor, checkShape, shapeSize } from '../../tensor/tensor.js';
import type { Device, DeviceGraph } from '../device.js';
import { type Kernels, registerKernels } from '../kernels.js';
import type { CudaAddon, CudaInfo, CudaMemory } from './addon.js';
import { CudaKernels } from './kernels.js';

/** Device memory behind a tensor: freed (returned to the allocator's cache) when the last reference goes. */
export class CudaStorage implements Storage {
  readonly byteLength: number;
  private refs = 1;
  private pointer: number;

  constructor(
    readonly dtype: DType,
    readonly size: number,
    private readonly addon: CudaAddon,
    private readonly tracker: MemoryTracker,
  ) {
    this.byteLength = size * bytesPerElement(dtype);
    this.pointer = addon.alloc(this.byteLength);
    tracker.allocated(this.byteLength);
  }

  get released(): boolean {
    return this.pointer === 0;
  }

  /** The device address. Throws after release, so no kernel can touch freed memory. */
  get ptr(): number {
    if (this.pointer === 0) throw new Error('storage used after release');
    return this.pointer;
  }

  retain(): void {
    this.refs++;
  }

  release(): void {
    if (this.pointer === 0 || --this.refs > 0) return;
    this.addon.free(this.pointer);
    this.pointer = 0;
    this.tracker.released(this.byteLength);
  }
}

/**
 * A captured CUDA graph: one launch replays every kernel fn queued. The blocks it holds (what fn freed, which its
 * replays write) count in the device's MemoryTracker while it lives, as live tensors do.
 */
class CudaGraph implements DeviceGraph {
  private id: number;

  constructor(
    private readonly addon: CudaAddon,
    private readonly tracker: MemoryTracker,
    id: number,
    readonly bytes: number,
  ) {
    this.id = id;
    tracker.allocated(bytes);
  }

  launch(): void {
    if (this.id === 0) throw new BackendError('cuda graph: launched after dispose');
    this.addon.graphLaunch(this.id);
  }

  dispose(): void {
    if (this.id === 0) return;
    this.addon.graphDestroy(this.id);
    this.tracker.released(this.bytes);
    this.id = 0;
  }
}

const CUDA_DTYPES: readonly DType[] = ['float32', 'int32', 'bfloat16', 'float16'];

export class CudaDevice implements Device {
  readonly name = 'cuda';
  readonly memory = new MemoryTracker();
  readonly dtypes: readonly DType[] = CUDA_DTYPES;
  readonly host = false;
  readonly resolved: Partial<Record<DType, Kernels>> = {};
  /** TF32 tensor cores for float32 GEMMs (RETNET_CUDA_TF32=1); off by default, so results match float32. */
  tf32 = process.env.RETNET_CUDA_TF32 === '1';
  /**
   * Chunkwise retention (forward and backward) on bf16 tensor cores with float32 accumulation
   * (RETNET_CUDA_BF16_RETENTION=1) where the shape allows: K = V = 128, chunk 64, whole chunks, no initial state or
   * segments; other calls take the float32 kernels. Off by default: bf16 operands give about 1e-3 relative error.
   */
  bf16Retention = process.env.RETNET_CUDA_BF16_RETENTION === '1';
  /**
   * Weight products (float32 x, 16-bit weight) of more than 8 rows round x to the weight's dtype
   * (RETNET_CUDA_ROUND_ACTIVATIONS=1): one tensor-core GEMM instead of two parts' (kernels.ts matmul16), about 2^-9
   * relative error per element of x for bfloat16. Off by default: results then match the host devices' to float32
   * rounding.
   */
  roundActivations = process.env.RETNET_CUDA_ROUND_ACTIVATIONS === '1';
  /**
   * A test aid, as the host pool's: outputs taken without a fill come filled with NaN, so a kernel that leaves an
   * element unwritten shows up instead of reading whatever the recycled block held.
   */
  poison = false;

  constructor(readonly addon: CudaAddon) {}

  info(): CudaInfo {
    return this.addon.info();
  }

  deviceMemory(): CudaMemory {
    return this.addon.memory();
  }

  synchronize(): void {
    this.addon.synchronize();
  }

  /** Device.capture: a CUDA graph of what fn queues (native/cuda/context.cu). A failed capture is discarded. */
  capture(fn: () => Tensor[]): { graph: DeviceGraph; outputs: Tensor[] } {
    const before = this.addon.memory().graphBytes;
    this.addon.graphBegin();
    let outputs: Tensor[];
    try {
      outputs = fn();
    } catch (e) {
      this.addon.graphEnd(false);
      throw e;
    }
    let id: number;
    try {
      id = this.addon.graphEnd(true);
    } catch (e) {
      for (const t of outputs) t.dispose();
      throw e;
    }
    return { graph: new CudaGraph(this.addon, this.memory, id, this.addon.memory().graphBytes - before), outputs };
  }

  supportsDType(dtype: DType): boolean {
    return CUDA_DTYPES.includes(dtype);
  }

  // ---- storage ----

  private make(shape: readonly number[], dtype: DType): Tensor {
    if (!this.supportsDType(dtype))
      throw new DTypeError(`tensor: the cuda device does not hold ${dtype} tensors (${CUDA_DTYPES.join(', ')} only)`);
    const storage = new CudaStorage(dtype, shapeSize(shape), this.addon, this.memory);
    return new Tensor(this, storage, shape, dtype);
  }

  /** The device address of t's storage. */
  ptr(t: Tensor): number {
    if (t.device !== this) throw new BackendError(`cuda device: tensor ${t.toString()} belongs to another device`);
    return (t.storage as CudaStorage).ptr;
  }

  /** An output the kernel overwrites entirely (its initial contents are whatever the block held). */
  empty(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'empty');
    const t = this.make(shape, dtype);
    if (this.poison && t.size > 0)
      if (bytesPerElement(dtype) === 4) this.addon.fill(this.ptr(t), NaN, t.size);
      else this.addon.write(this.ptr(t), new Uint16Array(t.size).fill(0x7fc0)); // NaN in bfloat16 and float16 alike
    return t;
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'zeros');
    const t = this.make(shape, dtype);
    // 0.0f, int32 0 and 16-bit zeros share the bit pattern; 16-bit tensors are filled by 4-byte words (the last may
    // reach past an odd size into the block's 512-byte rounding, which the allocator always adds).
    const e = bytesPerElement(dtype);
    if (t.size > 0) this.addon.fill(this.ptr(t), 0, e === 4 ? t.size : Math.ceil(t.size / 2));
    return t;
  }

  fromData(data: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'fromData');
    const n = shapeSize(shape);
    if (data.length !== n)
      throw new BackendError(`fromData: ${data.length} values given for shape [${shape.join(', ')}] (${n} elements)`);
    if (!this.supportsDType(dtype)) this.make(shape, dtype); // throws, naming the dtypes held
    return this.fromStorage(encoded(dtype, data, shape), shape, dtype);
  }

  read(t: Tensor): ValueArray {
    return decode(t.dtype, this.readStorage(t), t.shape);
  }

  /** The values without blocking the event loop while the device finishes. */
  async readAsync(t: Tensor): Promise<ValueArray> {
    const buf = await this.addon.readAsync(this.ptr(t), t.storage.byteLength);
    if (t.dtype === 'int32') return new Int32Array(buf);
    return t.dtype === 'float32' ? new Float32Array(buf) : decode(t.dtype, new Uint16Array(buf), t.shape);
  }

  /** The storage array as it is on the device: the values for float32/int32, raw bits for bfloat16/float16. */
  readStorage(t: Tensor): DataArray {
    const out = allocArray(t.dtype, t.size);
    if (t.size > 0) this.addon.read(this.ptr(t), out);
    return out;
  }

  fromStorage(data: DataArray, shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'fromStorage');
    const n = shapeSize(shape);
    if (data.length !== n || data.BYTES_PER_ELEMENT !== bytesPerElement(dtype))
      throw new BackendError(
        `fromStorage: a ${data.constructor.name}[${data.length}] is not the storage of ${dtype} [${shape.join(', ')}]`,
      );
    const t = this.make(shape, dtype);
    if (n > 0) this.addon.write(this.ptr(t), data);
    return t;
  }

  write(t: Tensor, data: ArrayLike<number>): void {
    if (data.length !== t.size)
      throw new BackendError(`write: ${data.length} values given for ${t.toString()} (${t.size} elements)`);
    if (t.size > 0) this.addon.write(this.ptr(t), encoded(t.dtype, data, t.shape));
  }

  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, length: number): void {
    if (src.dtype !== dst.dtype) throw new DTypeError(`copy: ${src.dtype} into ${dst.dtype}`);
    if (srcOffset < 0 || dstOffset < 0 || srcOffset + length > src.size || dstOffset + length > dst.size)
      throw new BackendError(
        `copy: [${srcOffset}, +${length}) of ${src.toString()} into [${dstOffset}, +${length}) of ${dst.toString()}`,
      );
    const e = bytesPerElement(src.dtype);
    if (length > 0) this.addon.copy(this.ptr(dst) + dstOffset * e, this.ptr(src) + srcOffset * e, length * e);
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const storage = t.storage;
    storage.retain();
    return new Tensor(this, storage, shape, t.dtype);
  }
}

/**
 * The cuda device over a loaded addon, with its kernels registered (float32; casts between every dtype held; the
 * layout kernels for int32; products for the 16-bit dtypes).
 */
export function createCudaDevice(addon: CudaAddon): CudaDevice {
  const device = new CudaDevice(addon);
  const k = new CudaKernels(device);
  registerKernels('cuda', CUDA_DTYPES, { cast: k.cast.bind(k) });
  registerKernels('cuda', ['bfloat16', 'float16'], { matmul: k.matmul16.bind(k) });
  registerKernels('cuda', ['float32'], k);
  registerKernels('cuda', ['int32'], { permute: k.permute.bind(k), copyBlocks: k.copyBlocks.bind(k) });
  return device;
}
