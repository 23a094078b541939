// One table of op cases, used twice: native against reference (conformance.test.ts) and every backward against
// finite differences (gradients.test.ts). Each case lists shape variants: odd sizes, size 1, and empty where legal.

import type { Device } from '../src/backend/device.js';
import type { DType } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import type { Tensor } from '../src/tensor/tensor.js';
import * as ops from '../src/ops/index.js';
import { randomData } from './helpers.js';
import { retentionGammas } from '../src/backend/reference/retention-math.js';

export type InputSpec =
  | {
      kind: 'float';
      shape: number[];
      grad?: boolean;
      scale?: number;
      positive?: boolean;
    }
  | { kind: 'ids'; shape: number[]; limit: number; ignore?: number };

export interface OpCase {
  name: string;
  variants: InputSpec[][];
  f: (x: Tensor[]) => Tensor;
  /** Forward tolerance of native float32 against reference float32 (relative to max(1, max|ref|)). */
  tol?: number;
  /** False when the op has no meaningful gradient check (e.g. no float input needs one). */
  gradCheck?: boolean;
}

const f = (shape: number[], extra: Partial<Extract<InputSpec, { kind: 'float' }>> = {}): InputSpec => ({
  kind: 'float',
  shape,
  grad: true,
  ...extra,
});

