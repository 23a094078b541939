// The kernel table. A kernel is one named computation with the signature in `Kernels`; implementations are
// registered per (kernel, device) with the dtypes they handle (in the spirit of tfjs's kernel registry and ggml's
// supports_op), so a device implements any subset. An op validates shapes, then calls `kernels(device, dtype)`
// .name(...) and records the matching backward kernel on the tape. Dispatch is one property lookup on a table the
// device keeps per dtype (`Device.resolved`), built once from the registrations:
//   1. the device's own implementation for that dtype, if registered;
//   2. for a dtype computed in float32 (bfloat16, float16, quantized weights: see dtype.ts), the float32 kernel of
//      the same device on cast copies, results cast back (quantized results stay float32);
//   3. the reference device's implementation, through a host copy of the inputs, with one line on stderr (on a
//      device with asynchronous reads, webgpu, the device runs it later in its stream order: `Device.deferHost`);
//   4. otherwise an error naming the kernel, the device and the dtype.
// Kernels allocate their outputs on the device of their inputs and never modify inputs, except the arguments listed
// in `KERNEL_INFO[name].inPlace`.

import { DTypeError } from '../errors.js';
import { type DType, type ValueArray, computeDType, dtypeKind } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Device, DeviceName } from './device.js';

export type BinaryOp = 'add' | 'mul';
export type ActivationKind = 'gelu' | 'silu' | 'relu';
export type RetentionForm = 'parallel' | 'chunkwise';
/**
 * Which elements of a head the rotary op rotates together: 'interleaved' pairs (x[2j], x[2j+1]) (torchscale's
 * theta_shift, RoPE's original layout) or 'halves' (x[i], x[i+K/2]) (GPT-NeoX's rotate_half, fla's RetNet).
 */
export type RotaryPairs = 'interleaved' | 'halves';
export type AttentionAlgorithm = 'naive' | 'flash';

/** A retention state per sequence: state [N, H, K, V] and its decay sum scale [N, H] (0: empty). */
export interface RetentionState {
  state: Tensor;
  scale: Tensor;
}

/**
 * How a retention call runs (docs/retention.md). A sequence is a batch row, or with `segments` one of the packed
 * sequences of a batch of one row (fla's cu_seqlens, as lengths summing to T).
 */
export interface RetentionRun {
  /** Chunk size of the chunkwise form. */
  chunkSize: number;
  /**
   * torchscale's normalisers (the state carries S̃ = Z/sqrt(s), Z = Σ_m γ^(n−m) k_mᵀ v_m), or none (fla's RetNet:
   * o = q S, S_t = γ S_{t−1} + k_tᵀ v_t, r = 1; the state is Z itself). Without them every form is the same function.
   */
  normalize: boolean;
  /** The state each sequence continues ([N, H, K, V], [N, H]); null: empty states. */
  initialState: RetentionState | null;
  segments: readonly number[] | null;
  returnFinalState: boolean;
}

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
  /** Multiplies the gradient first (global-norm clipping folded into the update). */
  gradScale: number;
}

/** Every kernel's signature. Shapes are in the comments; rows = size / lastDim for the row-wise kernels. */
export interface Kernels {
  /** t's values in another dtype (a new tensor on the same device). */
  cast(t: Tensor, dtype: DType): Tensor;

  // Products. a: [..., M, K] ([..., K, M] if transA); b: [..., K, N] ([..., N, K] if transB) with the same leading
  // dims as a, or rank 2 (shared by every batch entry). Result [..., M, N].
  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor;
  /**
   * The products of several weights with one input: x [R, K] · wᵢᵀ for each wᵢ [Nᵢ, K] (one dtype, the dispatch
   * dtype) -> [R, Nᵢ] each, the same values as matmul(x, wᵢ, false, true) one by one (a decode step's q, k, v and g
   * projections; the FFN's fc1 and gate). A device may read x once and run them as one job.
   */
  matmulShared(x: Tensor, ws: readonly Tensor[]): Tensor[];

