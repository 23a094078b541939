// A decode step replayed as one device graph (Device.capture: CUDA graphs). RetNet's step is the same launches at
// every position (its state [B, H, K, V] does not grow), and launching them one by one from JavaScript took more host
// time than the GPU took to run them (bench/cuda/NOTES.md, stop 27: 4.68 ms of host enqueue in a 5.48 ms step of
// the 6.7B model at batch 1). Captured once, a step is one launch: the host writes the token ids and the rotary
// tables into the graph's input tensors, replays it, and copies the logits out of its output tensor.
//
// A graph reads the weights and the state where they were when it was captured, so it is keyed by their storages:
// a step with another key (another state, rows selected or appended, replaced weights) drops the graph and runs
// kernel by kernel; the second step in a row with one key captures a new graph (the first fills the caches the step
// uses, e.g. cuBLAS's). A capture that fails (a kernel that reads back to the host) is said once on stderr, and that
// key's steps run kernel by kernel.

import type { Device, DeviceGraph } from '../backend/device.js';
import { noGrad } from '../autograd/tape.js';
import type { RotaryTables } from '../nn/rotary.js';
import type { DType } from '../tensor/dtype.js';
import { keep, tidy } from '../tensor/scope.js';
import type { Storage } from '../tensor/storage.js';
import type { Tensor } from '../tensor/tensor.js';

/** The step's body: logits [B, V] of ids int32 [B, 1] with per-row tables [B, 1, K]. */
export type StepBody = (ids: Tensor, rope: RotaryTables) => Tensor;

interface Captured {
  key: readonly Storage[];
  graph: DeviceGraph;
  ids: Tensor; // [B, 1] int32
  rope: RotaryTables; // [B, 1, K]
  logits: Tensor; // [B, V]
}

function sameKey(a: readonly Storage[], b: readonly Storage[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i] && !s.released);
}

export class StepGraph {
  private captured: Captured | null = null;
  /** The key of the last step run kernel by kernel, and a key whose capture failed. */
  private seen: readonly Storage[] | null = null;
  private failed: readonly Storage[] | null = null;
  private static said = false;

  constructor(
    private readonly device: Device & Required<Pick<Device, 'capture'>>,
    private readonly dtype: DType,
    private readonly K: number,
  ) {}

  /** Device bytes the graph holds beyond its tensors (its intermediates); 0 without one. */
  get bytes(): number {
    return this.captured?.graph.bytes ?? 0;
  }

  /**
   * The logits [B, V] of one step through a graph for `key` (the storages the step reads), or null when this step
   * is to run kernel by kernel. `tables` are the rotary cos/sin of each row's position, [B·K] each.
   */
  step(
    key: readonly Storage[],
    ids: Int32Array,
    tables: { cos: Float64Array; sin: Float64Array },
    body: StepBody,
  ): Tensor | null {
    if (this.captured && !sameKey(this.captured.key, key)) this.dispose();
    if (!this.captured) {
      if (this.failed && sameKey(this.failed, key)) return null;
      if (!this.seen || !sameKey(this.seen, key)) {
        this.seen = key;
        return null;
      }
      this.seen = null;
      if (!this.capture(key, ids.length, body)) return null;
    }
    const c = this.captured!;
    this.device.write(c.ids, ids);
    this.device.write(c.rope.cos, tables.cos);
    this.device.write(c.rope.sin, tables.sin);
    c.graph.launch();
    const out = this.device.empty(c.logits.shape, c.logits.dtype);
    this.device.copy(c.logits, 0, out, 0, c.logits.size);
    return out;
  }

  private capture(key: readonly Storage[], B: number, body: StepBody): boolean {
    const ids = keep(this.device.empty([B, 1], 'int32'));
    const rope: RotaryTables = {
      cos: keep(this.device.empty([B, 1, this.K], this.dtype)),
      sin: keep(this.device.empty([B, 1, this.K], this.dtype)),
      owned: false,
    };
    try {
      const { graph, outputs } = this.device.capture(() => [noGrad(() => tidy(() => body(ids, rope)))]);
      this.captured = { key, graph, ids, rope, logits: keep(outputs[0]!) };
      return true;
    } catch (e) {
      for (const t of [ids, rope.cos, rope.sin]) t.dispose();
      this.failed = key;
      if (!StepGraph.said) {
        StepGraph.said = true;
        globalThis.process?.stderr.write(
          `retnet: the decode step could not be captured as a ${this.device.name} graph (${(e as Error).message}); ` +
            'it runs kernel by kernel\n',
        );
      }
      return false;
    }
  }

  /** Frees the graph and its tensors. */
  dispose(): void {
    const c = this.captured;
    if (!c) return;
    c.graph.dispose();
    for (const t of [c.ids, c.rope.cos, c.rope.sin, c.logits]) t.dispose();
    this.captured = null;
  }
}
