/// <reference types="@webgpu/types" />
// The webgpu device: tensors in GPUBuffers, for browsers (portable: no Node built-ins). Kernels (kernels.ts) are
// recorded into one command encoder and submitted together when something needs the results: a read, a write from
// the host, or a full parameter arena. Reads are asynchronous (`readAsync`, through mapAsync on a staging buffer);
// `read` works only for tensors whose contents the host already knows (fresh zeros, token ids given by the host) and
// otherwise throws, naming readAsync.
//
// Ordering. Everything reaches the GPU in one queue order: queue.writeBuffer runs at the queue timeline before the
// commands of the next submit. So a host write into a tensor first submits what is pending (a recorded kernel may
// still read it), and a new tensor with host data (token ids, rotary tables) takes a pooled buffer released before the
// last submit, which no unsubmitted command can touch: a generation step then submits once, at its read.
// A kernel this device lacks runs on the host in the same order (`deferHost`): its inputs are copied out after what
// was submitted before it, and until its results are written back every later queue operation (a submit, a host
// write, a buffer's destruction) waits in a backlog, run in order once it has; readAsync waits for the backlog.
//
// Dtypes. float32 and int32 take a word per element; bfloat16 and float16 (a 16-bit checkpoint's weights, held as
// read) two per word (shaders.ts: the kernels that read them unpack them). Host data of a 16-bit tensor goes up as its
// bits (encoded by the host's rounding), and reads come back as float32 values.
//
// Memory. The MemoryTracker counts each live tensor's element bytes, as on the host devices. Freed buffers go to a
// pool keyed by their (16-byte rounded) size, so a generation, whose steps allocate the same shapes each token,
// reuses buffers instead of creating them; `gpu()` reports the buffers created, reused and held beside the tensors.

import { BackendError, DTypeError, formatShape } from '../../errors.js';
import { type DType, type DataArray, type ValueArray, bytesPerElement, decode, encoded } from '../../tensor/dtype.js';
import { MemoryTracker } from '../../tensor/memory.js';
import type { Storage } from '../../tensor/storage.js';
import { Tensor, checkShape, shapeSize } from '../../tensor/tensor.js';
import type { Device } from '../device.js';
import type { Kernels } from '../kernels.js';
import * as wgsl from './shaders.js';

/** Bytes of uniform parameters each dispatch gets (minUniformBufferOffsetAlignment is at most 256). */
const PARAM_SLOT = 256;
/** Dispatches recorded before a submit is forced (the size of the parameter arena). */
const PARAM_SLOTS = 1024;

/** The dtypes the webgpu device holds. */
export const WEBGPU_DTYPES: readonly DType[] = ['float32', 'int32', 'bfloat16', 'float16'];

const is16 = (dtype: DType) => dtype === 'bfloat16' || dtype === 'float16';

/** Bytes of a write or copy of `bytes`: whole words (queue.writeBuffer and copyBufferToBuffer move multiples of 4). */
const words = (bytes: number) => Math.ceil(bytes / 4) * 4;

/** The GPU memory behind a tensor; returned to the device's pool when the last reference goes. */
export class GpuStorage implements Storage {
  readonly byteLength: number;
  private refs = 1;
  private buf: GPUBuffer | null;

  constructor(
    readonly dtype: DType,
    readonly size: number,
    buffer: GPUBuffer,
    private readonly device: WebGpuDevice,
    /** What the host knows of the contents: 'zero' (fresh zeros), the values it wrote (token ids), or nothing. */
    public known: 'zero' | Int32Array | null,
  ) {
    this.byteLength = size * bytesPerElement(dtype);
    this.buf = buffer;
    device.memory.allocated(this.byteLength);
  }

  get released(): boolean {
    return this.buf === null;
  }

  get buffer(): GPUBuffer {
    if (this.buf === null) throw new Error('storage used after release');
    return this.buf;
  }

  retain(): void {
    this.refs++;
  }

  release(): void {
    if (this.buf === null || --this.refs > 0) return;
    this.device.reclaim(this.buf);
    this.buf = null;
    this.device.memory.released(this.byteLength);
  }
}

/** What the GPU side holds, beyond the tensors' own bytes. */
export interface GpuMemory {
  /** Buffers created so far, and pool hits (a buffer reused instead of created). */
  created: number;
  reused: number;
  /** Bytes of every live GPUBuffer: tensors (rounded up to 16 bytes), the pool, staging and parameter buffers. */
  bytes: number;
  /** Bytes of freed buffers kept in the pool. */
  pooled: number;
}

