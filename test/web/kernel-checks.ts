// Runs in the page (bundled by test/web-kernels.test.ts): every webgpu kernel against the reference kernel on the same
// inputs (float32, and 16-bit weights for the kernels that read them), over shape variants with odd sizes and size 1.
// Each check returns the largest difference relative to max(1, max |reference|), over the kernel's results and the
// arguments it modifies in place, with the tolerance of its result's dtype. The 16-bit storage itself (casts, copies,
// uploads) is checked bit for bit against the host's encoding (storageChecks).

import type { Device } from '../../src/backend/device.js';
import { type Kernels, kernels, supports } from '../../src/backend/kernels.js';
import { referenceBackend } from '../../src/backend/select.js';
import { retentionGammas } from '../../src/backend/reference/retention-math.js';
import { requestWebGpu } from '../../src/backend/webgpu/index.js';
import type { WebGpuDevice } from '../../src/backend/webgpu/device.js';
import { type DType, decode } from '../../src/tensor/dtype.js';
import { Rng } from '../../src/tensor/random.js';
import type { Tensor } from '../../src/tensor/tensor.js';

/** An input: random floats (normal × scale, or uniform in [lo, hi)), int ids below `limit`, or given values. */
type Input =
  | { shape: number[]; scale?: number; lo?: number; hi?: number; dtype?: DType }
  | { shape: number[]; ids: number }
  | { shape: number[]; values: number[] };

interface Case {
  name: string;
  inputs: Input[];
  /** The dtype the kernels are dispatched on (default float32). */
  dtype?: DType;
  /** The largest relative difference allowed (default 1e-4: float32 results). */
  tol?: number;
  /** Calls the kernel; returns the tensors to compare (results, then in-place arguments). */
  run: (k: Kernels, x: Tensor[]) => Tensor[];
}

export interface CheckResult {
  name: string;
  err: number;
  tol: number;
  shapes: string;
}

const T = (shape: number[], scale = 1): Input => ({ shape, scale });
/** Random normal values held in a 16-bit dtype (rounded by the host on either device). */
const H = (shape: number[], dtype: DType): Input => ({ shape, scale: 1, dtype });
/** A result rounded to a 16-bit dtype: one unit in its last place, relative (8 and 11 significant bits). */
const ULP: Partial<Record<DType, number>> = { bfloat16: 2 ** -8, float16: 2 ** -11 };

/**
 * More kernels that read 16-bit weights (products, embedding; the plain products are in cases()), and two that go
 * through float32 casts.
 */
function cases16(): Case[] {
  const out: Case[] = [];
  for (const dt of ['bfloat16', 'float16'] as const) {
    out.push(
      {
        name: `matmul float32 x ${dt} shared b`,
        inputs: [T([3, 2, 5]), H([4, 5], dt)],
        dtype: dt,
        run: (k, [a, b]) => [k.matmul(a!, b!, false, true)],
      },
      ...(
        [
          [3, 5, 7],
          [45, 33, 19],
        ] as const
      ).map(([M, K, N]): Case => ({
        name: `matmul ${dt} x ${dt} ${M}x${K}x${N} transB (rounded to ${dt})`,
        inputs: [H([M, K], dt), H([N, K], dt)],
        dtype: dt,
        tol: ULP[dt],
        run: (k, [a, b]) => [k.matmul(a!, b!, false, true)],
      })),
      {
        name: `embedding ${dt} [11, 5]`,
        inputs: [H([11, 5], dt), { shape: [2, 3], ids: 11 }],
        dtype: dt,
        tol: 0,
        run: (k, [t, i]) => [k.embedding(t!, i!)],
      },
      {
        name: `embedding ${dt} [7, 4], 3 ids`,
        inputs: [H([7, 4], dt), { shape: [3], ids: 7 }],
        dtype: dt,
        tol: 0,
        run: (k, [t, i]) => [k.embedding(t!, i!)],
      },
      {
        name: `embedding ${dt} 1x1`,
        inputs: [H([1, 1], dt), { shape: [1], ids: 1 }],
        dtype: dt,
        tol: 0,
        run: (k, [t, i]) => [k.embedding(t!, i!)],
      },
      {
        name: `softmax ${dt} (through float32)`,
        inputs: [{ shape: [3, 9], scale: 4, dtype: dt }],
        dtype: dt,
        tol: ULP[dt],
        run: (k, [x]) => [k.softmax(x!)],
      },
      {
        name: `copyBlocks ${dt} (through float32)`,
        inputs: [H([5, 7], dt), H([4, 9], dt)],
        dtype: dt,
        tol: 0,
        run: (k, [s, d]) => (k.copyBlocks(s!, 1, 7, d!, 2, 9, 3, 5), [d!]),
      },
    );
  }
  return out;
}
const U = (shape: number[], lo: number, hi: number): Input => ({ shape, lo, hi });