  // Elementwise. b's shape is a suffix of a's (broadcast over the leading dims).
  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor;
  scale(a: Tensor, alpha: number): Tensor;
  /** Sums g over its leading dims down to `shape`, a suffix of g's shape (the gradient of a broadcast). */
  sumToShape(g: Tensor, shape: readonly number[]): Tensor;
  activation(kind: ActivationKind, x: Tensor): Tensor;
  /**
   * Inverted dropout with a seeded counter-based mask: y = x ⊙ m, where each row of `rowSize` elements of m is
   * 1/(1−p) when u ≥ p, else 0, with u = fmix32(seed ⊕ row·0x9E3779B9) / 2³² — the same mask for a seed on every
   * device, so the backward pass is this kernel again on the gradient and no mask is stored.
   */
  dropout(x: Tensor, p: number, seed: number, rowSize: number): Tensor;
  activationBackward(kind: ActivationKind, x: Tensor, g: Tensor): Tensor;

  // Normalisation over the last dim; statistics are [rows].
  rmsNorm(x: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor };
  rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, g: Tensor): { dx: Tensor; dw: Tensor | null };
  /**
   * RetNet's gated per-head norm in one pass: y = rmsNorm(x, w) ⊙ silu(gate), gate the shape of x. The backward
   * recomputes the normalised x and the gate's swish from x, rstd and gate (nothing else is stored).
   */
  gatedRmsNorm(x: Tensor, gate: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor };
  gatedRmsNormBackward(
    x: Tensor,
    gate: Tensor,
    w: Tensor | null,
    rstd: Tensor,
    g: Tensor,
  ): { dx: Tensor; dgate: Tensor; dw: Tensor | null };

  softmax(x: Tensor): Tensor;
  softmaxBackward(y: Tensor, g: Tensor): Tensor;
  /** logits [N, V], targets int32 [N]. loss [N] (0 where ignored), lse [N] (log-sum-exp, kept for backward). */
  crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: number): { loss: Tensor; lse: Tensor };
  /** g: [N], the gradient of each row's loss. */
  crossEntropyBackward(logits: Tensor, targets: Tensor, lse: Tensor, g: Tensor, ignoreIndex: number): Tensor;

  /** table [V, D], ids int32 [...] -> [..., D]. */
  embedding(table: Tensor, ids: Tensor): Tensor;
  embeddingBackward(g: Tensor, ids: Tensor, vocab: number): Tensor;

  // Layout
  permute(x: Tensor, perm: readonly number[]): Tensor;
  /** In place on dst: for b < blocks, dst[dstOff + b*dstStride, +len) = src[srcOff + b*srcStride, +len). */
  copyBlocks(
    src: Tensor,
    srcOff: number,
    srcStride: number,
    dst: Tensor,
    dstOff: number,
    dstStride: number,
    blocks: number,
    len: number,
  ): void;

  // Optimizer (in place on param, m, v).
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void;
  /** Σ x² over every element of every tensor, in one call (the global gradient norm²). */
  sumSquares(xs: readonly Tensor[]): number;

  // Retention (RetNet's multi-scale retention, per head h with decay gammas[h]; see docs/retention.md and
  // torchscale/architecture/retnet.py, MultiScaleRetention). Time-major layouts, as projections produce them:
  // q, k: [B, T, H, K] (already rotated, k already scaled by K^-0.5); v: [B, T, H, V].
  // Every form computes o_n = r_n · U_n with U_n = Σ_{m≤n} γ^(n−m) (q_n·k_m) v_m; the forms differ only in the
  // per-row factor r_n, which is detached (torchscale detaches its normalisers), so one backward serves all forms.
  // `normalize` false drops the normalisers (r_n = 1; states S_t = γ S_{t−1} + k_tᵀ v_t): fla's retention
  // (fla/layers/multiscale_retention.py), the same function in every form.
  /**
   * o: [B, T, H, V]; r: [B, H, T] (the row factors, kept for backward); with `run.returnFinalState`, the state after
   * each sequence. See RetentionRun for states, segments and the un-normalised mode.
   */
  retentionForward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    run: RetentionRun,
  ): { o: Tensor; r: Tensor; finalState: RetentionState | null };
  /** Gradients of o = r ⊙ U for dO: [B, T, H, V]. 'chunkwise' never materialises a T×T matrix. */
  retentionBackward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    r: Tensor,
    dO: Tensor,
    chunkSize: number,
  ): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * One recurrent step (torchscale's MultiScaleRetention.recurrent_forward) for q, k: [B, H, K], v: [B, H, V]. In
   * place on state [B, H, K, V] and scale [B, H] (scale 0 = empty state): s' = sγ + 1,
   * S' = S·sqrt(s)γ/sqrt(s') + kᵀv/sqrt(s'). Returns o = q S': [B, H, V]. Without normalisation S' = γS + kᵀv (scale
   * is still counted).
   */
  retentionStep(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    state: Tensor,
    scale: Tensor,
    gammas: readonly number[],
    normalize: boolean,
  ): Tensor;
  /**
   * Rotation of pairs (a, b) of each head, x: [B, T, H, K]: y_a = x_a c − x_b s, y_b = x_b c + x_a s, with c, s read
   * at index a of the cos/sin tables [T, K] or [B, T, K]. 'interleaved': (a, b) = (2j, 2j+1) (torchscale's
   * theta_shift in torchscale/architecture/retnet.py); 'halves': (a, b) = (i, i+K/2) (fla's rotate_half). inverse
   * rotates by the opposite angle (the backward pass).
   */
  rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs, inverse: boolean): Tensor;

  // Attention (the Transformer baseline): causal multi-head softmax attention, per head
  // o_i = Σ_{j≤i} P_ij v_j with P_ij = softmax_j(q_i·k_j / sqrt(K)) over j ≤ i. Time-major layouts, as projections
  // produce them: q, k: [B, T, H, K] (rotated), v: [B, T, H, V]. 'naive' materialises P [B, H, T, T] and keeps it for
  // backward. 'flash' (FlashAttention) works in query × key tiles with an online softmax, keeps only the row
  // log-sum-exp L [B, H, T] and recomputes P from it tile by tile in backward, so no T×T buffer ever exists and memory
  // grows linearly with T.
  /** o: [B, T, H, V]; stats: P [B, H, T, T] ('naive') or L [B, H, T] ('flash'), kept for backward. */
  attentionForward(algorithm: AttentionAlgorithm, q: Tensor, k: Tensor, v: Tensor): { o: Tensor; stats: Tensor };
  /** Gradients for dO: [B, T, H, V], given the forward's o and stats. */
  attentionBackward(
    algorithm: AttentionAlgorithm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    stats: Tensor,
    dO: Tensor,
  ): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * KV-cache decoding: q [B, H, K] (one query per row) attends to the first lengths[b] positions of kCache
   * [B, H, C, K] and vCache [B, H, C, V] (1 ≤ lengths[b] ≤ C). Returns o: [B, H, V].
   */
  attentionDecode(q: Tensor, kCache: Tensor, vCache: Tensor, lengths: readonly number[]): Tensor;
}