export interface WebGpuInfo {
  vendor: string;
  architecture: string;
  description: string;
  /** Adapter features (shader-f16, subgroups, ...). */
  features: string[];
}

/** Workgroups for n invocations of `per` each, on a 2-D grid (65535 per dimension). */
export function grid(n: number, per = 256): [number, number] {
  const groups = Math.max(1, Math.ceil(n / per));
  const x = Math.min(groups, 65535);
  return [x, Math.ceil(groups / x)];
}

/** 16-bit bits with a zero half appended when odd, so that the write is of whole words. */
function padded(bits: Uint16Array): Uint16Array {
  if (bits.length % 2 === 0) return bits;
  const out = new Uint16Array(bits.length + 1);
  out.set(bits);
  return out;
}

export class WebGpuDevice implements Device {
  readonly name = 'webgpu';
  readonly memory = new MemoryTracker();
  readonly dtypes: readonly DType[] = WEBGPU_DTYPES;
  readonly host = false;
  readonly resolved: Partial<Record<DType, Kernels>> = {};
  /** Validation and out-of-memory errors the GPU reported (asynchronously); tests check it stays empty. */
  readonly errors: string[] = [];
  /** Largest pool, in bytes (freed buffers beyond it are destroyed). */
  poolCapacity = 256 * 2 ** 20;

  /** Freed buffers by size, with the submit count when each was freed. */
  private readonly pool = new Map<number, { buf: GPUBuffer; freed: number }[]>();
  private submits = 0;
  private readonly staging = new Map<number, GPUBuffer[]>();
  private readonly stats = { created: 0, reused: 0, bytes: 0, pooled: 0 };
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly params: GPUBuffer;
  private readonly paramHost = new ArrayBuffer(PARAM_SLOT * PARAM_SLOTS);
  private paramsUsed = 0;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  /** Queue operations held back while a deferred host kernel waits for its inputs (see the file comment). */
  private readonly backlog: (() => void | Promise<void>)[] = [];
  private draining: Promise<void> | null = null;
  /** The first error a deferred host kernel threw, given to the next readAsync/finish. */
  private failure: unknown = null;

