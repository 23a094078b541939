// The layers shared by RetNet and the Transformer baseline. Names follow torchscale / PyTorch so that state_dict keys
// line up: Linear.weight is [out, in], RMSNorm.weight is [D].

import { getBackend } from '../backend/index.js';
import type { Device } from '../backend/device.js';
import type { ActivationKind } from '../backend/kernels.js';
import type { DType } from '../tensor/dtype.js';
import type { Rng } from '../tensor/random.js';
import type { Tensor } from '../tensor/tensor.js';
import { linear, mul } from '../ops/math.js';
import { activation, embedding, layerNorm, rmsNorm } from '../ops/nn.js';
import { type LowpWeight, lowpLinear } from '../quant/linear.js';
import { Module } from './module.js';

/** Where parameters are created and how. */
export interface ParamOptions {
  backend?: Device;
  dtype?: DType;
}

function fill(shape: number[], opts: ParamOptions, sample: () => number): Tensor {
  const be = opts.backend ?? getBackend();
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
export function linearDefault(shape: [number, number], rng: Rng, opts: ParamOptions): Tensor {
  const a = 1 / Math.sqrt(shape[1]);
  return fill(shape, opts, () => (2 * rng.uniform() - 1) * a);
}

export function normal(shape: number[], rng: Rng, std: number, opts: ParamOptions): Tensor {
  return fill(shape, opts, () => std * rng.normal());
}

export function constant(shape: number[], value: number, opts: ParamOptions): Tensor {
  return fill(shape, opts, () => value);
}

/** y = x Wᵀ (+ b). Bias-free by default, as every torchscale RetNet projection. */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  /** The weight in a low-precision format once `useLowp` has replaced the float one (inference only). */
  lowp: LowpWeight | null = null;

  /** weight: [out, in]; bias: [out]. */
  constructor(weight: Tensor, bias: Tensor | null = null) {
    super();
    this.weight = this.param('weight', weight);
    this.bias = bias ? this.param('bias', bias) : null;
  }

  /**
   * Replaces the float weight by `w` (src/quant/model.ts quantizeModel): the parameter leaves the tree, and the
   * caller disposes the float tensor unless another module shares it (tied embeddings).
   */
  useLowp(w: LowpWeight): void {
    this.lowp?.dispose();
    this.lowp = w;
    this.dropParam('weight');
  }

  forward(x: Tensor): Tensor {
    return this.lowp ? lowpLinear(x, this.lowp, this.bias) : linear(x, this.weight, this.bias);
  }

  override dispose(): void {
    super.dispose();
    this.lowp?.dispose();
  }
}

export class Embedding extends Module {
  readonly weight: Tensor;

  constructor(weight: Tensor) {
    super();
    this.weight = this.param('weight', weight);
  }

  /** ids int32 [...] -> [..., D] */
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids);
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

export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;

  constructor(
    dim: number,
    readonly eps: number,
    opts: ParamOptions,
  ) {
    super();
    this.weight = this.param('weight', constant([dim], 1, opts));
    this.bias = this.param('bias', constant([dim], 0, opts));
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/**
 * torchscale's GLU feed-forward (gate_linear_unit.py): fc2(act(fc1 x) ⊙ gate x), all bias-free. With act = gelu this is
 * GeGLU (exact erf GELU), with swish SwiGLU.
 */
export class GLU extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly gate: Linear;

  constructor(
    embedDim: number,
    ffnDim: number,
    readonly act: ActivationKind,
    rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    this.fc1 = this.child('fc1', new Linear(linearDefault([ffnDim, embedDim], rng, opts)));
    this.fc2 = this.child('fc2', new Linear(linearDefault([embedDim, ffnDim], rng, opts)));
    this.gate = this.child('gate', new Linear(linearDefault([ffnDim, embedDim], rng, opts)));
  }

  forward(x: Tensor): Tensor {
    return this.fc2.forward(mul(activation(this.act, this.fc1.forward(x)), this.gate.forward(x)));
  }
}

/** The paper's FFN without a gate: fc2(act(fc1 x)), bias-free (RetNetConfig.glu = false). */
export class FeedForward extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;

  constructor(
    embedDim: number,
    ffnDim: number,
    readonly act: ActivationKind,
    rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    this.fc1 = this.child('fc1', new Linear(linearDefault([ffnDim, embedDim], rng, opts)));
    this.fc2 = this.child('fc2', new Linear(linearDefault([embedDim, ffnDim], rng, opts)));
  }

  forward(x: Tensor): Tensor {
    return this.fc2.forward(activation(this.act, this.fc1.forward(x)));
  }
}