export type KernelName = keyof Kernels;

/**
 * Per kernel: the argument positions it modifies in place (a fallback copies those back), and the results that are
 * statistics kept for the backward kernel (row factors, log-sum-exps): a kernel computed through a cast leaves those
 * in the compute dtype, since rounding them to 16 bits costs the backward far more than their storage saves (flash
 * attention's log-sum-exp in bfloat16 gave gradients 10% off).
 */
export const KERNEL_INFO: Record<KernelName, { inPlace: readonly number[]; stats?: readonly string[] }> = {
  cast: { inPlace: [] },
  matmul: { inPlace: [] },
  matmulShared: { inPlace: [] },
  binary: { inPlace: [] },
  scale: { inPlace: [] },
  sumToShape: { inPlace: [] },
  activation: { inPlace: [] },
  activationBackward: { inPlace: [] },
  rmsNorm: { inPlace: [], stats: ['rstd'] },
  rmsNormBackward: { inPlace: [] },
  gatedRmsNorm: { inPlace: [], stats: ['rstd'] },
  gatedRmsNormBackward: { inPlace: [] },
  softmax: { inPlace: [] },
  softmaxBackward: { inPlace: [] },
  crossEntropy: { inPlace: [], stats: ['lse'] },
  crossEntropyBackward: { inPlace: [] },
  embedding: { inPlace: [] },
  embeddingBackward: { inPlace: [] },
  permute: { inPlace: [] },
  copyBlocks: { inPlace: [3] },
  adamw: { inPlace: [0, 2, 3] },
  sumSquares: { inPlace: [] },
  dropout: { inPlace: [] },
  retentionForward: { inPlace: [], stats: ['r'] },
  retentionBackward: { inPlace: [] },
  retentionStep: { inPlace: [3, 4] },
  rotary: { inPlace: [] },
  attentionForward: { inPlace: [], stats: ['stats'] },
  attentionBackward: { inPlace: [] },
  attentionDecode: { inPlace: [] },
};