  constructor(
    readonly gpu: GPUDevice,
    readonly info: WebGpuInfo,
  ) {
    this.params = this.createBuffer(PARAM_SLOT * PARAM_SLOTS, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    gpu.addEventListener('uncapturederror', (e) => {
      const msg = (e as GPUUncapturedErrorEvent).error.message;
      this.errors.push(msg);
      console.error(`retnet webgpu: ${msg}`);
    });
  }

  supportsDType(dtype: DType): boolean {
    return WEBGPU_DTYPES.includes(dtype);
  }

  gpuMemory(): GpuMemory {
    return { ...this.stats };
  }

  // ---- buffers ----

  private createBuffer(bytes: number, usage: number): GPUBuffer {
    const max = this.gpu.limits.maxBufferSize;
    if (bytes > max)
      throw new BackendError(`webgpu: a buffer of ${bytes} bytes exceeds this adapter's maxBufferSize (${max})`);
    this.stats.created++;
    this.stats.bytes += bytes;
    return this.gpu.createBuffer({ size: bytes, usage });
  }

  private destroy(buf: GPUBuffer): void {
    this.flush(); // a recorded command may still use it
    this.stats.bytes -= buf.size;
    this.inOrder(() => buf.destroy());
  }

  /**
   * A storage buffer of at least `bytes`, from the pool when one of that size is free; `clean`: only one freed before
   * the last submit (for a host write without a submit: see Ordering above).
   */
  private take(bytes: number, clean = false): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    const free = this.pool.get(size) ?? [];
    let at = free.length - 1;
    if (clean) while (at >= 0 && free[at]!.freed === this.submits) at--;
    if (at >= 0) {
      const { buf } = free.splice(at, 1)[0]!;
      this.stats.reused++;
      this.stats.pooled -= size;
      return buf;
    }
    return this.createBuffer(size, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
  }

  /** Called by a storage on release. */
  reclaim(buf: GPUBuffer): void {
    if (this.stats.pooled + buf.size > this.poolCapacity) return this.destroy(buf);
    let list = this.pool.get(buf.size);
    if (!list) this.pool.set(buf.size, (list = []));
    list.push({ buf, freed: this.submits });
    this.stats.pooled += buf.size;
  }

  /** Destroys the pooled buffers (their memory goes back to the GPU). */
  trimPool(): void {
    for (const list of this.pool.values()) for (const { buf } of list.splice(0)) this.destroy(buf);
    for (const list of this.staging.values()) for (const b of list.splice(0)) this.destroy(b);
    this.stats.pooled = 0;
  }

  // ---- tensors ----

  private make(
    shape: readonly number[],
    dtype: DType,
    known: GpuStorage['known'],
    what: string,
    clean = false,
  ): Tensor {
    checkShape(shape, what);
    if (!this.supportsDType(dtype))
      throw new DTypeError(
        `${what}: the webgpu device does not hold ${dtype} tensors (only ${WEBGPU_DTYPES.join(', ')})`,
      );
    const size = shapeSize(shape);
    const bytes = size * bytesPerElement(dtype);
    return new Tensor(this, new GpuStorage(dtype, size, this.take(bytes, clean), this, known), shape, dtype);
  }

  storageOf(t: Tensor): GpuStorage {
    if (t.device !== this) throw new BackendError(`webgpu device: tensor ${t.toString()} belongs to another device`);
    return t.storage as GpuStorage;
  }

  /** The tensor's buffer, for binding; `written` marks its contents as no longer known to the host. */
  buffer(t: Tensor, written = false): GPUBuffer {
    const s = this.storageOf(t);
    if (written) s.known = null;
    return s.buffer;
  }

  empty(shape: readonly number[], dtype: DType): Tensor {
    return this.make(shape, dtype, null, 'empty');
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    const t = this.make(shape, dtype, 'zero', 'zeros');
    if (t.size > 0) this.encode().clearBuffer(this.buffer(t), 0, words(this.storageOf(t).byteLength));
    return t;
  }

  fromData(data: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'fromData');
    const n = shapeSize(shape);
    if (data.length !== n)
      throw new BackendError(`fromData: ${data.length} values given for shape ${formatShape(shape)} (${n} elements)`);
    const host = this.hostArray(dtype, data, 'fromData');
    const t = this.make(shape, dtype, host instanceof Int32Array ? host : null, 'fromData', true);
    if (n > 0) this.writeHost(this.buffer(t), host);
    return t;
  }

  /** For bfloat16/float16, `data` holds the bits (as a checkpoint stores them); else as fromData. */
  fromStorage(data: DataArray, shape: readonly number[], dtype: DType): Tensor {
    if (!is16(dtype)) return this.fromData(data, shape, dtype);
    checkShape(shape, 'fromStorage');
    const n = shapeSize(shape);
    if (data.length !== n)
      throw new BackendError(`fromStorage: ${data.length} elements given for shape ${formatShape(shape)} (${n})`);
    const t = this.make(shape, dtype, null, 'fromStorage', true);
    if (n > 0) this.writeHost(this.buffer(t), padded(Uint16Array.from(data)));
    return t;
  }

