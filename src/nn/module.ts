// Module: a named tree of parameters, like torch.nn.Module, so that parameter names line up with torchscale's
// state_dict keys ("layers.0.retention.q_proj.weight"). Parameters are leaf tensors that live until `dispose()`.

import { FormatError, ShapeError, formatShape } from '../errors.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

export abstract class Module {
  /** Enables dropout and other training-only behaviour. */
  training = false;
  private readonly ownParams = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  /** Registers a parameter (requires grad, outlives every tidy scope). */
  protected param(name: string, t: Tensor): Tensor {
    keep(t);
    t.requiresGrad = true;
    t.name = name;
    this.ownParams.set(name, t);
    return t;
  }

  /** Registers a sub-module under `name` (its parameters become `name.<param>`). */
  protected child<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /**
   * Puts `t` in place of the parameter `name` (same shape; src/quant/model.ts holds weights in another dtype this
   * way). It takes gradients only when its dtype is the old one's: a weight held as bfloat16 or quantized under a
   * float32 model is for inference. Returns the old tensor, which the caller disposes unless it is used elsewhere.
   */
  protected replaceParam(name: string, t: Tensor): Tensor {
    const old = this.ownParams.get(name);
    if (!old) throw new FormatError(`replaceParam: no parameter '${name}'`);
    if (old.shape.length !== t.shape.length || old.shape.some((d, i) => d !== t.shape[i]))
      throw new ShapeError(
        `replaceParam: '${name}' is ${formatShape(old.shape)}, the replacement ${formatShape(t.shape)}`,
      );
    keep(t);
    t.requiresGrad = old.requiresGrad && t.dtype === old.dtype;
    t.name = name;
    this.ownParams.set(name, t);
    return old;
  }

  /** This module and every descendant, with their dotted names ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, m] of this.children) out.push(...m.namedModules(`${prefix}${n}.`));
    return out;
  }

  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.ownParams) out.push([prefix + n, t]);
    for (const [n, m] of this.children) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Number of scalar parameters; a tensor shared under two names (tied embeddings) counts once. */
  parameterCount(): number {
    const seen = new Set<Tensor>();
    let n = 0;
    for (const t of this.parameters()) {
      if (seen.has(t)) continue;
      seen.add(t);
      n += t.size;
    }
    return n;
  }

  setTraining(training: boolean): this {
    this.training = training;
    for (const m of this.children.values()) m.setTraining(training);
    return this;
  }

  /**
   * Copies values into the parameters. Every parameter must be present with the same shape; names in `values` that
   * the module lacks are an error unless listed in `ignore`. `source` names the file in messages.
   */
  loadValues(
    values: Map<string, { shape: readonly number[]; data: ArrayLike<number> }>,
    source: string,
    ignore: (name: string) => boolean = () => false,
  ): void {
    const params = this.namedParameters();
    const missing = params.filter(([n]) => !values.has(n)).map(([n]) => n);
    if (missing.length > 0) throw new FormatError(`${source}: missing tensors ${missing.join(', ')}`);
    const known = new Set(params.map(([n]) => n));
    const extra = [...values.keys()].filter((n) => !known.has(n) && !ignore(n));
    if (extra.length > 0) throw new FormatError(`${source}: unexpected tensors ${extra.join(', ')}`);
    for (const [n, t] of params) {
      const v = values.get(n)!;
      if (v.shape.length !== t.shape.length || v.shape.some((d, i) => d !== t.shape[i]))
        throw new ShapeError(
          `${source}: tensor '${n}' has shape ${formatShape(v.shape)}, the model expects ${formatShape(t.shape)}`,
        );
      t.device.write(t, v.data);
    }
  }

  /** Zeroes (drops) the gradients of every parameter. */
  zeroGrad(): void {
    for (const t of this.parameters()) {
      t.grad?.dispose();
      t.grad = null;
    }
  }

  dispose(): void {
    for (const t of this.parameters()) t.dispose();
  }
}