export const KERNEL_NAMES = Object.keys(KERNEL_INFO) as KernelName[];

type AnyKernel = (...args: never[]) => unknown;

interface Registration {
  dtypes: ReadonlySet<DType>;
  fn: AnyKernel;
}

/** kernel -> device -> implementations, the latest registration first. */
const table = new Map<KernelName, Map<DeviceName, Registration[]>>();
/** Devices whose resolved tables a registration must invalidate. */
const devices = new Set<Device>();
let referenceDevice: (() => Device) | null = null;
const said = new Set<string>();

/**
 * Registers the kernels `impl` defines (own or inherited methods named in KERNEL_INFO) for a device and the dtypes
 * they handle. A later registration for the same (kernel, device, dtype) takes precedence.
 */
export function registerKernels(device: DeviceName, dtypes: readonly DType[], impl: Partial<Kernels>): void {
  for (const name of KERNEL_NAMES) {
    const fn = (impl as Record<string, unknown>)[name];
    if (typeof fn !== 'function') continue;
    let byDevice = table.get(name);
    if (!byDevice) table.set(name, (byDevice = new Map()));
    let list = byDevice.get(device);
    if (!list) byDevice.set(device, (list = []));
    list.unshift({ dtypes: new Set(dtypes), fn: (fn as AnyKernel).bind(impl) });
  }
  for (const d of devices) for (const k of Object.keys(d.resolved)) delete d.resolved[k as DType];
}

/** Names the reference device, whose kernels a device without one runs through a host copy. */
export function setReferenceDevice(get: () => Device): void {
  referenceDevice = get;
}

function lookup(kernel: KernelName, device: DeviceName, dtype: DType): AnyKernel | null {
  for (const r of table.get(kernel)?.get(device) ?? []) if (r.dtypes.has(dtype)) return r.fn;
  return null;
}

/** True when `device` has its own implementation of `kernel` for every dtype in `dtypes`. */
export function supports(kernel: KernelName, device: DeviceName, dtypes: readonly DType[]): boolean {
  return dtypes.every((d) => lookup(kernel, device, d) !== null);
}

/** The kernels a device implements itself, with the dtypes of each (for `retnet info`). */
export function implementedKernels(device: DeviceName): Record<string, DType[]> {
  const out: Record<string, DType[]> = {};
  for (const name of KERNEL_NAMES) {
    const dtypes = new Set<DType>();
    for (const r of table.get(name)?.get(device) ?? []) for (const d of r.dtypes) dtypes.add(d);
    if (dtypes.size > 0) out[name] = [...dtypes];
  }
  return out;
}

/** The kernels for tensors of `dtype` on `device` (resolved once per device and dtype; see the file comment). */
export function kernels(device: Device, dtype: DType): Kernels {
  return device.resolved[dtype] ?? resolveTable(device, dtype);
}

/** The kernels for t's device and dtype. */
export function kernelsOf(t: Tensor): Kernels {
  const device = t.device;
  return device.resolved[t.dtype] ?? resolveTable(device, t.dtype);
}