function cases(): Case[] {
  const out: Case[] = [];
  // Products with b (the weight) in float32 or held in 16 bits, dispatched on b's dtype as linear() does.
  for (const wd of ['float32', 'bfloat16', 'float16'] as const)
    for (const [M, K, N] of [
      [1, 1, 1],
      [3, 5, 7],
      [17, 33, 19],
      [40, 1, 3],
      [45, 33, 19],
    ] as const)
      for (const [ta, tb] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ] as const)
        out.push({
          name: `matmul${wd === 'float32' ? '' : ` float32 x ${wd}`} ${M}x${K}x${N}${ta ? ' transA' : ''}${tb ? ' transB' : ''}`,
          inputs: [T(ta ? [K, M] : [M, K]), { shape: tb ? [N, K] : [K, N], dtype: wd }],
          dtype: wd,
          run: (k, [a, b]) => [k.matmul(a!, b!, ta, tb)],
        });
  out.push(
    {
      name: 'matmul batched',
      inputs: [T([2, 3, 5]), T([2, 5, 4])],
      run: (k, [a, b]) => [k.matmul(a!, b!, false, false)],
    },
    { name: 'matmul shared b', inputs: [T([3, 2, 5]), T([4, 5])], run: (k, [a, b]) => [k.matmul(a!, b!, false, true)] },
    { name: 'add broadcast', inputs: [T([2, 3, 7]), T([7])], run: (k, [a, b]) => [k.binary('add', a!, b!)] },
    { name: 'add size 1', inputs: [T([1]), T([1])], run: (k, [a, b]) => [k.binary('add', a!, b!)] },
    { name: 'mul broadcast', inputs: [T([2, 3, 7]), T([3, 7])], run: (k, [a, b]) => [k.binary('mul', a!, b!)] },
    { name: 'mul scalar', inputs: [T([5, 3]), T([])], run: (k, [a, b]) => [k.binary('mul', a!, b!)] },
    { name: 'scale', inputs: [T([3, 301])], run: (k, [a]) => [k.scale(a!, -1.75)] },
    { name: 'scale size 1', inputs: [T([1])], run: (k, [a]) => [k.scale(a!, 3)] },
  );
  for (const kind of ['gelu', 'silu', 'relu'] as const)
    out.push(
      { name: kind, inputs: [T([5, 77], 3)], run: (k, [x]) => [k.activation(kind, x!)] },
      { name: `${kind} size 1`, inputs: [T([1], 2)], run: (k, [x]) => [k.activation(kind, x!)] },
    );
  for (const shape of [
    [3, 7],
    [1, 1],
    [2, 3, 65],
    [5, 200],
  ])
    out.push(
      {
        name: `rmsNorm with weight [${shape}]`,
        inputs: [T(shape), U([shape[shape.length - 1]!], 0.5, 1.5)],
        run: (k, [x, w]) => Object.values(k.rmsNorm(x!, w!, 1e-6)),
      },
      {
        name: `rmsNorm without weight [${shape}]`,
        inputs: [T(shape)],
        run: (k, [x]) => Object.values(k.rmsNorm(x!, null, 1e-5)),
      },
      {
        name: `gatedRmsNorm with weight [${shape}]`,
        inputs: [T(shape), T(shape, 3), U([shape[shape.length - 1]!], 0.5, 1.5)],
        run: (k, [x, z, w]) => Object.values(k.gatedRmsNorm(x!, z!, w!, 1e-6)),
      },
      {
        name: `gatedRmsNorm without weight [${shape}]`,
        inputs: [T(shape), T(shape, 3)],
        run: (k, [x, z]) => Object.values(k.gatedRmsNorm(x!, z!, null, 1e-5)),
      },
      { name: `softmax [${shape}]`, inputs: [T(shape, 4)], run: (k, [x]) => [k.softmax(x!)] },
    );
  out.push(
    { name: 'embedding', inputs: [T([11, 5]), { shape: [2, 3], ids: 11 }], run: (k, [t, i]) => [k.embedding(t!, i!)] },
    { name: 'embedding 1x1', inputs: [T([1, 1]), { shape: [1], ids: 1 }], run: (k, [t, i]) => [k.embedding(t!, i!)] },
    {
      name: 'copyBlocks',
      inputs: [T([5, 6]), T([4, 9])],
      run: (k, [s, d]) => (k.copyBlocks(s!, 1, 6, d!, 2, 9, 3, 4), [d!]),
    },
    {
      name: 'cast float32 -> int32 -> float32',
      inputs: [T([3, 7], 50)],
      run: (k, [x]) => {
        const i = k.cast(x!, 'int32');
        const back = k.cast(i, 'float32');
        i.dispose();
        return [back];
      },
    },
  );
  for (const pairs of ['interleaved', 'halves'] as const)
    for (const inverse of [false, true])
      for (const [B, Tn, H, K, perRow] of [
        [2, 5, 3, 6, false],
        [1, 1, 1, 2, false],
        [3, 1, 2, 8, true],
        [2, 4, 1, 4, true],
      ] as const)
        out.push({
          name: `rotary ${pairs}${inverse ? ' inverse' : ''} [${B},${Tn},${H},${K}]${perRow ? ' per row' : ''}`,
          inputs: [T([B, Tn, H, K]), U(perRow ? [B, Tn, K] : [Tn, K], -1, 1), U(perRow ? [B, Tn, K] : [Tn, K], -1, 1)],
          run: (k, [x, c, s]) => [k.rotary(x!, c!, s!, pairs, inverse)],
        });
  const shapes = [
    [2, 7, 3, 4, 5],
    [1, 1, 1, 2, 1],
    [1, 33, 2, 8, 6],
  ] as const;
  for (const normalize of [true, false])
    for (const [B, Tn, H, K, V] of shapes) {
      const gammas = retentionGammas(H);
      // Scaled inputs make the row sums exceed 1, so the normalisers (clamp, σ) are active.
      const qkv = [T([B, Tn, H, K], 2), T([B, Tn, H, K], 2), T([B, Tn, H, V], 2)];
      const forms: [string, 'parallel' | 'chunkwise', number][] = [
        ['parallel', 'parallel', 0],
        ['chunkwise C=1', 'chunkwise', 1],
        ['chunkwise C=3', 'chunkwise', 3],
        ['chunkwise C=8', 'chunkwise', 8],
        ['chunkwise C=T', 'chunkwise', Tn],
      ];
      const tag = `${normalize ? '' : ' not normalised'} [${B},${Tn},${H},${K},${V}]`;
      for (const [label, form, C] of forms)
        out.push({
          name: `retention ${label} with the final state${tag}`,
          inputs: qkv,
          run: (k, [q, kk, v]) => {
            const run = { chunkSize: C, normalize, initialState: null, segments: null, returnFinalState: true };
            const { o, r, finalState } = k.retentionForward(form, q!, kk!, v!, gammas, run);
            return [o, r, finalState!.state, finalState!.scale];
          },
        });
      // Sequences that continue a state: each batch row, then packed segments (an empty one included) of one row.
      const segments = Tn === 1 ? [0, 1] : Tn === 7 ? [3, 0, 4] : [5, 1, 0, 27];
      const packed = [T([1, Tn, H, K], 2), T([1, Tn, H, K], 2), T([1, Tn, H, V], 2)];
      for (const [label, form, C] of forms) {
        const stateRun = (segs: number[] | null) => ({
          chunkSize: C,
          normalize,
          segments: segs,
          returnFinalState: true,
        });
        out.push(
          {
            name: `retention ${label} from initial states${tag}`,
            inputs: [...qkv, T([B, H, K, V], 0.5), U([B, H], 0.5, 6)],
            run: (k, [q, kk, v, st, sc]) => {
              const run = { ...stateRun(null), initialState: { state: st!, scale: sc! } };
              const { o, r, finalState } = k.retentionForward(form, q!, kk!, v!, gammas, run);
              return [o, r, finalState!.state, finalState!.scale];
            },
          },
          {
            name: `retention ${label} packed segments ${segments.join('+')} from empty states${tag}`,
            inputs: packed,
            run: (k, [q, kk, v]) => {
              const run = { ...stateRun(segments), initialState: null };
              const { o, r, finalState } = k.retentionForward(form, q!, kk!, v!, gammas, run);
              return [o, r, finalState!.state, finalState!.scale];
            },
          },
          {
            name: `retention ${label} packed segments ${segments.join('+')} from initial states${tag}`,
            inputs: [...packed, T([segments.length, H, K, V], 0.5), U([segments.length, H], 0.5, 6)],
            run: (k, [q, kk, v, st, sc]) => {
              const run = { ...stateRun(segments), initialState: { state: st!, scale: sc! } };
              const { o, r, finalState } = k.retentionForward(form, q!, kk!, v!, gammas, run);
              return [o, r, finalState!.state, finalState!.scale];
            },
          },
        );
      }
      out.push(
        {
          name: `retentionStep${tag}`,
          inputs: [T([B, H, K]), T([B, H, K]), T([B, H, V]), T([B, H, K, V], 0.5), U([B, H], 0, 6)],
          run: (k, [q, kk, v, s, sc]) => [k.retentionStep(q!, kk!, v!, s!, sc!, gammas, normalize), s!, sc!],
        },
        {
          // A float16 state (stored back rounded): a sum either device's float32 arithmetic puts on the other side
          // of a float16 tie lands one unit apart.
          name: `retentionStep, float16 state${tag}`,
          inputs: [
            T([B, H, K]),
            T([B, H, K]),
            T([B, H, V]),
            { shape: [B, H, K, V], scale: 1, dtype: 'float16' },
            U([B, H], 0, 6),
          ],
          run: (k, [q, kk, v, s, sc]) => [k.retentionStep(q!, kk!, v!, s!, sc!, gammas, normalize), s!, sc!],
          tol: 2 * ULP.float16!,
        },
        {
          name: `retentionStep from empty${tag}`,
          inputs: [
            T([B, H, K]),
            T([B, H, K]),
            T([B, H, V]),
            { shape: [B, H, K, V], values: [] },
            { shape: [B, H], values: [] },
          ],
          run: (k, [q, kk, v, s, sc]) => [k.retentionStep(q!, kk!, v!, s!, sc!, gammas, normalize), s!, sc!],
        },
      );
    }
  return out;
}