  /** The device's own copy of host values for a tensor of dtype: float32/int32 elements, or 16-bit bits padded to words. */
  private hostArray(dtype: DType, data: ArrayLike<number>, what: string): Float32Array | Int32Array | Uint16Array {
    if (is16(dtype)) return padded(encoded(dtype, data, [data.length]) as Uint16Array);
    if (dtype !== 'int32') return Float32Array.from(data);
    const out = new Int32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      if (!Number.isInteger(v)) throw new DTypeError(`${what}: int32 tensor given non-integer value ${v} at ${i}`);
      out[i] = v;
    }
    return out;
  }

  /** Only for contents the host knows; GPU results are read with readAsync. */
  read(t: Tensor): ValueArray {
    const known = this.storageOf(t).known;
    if (known === 'zero') return t.dtype === 'int32' ? new Int32Array(t.size) : new Float32Array(t.size);
    if (known) return known.slice();
    throw new BackendError(
      `webgpu: ${t.toString()} lives in GPU memory, which a browser reads only asynchronously: use ` +
        `await tensor.dataAsync() (device.readAsync)`,
    );
  }

  async readAsync(t: Tensor): Promise<ValueArray> {
    this.flush();
    const values = await new Promise<ValueArray>((resolve, reject) =>
      this.inOrder(() => void this.readSubmitted(t).then(resolve, reject)),
    );
    this.throwFailure();
    return values;
  }

  /** t's values, after everything already submitted (its copy is submitted at once: call it in queue order). */
  private async readSubmitted(t: Tensor): Promise<ValueArray> {
    if (t.size === 0) return t.dtype === 'int32' ? new Int32Array(0) : new Float32Array(0);
    const bytes = words(this.storageOf(t).byteLength);
    const out =
      t.dtype === 'int32'
        ? new Int32Array(t.size)
        : is16(t.dtype)
          ? new Uint16Array(bytes / 2)
          : new Float32Array(t.size);
    const size = Math.ceil(bytes / 16) * 16;
    const staging =
      this.staging.get(size)?.pop() ?? this.createBuffer(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    const encoder = this.gpu.createCommandEncoder();
    encoder.copyBufferToBuffer(this.buffer(t), 0, staging, 0, bytes);
    this.gpu.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ, 0, bytes);
    new Uint8Array(out.buffer).set(new Uint8Array(staging.getMappedRange(0, bytes)));
    staging.unmap();
    let list = this.staging.get(size);
    if (!list) this.staging.set(size, (list = []));
    list.push(staging);
    return out instanceof Uint16Array ? decode(t.dtype, out.subarray(0, t.size), t.shape) : out;
  }

  readStorage(t: Tensor): DataArray {
    if (is16(t.dtype) && this.storageOf(t).known === 'zero') return new Uint16Array(t.size);
    return this.read(t);
  }

  write(t: Tensor, data: ArrayLike<number>): void {
    if (data.length !== t.size)
      throw new BackendError(`write: ${data.length} values given for ${t.toString()} (${t.size} elements)`);
    const host = this.hostArray(t.dtype, data, 'write');
    this.storageOf(t).known = host instanceof Int32Array ? host : null;
    if (t.size === 0) return;
    this.flush(); // a recorded kernel may still read t
    this.writeHost(this.buffer(t), host);
  }

  /** queue.writeBuffer in queue order (`host` is the device's own copy: a held write reads it later). */
  private writeHost(buf: GPUBuffer, host: Float32Array | Int32Array | Uint16Array): void {
    this.inOrder(() => this.gpu.queue.writeBuffer(buf, 0, host.buffer, host.byteOffset, host.byteLength));
  }

  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, length: number): void {
    if (src.dtype !== dst.dtype) throw new DTypeError(`copy: dtypes differ (${src.dtype} and ${dst.dtype})`);
    if (srcOffset < 0 || dstOffset < 0 || srcOffset + length > src.size || dstOffset + length > dst.size)
      throw new BackendError(
        `copy: range [${srcOffset}, +${length}) of ${src.toString()} to [${dstOffset}, +${length}) of ${dst.toString()} is out of bounds`,
      );
    if (length === 0) return;
    const s = this.buffer(src);
    const d = this.buffer(dst, true);
    const e = bytesPerElement(src.dtype);
    if (
      e === 2 &&
      (srcOffset % 2 !== 0 || dstOffset % 2 !== 0 || (length % 2 !== 0 && dstOffset + length !== dst.size))
    ) {
      // Half words: a shader moves them (one buffer cannot be bound for reading and writing: copy the source first).
      const from = s === d ? this.take(words(src.size * 2)) : s;
      if (from !== s) this.encode().copyBufferToBuffer(s, 0, from, 0, words(src.size * 2));
      const n = Math.ceil((dstOffset + length) / 2) - Math.floor(dstOffset / 2);
      this.dispatch(
        this.pipeline('COPY16', () => wgsl.COPY16),
        [
          ['u', srcOffset],
          ['u', dstOffset],
          ['u', length],
        ],
        [from, d],
        [Math.max(1, Math.ceil(n / 256))],
      );
      if (from !== s) this.reclaim(from);
      return;
    }
    // Whole words (a 16-bit copy ending at dst's end may carry the padding half after its last element).
    const bytes = words(length * e);
    if (s === d) {
      // copyBufferToBuffer cannot copy within one buffer: go through a temporary.
      const tmp = this.take(bytes);
      this.encode().copyBufferToBuffer(s, srcOffset * e, tmp, 0, bytes);
      this.encode().copyBufferToBuffer(tmp, 0, d, dstOffset * e, bytes);
      this.reclaim(tmp);
    } else this.encode().copyBufferToBuffer(s, srcOffset * e, d, dstOffset * e, bytes);
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const storage = this.storageOf(t);
    storage.retain();
    return new Tensor(this, storage, shape, t.dtype);
  }

  // ---- commands ----

  /** The open command encoder, outside any compute pass (for copies and clears). */
  private encode(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    this.encoder ??= this.gpu.createCommandEncoder();
    return this.encoder;
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) this.pass.end();
    this.pass = null;
    const commands = this.encoder.finish();
    const bytes = this.paramsUsed * PARAM_SLOT;
    // A held submit needs its own copy of the parameters: the arena is refilled by what is recorded meanwhile.
    const params = this.draining ? this.paramHost.slice(0, bytes) : this.paramHost;
    this.inOrder(() => {
      if (bytes > 0) this.gpu.queue.writeBuffer(this.params, 0, params, 0, bytes);
      this.gpu.queue.submit([commands]);
    });
    this.submits++;
    this.encoder = null;
    this.paramsUsed = 0;
  }

  /** Resolves when the GPU has finished everything recorded (a flush, then the backlog, then the queue). */
  async finish(): Promise<void> {
    this.flush();
    await this.settled();
    await this.gpu.queue.onSubmittedWorkDone();
  }

  deferHost(
    inputs: readonly Tensor[],
    outputs: readonly Tensor[],
    compute: (values: ValueArray[]) => ValueArray[],
  ): void {
    const held = [...inputs, ...outputs].map((t) => this.storageOf(t));
    for (const s of held) s.retain();
    for (const t of outputs) this.buffer(t, true);
    this.flush();
    this.inOrder(async () => {
      try {
        const values = await Promise.all(inputs.map((t) => this.readSubmitted(t)));
        const results = compute(values);
        outputs.forEach((t, i) => {
          const host = this.hostArray(t.dtype, results[i]!, 'deferHost');
          if (host.length > 0) this.gpu.queue.writeBuffer(this.buffer(t), 0, host.buffer, 0, host.byteLength);
        });
      } catch (e) {
        this.failure ??= e;
      } finally {
        for (const s of held) s.release();
      }
    });
  }

  /** Runs a queue operation now, or after the held ones while a deferred host kernel is pending. */
  private inOrder(op: () => void | Promise<void>): void {
    if (this.draining) {
      this.backlog.push(op);
      return;
    }
    const pending = op();
    if (pending) this.draining = this.drain(pending);
  }

  private async drain(first: Promise<void>): Promise<void> {
    await first;
    for (let op = this.backlog.shift(); op; op = this.backlog.shift()) await op();
    this.draining = null;
  }

  /** Resolves when the backlog has run; rejects with a deferred host kernel's error. */
  private async settled(): Promise<void> {
    while (this.draining) await this.draining;
    this.throwFailure();
  }

  /** Throws (once) the error a deferred host kernel threw: its results, and what was computed from them, are void. */
  private throwFailure(): void {
    const failure = this.failure;
    if (failure === null) return;
    this.failure = null;
    throw failure;
  }

  pipeline(key: string, code: () => string): GPUComputePipeline {
    let p = this.pipelines.get(key);
    if (!p) {
      const module = this.gpu.createShaderModule({ code: code(), label: key });
      p = this.gpu.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: key });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /**
   * Records one dispatch: `params` fill the shader's uniform struct at binding 0 in order (each 4 bytes: 'u' u32,
   * 'i' i32, 'f' f32), `buffers` are bindings 1, 2, ... in order.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    params: readonly (readonly ['u' | 'i' | 'f', number])[],
    buffers: readonly GPUBuffer[],
    groups: readonly [number, number?, number?],
  ): void {
    if (params.length * 4 > PARAM_SLOT) throw new Error('webgpu: too many parameters for one dispatch');
    if (this.paramsUsed === PARAM_SLOTS) this.flush();
    const slot = this.paramsUsed++;
    const view = new DataView(this.paramHost, slot * PARAM_SLOT, PARAM_SLOT);
    params.forEach(([kind, v], i) => {
      if (kind === 'f') view.setFloat32(i * 4, v, true);
      else if (kind === 'i') view.setInt32(i * 4, v, true);
      else view.setUint32(i * 4, v, true);
    });
    const bindGroup = this.gpu.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: this.params, offset: slot * PARAM_SLOT, size: PARAM_SLOT } },
        ...buffers.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
      ],
    });
    this.encoder ??= this.gpu.createCommandEncoder();
    this.pass ??= this.encoder.beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(groups[0], groups[1] ?? 1, groups[2] ?? 1);
  }
}
