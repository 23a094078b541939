// The layers shared by RetNet and the Transformer baseline. Names follow torchscale / PyTorch so that state_dict keys
// line up: Linear.weight is [out, in], RMSNorm.weight is [D].

import { getBackend } from '../backend/select.js';
import type { Device } from '../backend/device.js';
import type { ActivationKind } from '../backend/kernels.js';
import type { DType } from '../tensor/dtype.js';
import type { Rng } from '../tensor/random.js';
import type { Tensor } from '../tensor/tensor.js';
import { needsGrad, release } from '../autograd/tape.js';
import { linear, linearShared, mul } from '../ops/math.js';
import { activation, dropout, embedding, rmsNorm } from '../ops/nn.js';
import { ShapeError } from '../errors.js';
import { Module } from './module.js';

/** Where parameters are created and how. */
export interface ParamOptions {
  backend?: Device;
  dtype?: DType;
  /** false: zeros instead of the initialiser's draws (the values come from a checkpoint next). Default true. */
  init?: boolean;
}

function fill(shape: number[], opts: ParamOptions, sample: () => number): Tensor {
  const be = opts.backend ?? getBackend();
  if (opts.init === false) return be.zeros(shape, opts.dtype ?? 'float32');
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = sample();
  return be.fromData(data, shape, opts.dtype ?? 'float32');
}

/** Xavier/Glorot uniform with gain: U(-a, a), a = gain * sqrt(6 / (fanIn + fanOut)). */
export function xavierUniform(shape: [number, number], rng: Rng, gain: number, opts: ParamOptions): Tensor {
  const a = gain * Math.sqrt(6 / (shape[0] + shape[1]));
  return fill(shape, opts, () => (2 * rng.uniform() - 1) * a);
}

/** PyTorch's default nn.Linear init: U(-1/sqrt(fanIn), 1/sqrt(fanIn)). */
export function linearDefault(shape: [number, number], rng: Rng, opts: ParamOptions, gain = 1): Tensor {
  const a = gain / Math.sqrt(shape[1]);
  return fill(shape, opts, () => (2 * rng.uniform() - 1) * a);
}

export function normal(shape: number[], rng: Rng, std: number, opts: ParamOptions): Tensor {
  return fill(shape, opts, () => std * rng.normal());
}

export function constant(shape: number[], value: number, opts: ParamOptions): Tensor {
  return fill(shape, opts, () => value);
}

/**
 * y = x Wᵀ (+ b). Bias-free by default, as every torchscale RetNet projection. W may be held in a storage dtype
 * (bfloat16, float16, qint8, qint4) under a float32 model: linear() then dispatches the product on W's dtype.
 */
export class Linear extends Module {
  weight: Tensor;
  readonly bias: Tensor | null;

  /**
   * weight: [out, in]; bias: [out]. `recompute`: while training, the output is recomputed from the input in
   * backward rather than kept (see the linear op), for layers whose output a later backward reads.
   */
  constructor(
    weight: Tensor,
    bias: Tensor | null = null,
    readonly recompute = false,
  ) {
    super();
    this.weight = this.param('weight', weight);
    this.bias = bias ? this.param('bias', bias) : null;
  }

  /** Holds the weight as `w` (same shape, e.g. quantized); returns the old tensor (see Module.replaceParam). */
  setWeight(w: Tensor): Tensor {
    const old = this.replaceParam('weight', w);
    this.weight = w;
    return old;
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias, this.recompute);
  }
}

/**
 * Rows of x up to which sharedForward runs: a decode step's (the cpu device's decode products take up to 16 rows,
 * backend/cpu/lowp.ts DECODE_ROWS). Beyond, the products gain nothing from sharing x, and computing them together
 * would hold all their outputs at once where the callers' own order holds fewer (a prefill's [T, ffn] activations).
 */
export const SHARED_ROWS = 16;

/**
 * Each layer's forward(x), for Linears that read the same x, through linearShared (one native job on the cpu
 * device); null where that does not apply — a layer with a bias, a gradient wanted (each layer's own forward keeps
 * its `recompute`), more than SHARED_ROWS rows of x — and the caller runs the layers its own way.
 */