function values(rng: Rng, spec: Input): { data: number[]; dtype: DType } {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  if ('ids' in spec) return { data: Array.from({ length: n }, () => rng.int(spec.ids)), dtype: 'int32' };
  if ('values' in spec)
    return { data: spec.values.length === n ? spec.values : new Array<number>(n).fill(0), dtype: 'float32' };
  const { scale = 1, lo, hi, dtype = 'float32' } = spec;
  return {
    data: Array.from({ length: n }, () => (lo !== undefined ? lo + (hi! - lo) * rng.uniform() : scale * rng.normal())),
    dtype,
  };
}

/** max |a − b| / max(1, max |b|). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let scale = 1;
  let worst = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
  }
  return worst / scale;
}

export async function kernelChecks(): Promise<{ results: CheckResult[]; errors: string[] }> {
  const gpu = await requestWebGpu();
  if (typeof gpu === 'string') throw new Error(gpu);
  const ref = referenceBackend();
  const results: CheckResult[] = [];
  for (const [i, c] of [...cases(), ...cases16()].entries()) {
    const rng = new Rng(100 + i);
    const specs = c.inputs.map((s) => values(rng, s));
    const on = async (d: Device) => {
      const xs = c.inputs.map((s, j) => d.fromData(specs[j]!.data, s.shape, specs[j]!.dtype));
      const outs = c.run(kernels(d, c.dtype ?? 'float32'), xs);
      const read = await Promise.all(outs.map((t) => t.dataAsync()));
      for (const t of new Set([...outs, ...xs])) t.dispose();
      return read;
    };
    const want = await on(ref);
    const got = await on(gpu);
    const err = Math.max(...want.map((w, j) => relErr(got[j]!, w)));
    const shapes = c.inputs.map((s) => `[${s.shape.join(',')}]`).join(' ');
    results.push({ name: c.name, err, tol: c.tol ?? 1e-4, shapes });
  }
  return { results, errors: [...gpu.errors] };
}

/** Float32 values that probe the 16-bit roundings: random bit patterns, ties (both parities), boundaries, specials. */
function roundingProbes(rng: Rng): Float32Array {
  const out: number[] = [0, -0, 1, -1, Infinity, -Infinity, NaN, 65504, 65519.99, 65520, -65520, 1e-8, 2 ** -24];
  out.push(3 * 2 ** -26, 2 ** -25, 2 ** -14, 2 ** -14 - 2 ** -25, 3.4e38, 1e-40, -1e-45);
  const bits = new Uint32Array(1);
  const f = new Float32Array(bits.buffer);
  for (let i = 0; i < 3000; i++) {
    bits[0] = rng.int(2 ** 16) * 2 ** 16 + rng.int(2 ** 16); // any pattern
    out.push(f[0]!);
    bits[0] = rng.int(2 ** 16) * 2 ** 16 + 0x8000; // a bfloat16 tie
    out.push(f[0]!);
    // A float16 tie: halfway between two neighbours, normal or subnormal.
    const h = rng.int(0x7bff);
    out.push(
      (decode('float16', new Uint16Array([h]), [1])[0]! + decode('float16', new Uint16Array([h + 1]), [1])[0]!) / 2,
    );
    out.push(rng.normal() * 10 ** (rng.int(12) - 8));
  }
  return Float32Array.from(out);
}

