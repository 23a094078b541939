// AdamW (Loshchilov & Hutter 2019): Adam moments with bias correction and weight decay decoupled from the gradient,
// applied only to matrices (linear and embedding weights); norm gains and biases (rank < 2) are not decayed. The
// update runs in the backend's fused adamw kernel; global-norm clipping is folded into it as a gradient scale.

import type { Device } from '../backend/device.js';
import { FormatError } from '../errors.js';
import type { TensorToSave } from '../io/safetensors.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { kernelsOf } from '../backend/kernels.js';

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

interface Slot {
  name: string;
  param: Tensor;
  /** First and second moments, created at the first update of the parameter. */
  m: Tensor | null;
  v: Tensor | null;
  decay: boolean;
}

/** Whether a parameter gets weight decay: matrices yes, vectors (norm gains, biases) no. */
export function decays(t: Tensor): boolean {
  return t.rank >= 2;
}

export class AdamW {
  /** Completed updates (AdamW's t after the update, used for bias correction). */
  step = 0;
  private readonly slots: Slot[] = [];

  /** params: the model's named parameters; a tensor listed under two names (tied weights) is updated once. */
  constructor(
    params: readonly [string, Tensor][],
    readonly config: AdamWConfig = ADAMW_DEFAULTS,
  ) {
    const seen = new Set<Tensor>();
    for (const [name, param] of params) {
      if (seen.has(param)) continue;
      seen.add(param);
      this.slots.push({ name, param, m: null, v: null, decay: decays(param) });
    }
  }

  /**
   * The global L2 norm of all gradients (parameters without a gradient count as zero): one fused kernel call per
   * device, so a step reads one number from the device here, not one per parameter.
   */
  gradNorm(): number {
    const byDevice = new Map<Device, Tensor[]>();
    for (const s of this.slots)
      if (s.param.grad) {
        const list = byDevice.get(s.param.device) ?? [];
        list.push(s.param.grad);
        byDevice.set(s.param.device, list);
      }
    let sum = 0;
    for (const grads of byDevice.values()) sum += kernelsOf(grads[0]!).sumSquares(grads);
    return Math.sqrt(sum);
  }

  /**
   * One update with learning rate lr; each gradient is multiplied by gradScale first (clipping). Parameters without
   * a gradient are left alone, moments included (PyTorch's behaviour).
   */
  update(lr: number, gradScale = 1): void {
    this.step++;
    for (const s of this.slots) {
      const { param } = s;
      if (!param.grad) continue;
      const be: Device = param.device;
      // Moments live as long as the optimizer, whatever scope the update runs in.
      s.m ??= keep(be.zeros(param.shape, param.dtype));
      s.v ??= keep(be.zeros(param.shape, param.dtype));
      kernelsOf(param).adamw(param, param.grad, s.m, s.v, {
        lr,
        beta1: this.config.beta1,
        beta2: this.config.beta2,
        eps: this.config.eps,
        weightDecay: s.decay ? this.config.weightDecay : 0,
        step: this.step,
        gradScale,
      });
    }
  }

  /** The moments as tensors to save ("exp_avg.<name>", "exp_avg_sq.<name>", PyTorch's names) and the step. */
  stateTensors(): { tensors: Map<string, TensorToSave>; metadata: Record<string, string> } {
    const tensors = new Map<string, TensorToSave>();
    for (const s of this.slots) {
      if (!s.m || !s.v) continue;
      const dtype = s.param.dtype === 'float64' ? 'F64' : 'F32';
      tensors.set(`exp_avg.${s.name}`, { dtype, shape: s.param.shape, data: s.m.data() });
      tensors.set(`exp_avg_sq.${s.name}`, { dtype, shape: s.param.shape, data: s.v.data() });
    }
    return { tensors, metadata: { step: String(this.step), ...stringify(this.config) } };
  }

  /** Restores what stateTensors saved; `source` names the file in errors. */
  loadState(
    tensors: Map<string, { shape: readonly number[]; data: ArrayLike<number> }>,
    metadata: Record<string, string>,
    source: string,
  ): void {
    const step = Number(metadata.step);
    if (!Number.isInteger(step) || step < 0) throw new FormatError(`${source}: missing or invalid "step" metadata`);
    const known = new Set<string>();
    for (const s of this.slots) {
      const m = tensors.get(`exp_avg.${s.name}`);
      const v = tensors.get(`exp_avg_sq.${s.name}`);
      known.add(`exp_avg.${s.name}`).add(`exp_avg_sq.${s.name}`);
      s.m?.dispose();
      s.v?.dispose();
      s.m = s.v = null;
      if (!m && !v) continue; // not updated yet when saved
      if (!m || !v) throw new FormatError(`${source}: only one moment of '${s.name}'`);
      for (const [what, t] of [
        ['exp_avg', m],
        ['exp_avg_sq', v],
      ] as const)
        if (t.shape.length !== s.param.rank || t.shape.some((d, i) => d !== s.param.shape[i]))
          throw new FormatError(
            `${source}: ${what}.${s.name} has shape [${t.shape.join(', ')}], the parameter [${s.param.shape.join(', ')}]`,
          );
      const be = s.param.device;
      s.m = keep(be.fromData(m.data, s.param.shape, s.param.dtype));
      s.v = keep(be.fromData(v.data, s.param.shape, s.param.dtype));
    }
    const extra = [...tensors.keys()].filter((n) => !known.has(n));
    if (extra.length > 0) throw new FormatError(`${source}: moments of unknown parameters ${extra.join(', ')}`);
    this.step = step;
  }

  dispose(): void {
    for (const s of this.slots) {
      s.m?.dispose();
      s.v?.dispose();
      s.m = s.v = null;
    }
  }
}

function stringify(o: object): Record<string, string> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
}