export function sharedForward(x: Tensor, layers: readonly Linear[]): Tensor[] | null {
  const ws = layers.map((l) => l.weight);
  if (layers.some((l) => l.bias !== null) || needsGrad(x, ...ws) || x.size / x.shape[x.rank - 1]! > SHARED_ROWS)
    return null;
  return linearShared(x, ws);
}

/** A table of rows; they come out in the dtype the table was built in, also after setWeight holds it as bfloat16. */
export class Embedding extends Module {
  weight: Tensor;
  private readonly dtype: DType;

  constructor(weight: Tensor) {
    super();
    this.weight = this.param('weight', weight);
    this.dtype = weight.dtype;
  }

  /** Holds the table as `w` (same shape, another dtype); returns the old tensor (see Module.replaceParam). */
  setWeight(w: Tensor): Tensor {
    const old = this.replaceParam('weight', w);
    this.weight = w;
    return old;
  }

  /** ids int32 [...] -> [..., D] */
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids, this.dtype);
  }
}

/** RMSNorm with a gain (torchscale's norm everywhere; weights start at 1). */
export class RMSNorm extends Module {
  readonly weight: Tensor;

  constructor(
    dim: number,
    readonly eps: number,
    opts: ParamOptions,
  ) {
    super();
    this.weight = this.param('weight', constant([dim], 1, opts));
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

export interface GLUOptions {
  /** torchscale's gated FFN fc2(act(fc1 x) ⊙ gate x); false gives the paper's fc2(act(fc1 x)) (no gate weight). */
  gated: boolean;
  /** Multiplies the initial fc1 and fc2 weights (DeepNet's (8L)^-¼; the gate is not scaled). Default 1. */
  gain?: number;
  /** Dropout on the activations before fc2 while training (torchscale's activation_dropout). Default 0. */
  activationDropout?: number;
  /** Draws the activation-dropout masks; required when activationDropout > 0. */
  rng?: Rng;
}

/**
 * torchscale's feed-forward (gate_linear_unit.py, and feedforward_network.py without a gate), bias-free:
 * fc2(dropout(act(fc1 x) ⊙ gate x)), or fc2(dropout(act(fc1 x))) when not gated. With act = gelu and a gate this is
 * GeGLU (exact erf GELU), with swish SwiGLU.
 */
export class GLU extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly gate: Linear | null;
  private readonly activationDropout: number;
  private readonly rng: Rng | null;

  constructor(
    embedDim: number,
    ffnDim: number,
    readonly act: ActivationKind,
    rng: Rng,
    opts: ParamOptions,
    glu: GLUOptions,
  ) {
    super();
    const gain = glu.gain ?? 1;
    // Drawn in this order (fc1, fc2, gate) so that a seed gives the same weights as before the gate became optional.
    this.fc1 = this.child('fc1', new Linear(linearDefault([ffnDim, embedDim], rng, opts, gain)));
    this.fc2 = this.child('fc2', new Linear(linearDefault([embedDim, ffnDim], rng, opts, gain)));
    this.gate = glu.gated ? this.child('gate', new Linear(linearDefault([ffnDim, embedDim], rng, opts))) : null;
    this.activationDropout = glu.activationDropout ?? 0;
    this.rng = glu.rng ?? null;
    if (this.activationDropout > 0 && !this.rng)
      throw new ShapeError('GLU: activationDropout > 0 needs an rng for its masks');
  }

  forward(x: Tensor): Tensor {
    // fc1 and the gate read the same x: one call where sharedForward applies (decoding); otherwise (training,
    // prefill) the gate's product after the activation (the tape's order, and fewer [T, ffn] tensors at once)
    const shared = this.gate ? sharedForward(x, [this.fc1, this.gate]) : null;
    const [u, early] = shared ?? [this.fc1.forward(x), null];
    const a = activation(this.act, u!);
    release(u!);
    let h = a;
    if (this.gate) {
      const gate = early ?? this.gate.forward(x);
      h = mul(a, gate);
      release(a, gate);
    }
    if (this.training && this.activationDropout > 0) {
      const dropped = dropout(h, this.activationDropout, this.rng!);
      release(h);
      h = dropped;
    }
    const y = this.fc2.forward(h);
    release(h);
    return y;
  }
}