/** Same values, NaN equal to NaN and -0 distinct from 0. */
function mismatches(what: string, got: ArrayLike<number>, want: ArrayLike<number>): string[] {
  const bad: string[] = [];
  if (got.length !== want.length) return [`${what}: ${got.length} values, expected ${want.length}`];
  for (let i = 0; i < want.length && bad.length < 5; i++)
    if (!Object.is(got[i], want[i])) bad.push(`${what} at ${i}: got ${got[i]}, expected ${want[i]}`);
  return bad;
}

/**
 * The 16-bit storage on webgpu against the host, exactly: every bfloat16 and float16 bit pattern read back as float32,
 * casts from float32 (rounding probes), to and from int32 and between the two 16-bit dtypes, uploads of values
 * (rounded by the host), and copies at odd element offsets. Returns the mismatches and how many checks ran.
 */
export async function storageChecks(): Promise<{ bad: string[]; checks: number; errors: string[] }> {
  const gpu = (await requestWebGpu()) as WebGpuDevice;
  const ref = referenceBackend();
  const bad: string[] = [];
  let checks = 0;
  const rng = new Rng(16);
  const probes = roundingProbes(rng);
  const check = async (what: string, make: (d: Device) => Tensor) => {
    const [g, r] = [make(gpu), make(ref)];
    bad.push(...mismatches(what, await g.dataAsync(), await r.dataAsync()));
    g.dispose();
    r.dispose();
    checks++;
  };
  const all = new Uint16Array(65536).map((_, i) => i);
  for (const dt of ['bfloat16', 'float16'] as const) {
    const other = dt === 'bfloat16' ? 'float16' : 'bfloat16';
    const cast = (d: Device, t: Tensor, to: DType) => {
      const y = kernels(d, t.dtype).cast(t, to);
      t.dispose();
      return y;
    };
    await check(`every ${dt} pattern read`, (d) => d.fromStorage(all, [65536], dt));
    await check(`every ${dt} pattern cast to float32`, (d) => cast(d, d.fromStorage(all, [65536], dt), 'float32'));
    await check(`float32 cast to ${dt}`, (d) => cast(d, d.fromData(probes, [probes.length], 'float32'), dt));
    await check(`float32 uploaded as ${dt}`, (d) => d.fromData(probes, [probes.length], dt));
    // Values that stay finite in both 16-bit dtypes (±Infinity to int32 is each device's own choice).
    const finite = probes.filter((x) => Math.abs(x) < 65504);
    await check(`${dt} cast to int32`, (d) => cast(d, d.fromData(finite, [finite.length], dt), 'int32'));
    const ints = Array.from({ length: 999 }, () => rng.int(2 ** 20) - 2 ** 19);
    await check(`int32 cast to ${dt}`, (d) => cast(d, d.fromData(ints, [ints.length], 'int32'), dt));
    await check(`${dt} cast to ${other}`, (d) => cast(d, d.fromStorage(all, [65536], dt), other));
    // Copies at every parity of offsets and lengths, into a tensor of other values (the halves around them kept).
    for (const [so, dOff, len] of [
      [1, 2, 5],
      [0, 1, 4],
      [3, 0, 6],
      [2, 4, 6],
      [1, 1, 7],
      [0, 0, 11],
      [4, 5, 6],
    ] as const)
      await check(`${dt} copy of ${len} from ${so} to ${dOff}`, (d) => {
        const src = d.fromData(probes.subarray(0, 11), [11], dt);
        const dst = d.fromData(probes.subarray(20, 31), [11], dt);
        d.copy(src, so, dst, dOff, len);
        src.dispose();
        return dst;
      });
    await check(`${dt} copy within one tensor`, (d) => {
      const t = d.fromData(probes.subarray(0, 9), [9], dt);
      d.copy(t, 1, t, 4, 5);
      return t;
    });
  }
  return { bad, checks, errors: [...gpu.errors] };
}