export const opCases: OpCase[] = [
  {
    name: 'add (same shape)',
    variants: [
      [f([3, 5]), f([3, 5])],
      [f([1]), f([1])],
      [f([0, 4]), f([0, 4])],
    ],
    f: ([a, b]) => ops.add(a!, b!),
  },
  {
    name: 'add (broadcast suffix)',
    variants: [
      [f([2, 3, 7]), f([7])],
      [f([4, 1]), f([1])],
      [f([5, 3]), f([5, 3])],
      [f([2, 3]), f([])],
    ],
    f: ([a, b]) => ops.add(a!, b!),
  },
  {
    name: 'mul (broadcast suffix)',
    variants: [
      [f([2, 3, 7]), f([3, 7])],
      [f([6]), f([6])],
      [f([1, 1]), f([1])],
    ],
    f: ([a, b]) => ops.mul(a!, b!),
  },
  {
    name: 'scale',
    variants: [[f([3, 4])], [f([1])], [f([0])]],
    f: ([a]) => ops.scale(a!, -1.75),
  },
  {
    name: 'sum',
    variants: [[f([3, 4])], [f([1])], [f([2, 0])]],
    f: ([a]) => ops.sum(a!),
  },
  {
    name: 'matmul',
    variants: [
      [f([5, 7]), f([7, 3])],
      [f([1, 1]), f([1, 1])],
      [f([2, 3, 4]), f([2, 4, 5])],
      [f([0, 3]), f([3, 2])],
    ],
    f: ([a, b]) => ops.matmul(a!, b!),
    tol: 1e-5,
  },
  {
    name: 'matmul transA',
    variants: [
      [f([7, 5]), f([7, 3])],
      [f([2, 4, 3]), f([2, 4, 5])],
    ],
    f: ([a, b]) => ops.matmul(a!, b!, { transA: true }),
    tol: 1e-5,
  },
  {
    name: 'matmul transB',
    variants: [
      [f([5, 7]), f([3, 7])],
      [f([2, 3, 4]), f([2, 5, 4])],
      [f([2, 3, 4]), f([5, 4])],
    ],
    f: ([a, b]) => ops.matmul(a!, b!, { transB: true }),
    tol: 1e-5,
  },
  {
    name: 'matmul transA transB',
    variants: [
      [f([7, 5]), f([3, 7])],
      [f([3, 2, 1]), f([3, 4, 2])],
    ],
    f: ([a, b]) => ops.matmul(a!, b!, { transA: true, transB: true }),
    tol: 1e-5,
  },
  {
    name: 'matmul shared b',
    variants: [
      [f([2, 3, 4]), f([4, 5])],
      [f([1, 1, 1]), f([1, 2])],
    ],
    f: ([a, b]) => ops.matmul(a!, b!),
    tol: 1e-5,
  },
  {
    name: 'linear with bias',
    variants: [
      [f([2, 3, 5]), f([4, 5]), f([4])],
      [f([5]), f([1, 5]), f([1])],
      [f([0, 3]), f([2, 3]), f([2])],
    ],
    f: ([x, w, b]) => ops.linear(x!, w!, b!),
    tol: 1e-5,
  },
  {
    name: 'linear without bias',
    variants: [[f([3, 6]), f([5, 6])]],
    f: ([x, w]) => ops.linear(x!, w!),
    tol: 1e-5,
  },
  {
    name: 'gelu',
    variants: [[f([4, 9], { scale: 2 })], [f([1])], [f([0])]],
    f: ([x]) => ops.gelu(x!),
  },
  {
    name: 'silu',
    variants: [[f([4, 9], { scale: 3 })], [f([1])]],
    f: ([x]) => ops.silu(x!),
  },
  { name: 'relu', variants: [[f([5, 7])], [f([1])]], f: ([x]) => ops.relu(x!) },
  {
    name: 'rmsNorm with weight',
    variants: [
      [f([3, 4, 9]), f([9])],
      [f([1, 1]), f([1])],
      [f([0, 5]), f([5])],
    ],
    f: ([x, w]) => ops.rmsNorm(x!, w!, 1e-6),
  },
  {
    name: 'rmsNorm without weight',
    variants: [[f([6, 7])], [f([1])]],
    f: ([x]) => ops.rmsNorm(x!, null, 1e-6),
  },
  {
    name: 'gatedRmsNorm with weight',
    variants: [
      [f([2, 3, 5, 7]), f([2, 3, 5, 7], { scale: 3 }), f([7])],
      [f([1, 1]), f([1, 1]), f([1])],
      [f([0, 5]), f([0, 5]), f([5])],
    ],
    f: ([x, z, w]) => ops.gatedRmsNorm(x!, z!, w!, 1e-6),
  },
  {
    name: 'gatedRmsNorm without weight',
    variants: [
      [f([3, 4, 9]), f([3, 4, 9], { scale: 3 })],
      [f([1]), f([1])],
    ],
    f: ([x, z]) => ops.gatedRmsNorm(x!, z!, null, 1e-6),
  },
  {
    name: 'softmax',
    variants: [[f([4, 13], { scale: 3 })], [f([1, 1])], [f([0, 3])]],
    f: ([x]) => ops.softmax(x!),
  },
  {
    name: 'crossEntropy',
    variants: [
      [f([2, 5, 11], { scale: 2 }), { kind: 'ids', shape: [2, 5], limit: 11, ignore: -100 }],
      [f([1, 1]), { kind: 'ids', shape: [1], limit: 1 }],
      [f([3, 7]), { kind: 'ids', shape: [3], limit: 7 }],
    ],
    f: ([x, t]) => ops.crossEntropy(x!, t!),
  },
  {
    name: 'embedding',
    variants: [
      [f([7, 5]), { kind: 'ids', shape: [2, 6], limit: 7 }],
      [f([1, 1]), { kind: 'ids', shape: [1], limit: 1 }],
      [f([3, 2]), { kind: 'ids', shape: [0], limit: 3 }],
    ],
    f: ([t, ids]) => ops.embedding(t!, ids!),
  },
  {
    name: 'reshape',
    variants: [[f([2, 6])], [f([1])]],
    f: ([x]) => ops.reshape(x!, [-1]),
  },
  {
    name: 'permute',
    variants: [[f([2, 3, 4, 5])], [f([1, 1, 1, 1])], [f([3, 0, 2, 1])]],
    f: ([x]) => ops.permute(x!, [2, 0, 3, 1]),
  },
  {
    name: 'transpose',
    variants: [[f([3, 5])], [f([1, 4])]],
    f: ([x]) => ops.transpose(x!, 0, 1),
  },
  {
    name: 'slice',
    variants: [[f([4, 6, 3])], [f([1, 6, 1])]],
    f: ([x]) => ops.slice(x!, 1, 2, 5),
  },
  {
    name: 'concat',
    variants: [
      [f([2, 3, 4]), f([2, 1, 4]), f([2, 0, 4])],
      [f([1, 1, 1]), f([1, 2, 1])],
    ],
    f: (xs) => ops.concat(xs, 1),
  },
  // Retention with small inputs keeps every normaliser at its clamp of 1, so the detached normalisers are constants
  // and finite differences see exactly the gradient the kernels compute.
  ...[
    { form: 'parallel' as const, chunkSize: 0 },
    { form: 'chunkwise' as const, chunkSize: 1 },
    { form: 'chunkwise' as const, chunkSize: 3 },
    { form: 'chunkwise' as const, chunkSize: 16 },
  ].map(({ form, chunkSize }): OpCase => ({
    name: `retention ${form}${chunkSize ? ` C=${chunkSize}` : ''}`,
    variants: [
      // q, k: [B, T, H, K]; v: [B, T, H, V]
      [f([2, 7, 2, 4], { scale: 0.2 }), f([2, 7, 2, 4], { scale: 0.2 }), f([2, 7, 2, 6], { scale: 0.2 })],
      [f([1, 1, 1, 2], { scale: 0.2 }), f([1, 1, 1, 2], { scale: 0.2 }), f([1, 1, 1, 1], { scale: 0.2 })],
      [f([1, 5, 3, 2], { scale: 0.3 }), f([1, 5, 3, 2], { scale: 0.3 }), f([1, 5, 3, 3], { scale: 0.3 })],
      [f([1, 0, 2, 2]), f([1, 0, 2, 2]), f([1, 0, 2, 3])],
    ],
    f: ([q, k, v]) => ops.retention(q!, k!, v!, retentionGammas(q!.shape[2]!), { form, chunkSize }),
    tol: 1e-5,
  })),
  // fla's retention (no normalisers): any scale of inputs.
  ...[
    { form: 'parallel' as const, chunkSize: 0 },
    { form: 'chunkwise' as const, chunkSize: 3 },
    { form: 'chunkwise' as const, chunkSize: 16 },
  ].map(({ form, chunkSize }): OpCase => ({
    name: `retention ${form}${chunkSize ? ` C=${chunkSize}` : ''}, not normalised`,
    variants: [
      [f([2, 7, 2, 4]), f([2, 7, 2, 4]), f([2, 7, 2, 6])],
      [f([1, 1, 1, 2]), f([1, 1, 1, 2]), f([1, 1, 1, 1])],
      [f([1, 0, 2, 2]), f([1, 0, 2, 2]), f([1, 0, 2, 3])],
    ],
    f: ([q, k, v]) => ops.retention(q!, k!, v!, retentionGammas(q!.shape[2]!), { form, chunkSize, normalize: false }),
    tol: 1e-5,
  })),
  {
    name: 'retention chunkwise, active normalisers (forward)',
    variants: [[f([1, 11, 2, 4], { scale: 2 }), f([1, 11, 2, 4], { scale: 2 }), f([1, 11, 2, 3], { scale: 2 })]],
    f: ([q, k, v]) => ops.retention(q!, k!, v!, retentionGammas(2), { form: 'chunkwise', chunkSize: 4 }),
    tol: 1e-5,
    gradCheck: false,
  },
  // State-carrying retention over packed segments (inference only): o, the final states and their scales, flattened.
  ...[
    { form: 'parallel' as const, chunkSize: 0, normalize: true },
    { form: 'chunkwise' as const, chunkSize: 3, normalize: true },
    { form: 'parallel' as const, chunkSize: 0, normalize: false },
    { form: 'chunkwise' as const, chunkSize: 2, normalize: false },
  ].map(({ form, chunkSize, normalize }): OpCase => {
    const state = (N: number, H: number, K: number, V: number) => [
      f([N, H, K, V], { grad: false, scale: 2 }),
      f([N, H], { grad: false, positive: true, scale: 3 }),
    ];
    const segmentsOf: Record<number, number[]> = { 11: [4, 0, 7], 1: [1], 0: [0, 0], 9: [9] };
    return {
      name: `retention ${form}${chunkSize ? ` C=${chunkSize}` : ''}${normalize ? '' : ', un-normalised'}: initial state, final state, segments`,
      variants: [
        [
          f([1, 11, 2, 4], { grad: false }),
          f([1, 11, 2, 4], { grad: false }),
          f([1, 11, 2, 3], { grad: false }),
          ...state(3, 2, 4, 3),
        ],
        [
          f([1, 1, 1, 2], { grad: false }),
          f([1, 1, 1, 2], { grad: false }),
          f([1, 1, 1, 1], { grad: false }),
          ...state(1, 1, 2, 1),
        ],
        [
          f([1, 0, 2, 2], { grad: false }),
          f([1, 0, 2, 2], { grad: false }),
          f([1, 0, 2, 3], { grad: false }),
          ...state(2, 2, 2, 3),
        ],
        [
          f([1, 9, 3, 2], { grad: false }),
          f([1, 9, 3, 2], { grad: false }),
          f([1, 9, 3, 5], { grad: false }),
          ...state(1, 3, 2, 5),
        ],
      ],
      f: ([q, k, v, s, scale]) => {
        const { o, finalState } = ops.retentionForward(form, q!, k!, v!, retentionGammas(q!.shape[2]!), {
          chunkSize,
          normalize,
          initialState: { state: s!, scale: scale! },
          returnFinalState: true,
          segments: segmentsOf[q!.shape[1]!]!,
        });
        const flat = (t: Tensor) => ops.reshape(t, [t.size]);
        return ops.concat([flat(o), flat(finalState!.state), flat(finalState!.scale)], 0);
      },
      tol: 1e-5,
      gradCheck: false,
    };
  }),
  // Dropout masks come from a seeded counter-based kernel: the same seed gives the same mask on every device.
  ...[false, true].map((perRow): OpCase => ({
    name: `dropout${perRow ? ' per row' : ''} (seeded mask kernel)`,
    variants: [[f([3, 5, 7])], [f([1])], [f([0, 4])]],
    f: ([x]) => ops.dropout(x!, 0.4, new Rng(11), perRow),
  })),
  ...(['interleaved', 'halves'] as const).map((pairs): OpCase => ({
    name: `rotary ${pairs}`,
    variants: [
      [f([2, 3, 2, 4]), f([3, 4], { grad: false }), f([3, 4], { grad: false })],
      [f([2, 1, 3, 2]), f([2, 1, 2], { grad: false }), f([2, 1, 2], { grad: false })],
      [f([1, 5, 3, 6]), f([1, 5, 6], { grad: false }), f([1, 5, 6], { grad: false })],
      [f([1, 0, 1, 2]), f([0, 2], { grad: false }), f([0, 2], { grad: false })],
    ],
    f: ([x, c, s]) => ops.rotary(x!, c!, s!, pairs),
  })),
  ...(['naive', 'flash'] as const).map((algorithm): OpCase => ({
    name: `causalAttention ${algorithm}`,
    variants: [
      // q, k: [B, T, H, K]; v: [B, T, H, V]
      [f([2, 7, 2, 4]), f([2, 7, 2, 4]), f([2, 7, 2, 3])],
      [f([1, 1, 1, 2]), f([1, 1, 1, 2]), f([1, 1, 1, 1])],
      [f([1, 5, 3, 2], { scale: 2 }), f([1, 5, 3, 2], { scale: 2 }), f([1, 5, 3, 3])],
      [f([1, 0, 2, 2]), f([1, 0, 2, 2]), f([1, 0, 2, 3])],
    ],
    f: ([q, k, v]) => ops.causalAttention(q!, k!, v!, { algorithm }),
    tol: 1e-5,
  })),
];

/** Builds a case's inputs on a backend from one seeded draw, so every backend sees the same values. */
export function buildInputs(be: Device, rng: Rng, specs: InputSpec[], dtype: DType): Tensor[] {
  return specs.map((s) => {
    if (s.kind === 'ids') {
      const n = s.shape.reduce((a, b) => a * b, 1);
      const ids = Array.from({ length: n }, (_, i) =>
        s.ignore !== undefined && i % 4 === 3 ? s.ignore : rng.int(s.limit),
      );
      return be.fromData(ids, s.shape, 'int32');
    }
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = randomData(rng, n, s.scale ?? 1);
    if (s.positive) data.forEach((x, i) => (data[i] = Math.abs(x)));
    const t = be.fromData(data, s.shape, dtype);
    t.requiresGrad = s.grad ?? false;
    return t;
  });
}