function resolveTable(device: Device, dtype: DType): Kernels {
  devices.add(device);
  // Built in one go (Object.fromEntries), not property by property: V8 turns an object given more than a dozen
  // properties by computed-key stores into a hash table, and every `kernels(...).name` then pays a dictionary lookup.
  const out = Object.fromEntries(
    KERNEL_NAMES.map((name) => [name, resolve(name, device, dtype)]),
  ) as unknown as Kernels;
  device.resolved[dtype] = out;
  return out;
}

function resolve(name: KernelName, device: Device, dtype: DType): AnyKernel {
  const own = lookup(name, device.name, dtype);
  if (own) return own;
  const compute = computeDType(dtype);
  if (compute !== dtype && name !== 'cast') return viaCast(name, device, dtype, compute);
  const ref = referenceDevice?.();
  if (ref && ref !== device && lookup(name, ref.name, dtype)) return viaHost(name, device, ref, dtype);
  return () => {
    throw new DTypeError(`${name}: no kernel for ${dtype} tensors on the ${device.name} device`);
  };
}

type Args = unknown[];

function isTensor(x: unknown): x is Tensor {
  return typeof x === 'object' && x !== null && (x as { isTensor?: boolean }).isTensor === true;
}

/**
 * Applies f to every tensor of a kernel result (a tensor, an array of tensors, an object of tensors or nulls — one
 * level of nesting, as retentionForward's finalState —, a number, nothing); `key` is the top-level field.
 */
function mapResult(result: unknown, f: (t: Tensor, key?: string) => Tensor, depth = 0): unknown {
  if (isTensor(result)) return f(result);
  if (Array.isArray(result) && depth === 0) return result.map((t: unknown) => (isTensor(t) ? f(t) : t));
  if (typeof result !== 'object' || result === null || depth > 1) return result;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(result))
    out[k] = isTensor(v) ? f(v, depth === 0 ? k : undefined) : mapResult(v, f, depth + 1);
  return out;
}

/** Replaces the tensors of an argument (itself, or one level inside an array or a plain object) by `f`'s copies. */
function mapArg(a: unknown, f: (t: Tensor) => Tensor): unknown {
  if (isTensor(a)) return f(a);
  if (Array.isArray(a)) return a.map((x) => (isTensor(x) ? f(x) : x));
  if (typeof a === 'object' && a !== null && Object.getPrototypeOf(a) === Object.prototype)
    return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, mapArg(v, f)]));
  return a;
}

/**
 * The arguments with every tensor in them replaced by make(t) (as far as mapArg reaches, in its order), and the
 * replacements, for the caller to dispose.
 */
function replaceTensors(args: Args, make: (t: Tensor) => Tensor): { args: Args; made: Tensor[] } {
  const made: Tensor[] = [];
  const out = args.map((a) =>
    mapArg(a, (t) => {
      const c = make(t);
      made.push(c);
      return c;
    }),
  );
  return { args: out, made };
}

/** Case 2: cast the dispatch-dtype tensors to the compute dtype, run that kernel, cast the results back. */
function viaCast(name: KernelName, device: Device, dtype: DType, compute: DType): AnyKernel {
  const backTo = dtypeKind(dtype) === 'float' ? dtype : null;
  const stats = new Set(KERNEL_INFO[name].stats ?? []);
  return (...args: Args) => {
    const cast = kernels(device, dtype).cast;
    const made: Tensor[] = [];
    const copies = args.map((a) =>
      mapArg(a, (t) => {
        if (t.dtype !== dtype) return t;
        const c = cast(t, compute);
        made.push(c);
        return c;
      }),
    );
    const fn = kernels(device, compute)[name] as AnyKernel;
    const result = mapResult((fn as (...a: Args) => unknown)(...copies), (t, key) => {
      if (backTo === null || t.dtype !== compute || (key !== undefined && stats.has(key))) return t;
      const back = kernels(device, compute).cast(t, backTo);
      t.dispose();
      return back;
    });
    for (const i of KERNEL_INFO[name].inPlace) {
      const orig = args[i];
      const copy = copies[i];
      if (isTensor(orig) && isTensor(copy) && copy !== orig) {
        const back = kernels(device, compute).cast(copy, orig.dtype);
        device.copy(back, 0, orig, 0, orig.size);
        back.dispose();
      }
    }
    for (const c of made) c.dispose();
    return result;
  };
}