/** Buffers created over a run of allocations that repeat (as a generation's steps do): the pool must absorb them. */
export async function poolCheck(): Promise<{ first: number; later: number; memory: number }> {
  const gpu = (await requestWebGpu()) as WebGpuDevice;
  const k = kernels(gpu, 'float32');
  const held = gpu.memory.current; // e.g. the decay tables retentionStep keeps per layer
  const x = gpu.fromData(new Float32Array(64).fill(1), [4, 16], 'float32');
  const round = async () => {
    const y = k.scale(x, 2);
    const z = k.activation('silu', y);
    await z.dataAsync();
    y.dispose();
    z.dispose();
  };
  const before = gpu.gpuMemory().created;
  await round();
  const first = gpu.gpuMemory().created - before;
  const mid = gpu.gpuMemory().created;
  for (let i = 0; i < 20; i++) await round();
  const later = gpu.gpuMemory().created - mid;
  x.dispose();
  return { first, later, memory: gpu.memory.current - held };
}

/**
 * Kernels the webgpu device lacks run on the host in stream order (Device.deferHost): a chain that mixes webgpu
 * kernels, fallbacks on their results, webgpu kernels on a fallback's results, a host write while a fallback is
 * pending, and an in-place fallback (adamw), on the reference device and on webgpu; the largest relative difference.
 */
export async function fallbackCheck(): Promise<{
  err: number;
  missing: string[];
  hostNumber: string;
  failure: string;
}> {
  const gpu = (await requestWebGpu()) as WebGpuDevice;
  const used = ['rmsNormBackward', 'permute', 'adamw', 'crossEntropy'] as const;
  const missing = used.filter((name) => !supports(name, 'webgpu', ['float32']));
  const rng = new Rng(7);
  const randn = (n: number) => Array.from({ length: n }, () => rng.normal());
  const [X, X2, G, W, P, Gr, L] = [192, 192, 192, 8, 15, 15, 35].map(randn) as number[][];
  const chain = async (d: Device) => {
    const k = kernels(d, 'float32');
    const x = d.fromData(X!, [4, 6, 8], 'float32');
    const g = d.fromData(G!, [4, 6, 8], 'float32');
    const w = d.fromData(W!, [8], 'float32');
    const a = k.scale(x, 1.5); // a webgpu kernel
    const { y, rstd } = k.rmsNorm(a, w, 1e-6); // another
    const { dx, dw } = k.rmsNormBackward(a, w, rstd, g); // a fallback on their results
    const p = k.permute(dx, [1, 0, 2]); // a fallback on a fallback's result
    const s = k.activation('silu', p); // a webgpu kernel on a fallback's result
    d.write(x, X2!); // a host write while the fallbacks wait: a must still be 1.5 X
    const b = k.scale(x, 2);
    const param = d.fromData(P!, [5, 3], 'float32');
    const grad = d.fromData(Gr!, [5, 3], 'float32');
    const m = d.zeros([5, 3], 'float32');
    const v = d.zeros([5, 3], 'float32');
    const opt = { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.01, step: 1, gradScale: 1 };
    k.adamw(param, grad, m, v, opt); // in place
    const c = k.scale(param, 3); // a webgpu kernel on an in-place fallback's result
    const logits = d.fromData(L!, [5, 7], 'float32');
    const targets = d.fromData([0, 6, 3, -100, 1], [5], 'int32');
    const { loss, lse } = k.crossEntropy(logits, targets, -100);
    const outs = [a, y, rstd, dx, dw!, p, s, b, param, m, v, c, loss, lse];
    const read = await Promise.all(outs.map((t) => t.dataAsync()));
    for (const t of [x, g, w, grad, logits, targets, ...outs]) t.dispose();
    return read;
  };
  const want = await chain(referenceBackend());
  const got = await chain(gpu);
  const err = Math.max(...want.map((w, j) => relErr(got[j]!, w)));
  // A kernel whose result is a host number cannot be deferred; a value error of a deferred kernel reaches readAsync.
  let hostNumber = '';
  const t = gpu.fromData([1, 2, 3], [3], 'float32');
  try {
    kernels(gpu, 'float32').sumSquares([t]);
  } catch (e) {
    hostNumber = (e as Error).message;
  }
  // Targets [0, 9] computed on the GPU (so only the real pass sees the 9) for logits of 7 classes.
  const k = kernels(gpu, 'float32');
  const made = [gpu.fromData([0, 1], [2], 'float32'), gpu.fromData([0, 8], [2], 'float32')];
  made.push(k.binary('add', made[0]!, made[1]!));
  made.push(k.cast(made[2]!, 'int32'), gpu.fromData(new Float32Array(14), [2, 7], 'float32'));
  const { loss, lse } = k.crossEntropy(made[4]!, made[3]!, -100);
  let failure = '';
  try {
    await loss.dataAsync();
  } catch (e) {
    failure = (e as Error).message;
  }
  for (const x of [t, loss, lse, ...made]) x.dispose();
  return { err, missing, hostNumber, failure };
}

declare global {
  interface Window {
    retnetTest: Record<string, () => Promise<unknown>>;
  }
}
window.retnetTest = { kernelChecks, storageChecks, poolCheck, fallbackCheck };