/**
 * Case 3: the reference kernel on host copies of the inputs; results (and in-place arguments) copied back. A device
 * whose reads are asynchronous (webgpu) cannot hand its inputs over now: `deferHost` runs the kernel later, in the
 * device's stream order.
 */
function viaHost(name: KernelName, device: Device, ref: Device, dtype: DType): AnyKernel {
  const key = `${name}/${device.name}/${dtype}`;
  const fn = (...a: Args): unknown => (kernels(ref, dtype)[name] as (...a: Args) => unknown)(...a);
  const inPlace = KERNEL_INFO[name].inPlace;
  return (...args: Args) => {
    if (!said.has(key)) {
      said.add(key);
      const line = `retnet: the ${device.name} device has no ${name} kernel for ${dtype}; running the reference kernel through a host copy`;
      // A browser has no stderr: its console shows the line instead.
      const stderr = globalThis.process?.stderr;
      if (stderr) stderr.write(`${line}\n`);
      else console.warn(line);
    }
    if (device.deferHost) return deferredHost(name, device, ref, fn, args);
    const { args: hostArgs, made: copies } = replaceTensors(args, (t) =>
      ref.fromData(device.read(t), t.shape, t.dtype),
    );
    const result = mapResult(fn(...hostArgs), (t) => {
      const back = device.fromData(ref.read(t), t.shape, t.dtype);
      t.dispose();
      return back;
    });
    for (const i of inPlace) {
      const orig = args[i];
      if (isTensor(orig)) device.write(orig, ref.read(hostArgs[i] as Tensor));
    }
    for (const c of copies) c.dispose();
    return result;
  };
}

/**
 * Case 3 on a device with asynchronous reads. The results are allocated now, with the shapes of a shape pass: the
 * reference kernel on zeros of the arguments' shapes (a kernel's result shapes depend only on its arguments' shapes
 * and numbers), which doubles a fallback's host work -- a fallback is the slow path by definition. The device then
 * runs the reference kernel on the arguments' values after everything recorded before it, writes its results (and
 * the in-place arguments) into those tensors, and holds back everything recorded later until it has (deferHost).
 */
function deferredHost(name: KernelName, device: Device, ref: Device, fn: (...a: Args) => unknown, args: Args): unknown {
  const inputs: Tensor[] = [];
  const { args: zeroArgs, made: zeros } = replaceTensors(args, (t) => {
    inputs.push(t);
    return ref.zeros(t.shape, t.dtype);
  });
  const outputs: Tensor[] = [];
  const result = mapResult(fn(...zeroArgs), (t) => {
    const out = device.empty(t.shape, t.dtype);
    outputs.push(out);
    t.dispose();
    return out;
  });
  for (const z of zeros) z.dispose();
  if (typeof result === 'number')
    throw new DTypeError(
      `${name}: the ${device.name} device has no ${name} kernel, and the reference kernel's result is a host number, ` +
        `which a device with asynchronous reads cannot give synchronously`,
    );
  const inPlace = KERNEL_INFO[name].inPlace.map((i) => args[i]).filter(isTensor);
  device.deferHost!(inputs, [...outputs, ...inPlace], (values) => {
    let at = 0;
    const { args: hostArgs, made: copies } = replaceTensors(args, (t) => ref.fromData(values[at++]!, t.shape, t.dtype));
    const results: ValueArray[] = [];
    mapResult(fn(...hostArgs), (t) => {
      results.push(ref.read(t));
      t.dispose();
      return t;
    });
    for (const i of KERNEL_INFO[name].inPlace) if (isTensor(args[i])) results.push(ref.read(hostArgs[i] as Tensor));
    for (const c of copies) c.dispose();
    return results;
  });
  return result;
}
