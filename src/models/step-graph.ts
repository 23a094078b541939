// A decode step replayed as one device graph (Device.capture: CUDA graphs). RetNet's step is the same launches at
// every position (its state [B, H, K, V] does not grow), and launching them one by one from JavaScript took more host
// time than the GPU took to run them (bench/cuda/NOTES.md, stop 27: 4.68 ms of host enqueue in a 5.48 ms step of
// the 6.7B model at batch 1). Captured once, a step is one launch: the host writes the token ids and the rotary
// tables into the graph's input tensors, replays it, and copies the logits out of its output tensor.
//
// A graph reads the weights and the state where they were when it was captured, so graphs are kept by key, the
// storages the step reads: the first step with a key runs kernel by kernel (it fills the caches the step uses, e.g.
// cuBLAS's), the second captures. Up to GRAPHS keys are remembered, the least recently stepped dropped first, so
// states stepped in turns (a benchmark's points, a server's batches) each keep theirs; a key whose storages were
// released (a disposed state, rows selected or appended, replaced weights) is dropped at the next step. A capture
// that fails (a kernel that reads back to the host) is said once on stderr, and that key's steps run kernel by kernel.

import type { Device, DeviceGraph } from '../backend/device.js';
import { noGrad } from '../autograd/tape.js';
import type { RotaryTables } from '../nn/rotary.js';
import type { DType } from '../tensor/dtype.js';
import { keep, tidy } from '../tensor/scope.js';
import type { Storage } from '../tensor/storage.js';
import type { Tensor } from '../tensor/tensor.js';

/** The step's body: logits [B, V] of ids int32 [B, 1] with per-row tables [B, 1, K]. */
export type StepBody = (ids: Tensor, rope: RotaryTables) => Tensor;

/** Keys remembered (each captured one holds its graph's intermediates: about one step's workspace). */
const GRAPHS = 4;

interface Captured {
  graph: DeviceGraph;
  ids: Tensor; // [B, 1] int32
  rope: RotaryTables; // [B, 1, K]
  logits: Tensor; // [B, V]
}

interface Entry {
  key: readonly Storage[];
  /** Null until the key's second step; `failed` once a capture of it failed. */
  captured: Captured | null;
  failed: boolean;
}

function sameKey(a: readonly Storage[], b: readonly Storage[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

export class StepGraphs {
  /** Least recently stepped first. */
  private entries: Entry[] = [];
  private static said = false;

  constructor(
    private readonly device: Device & Required<Pick<Device, 'capture'>>,
    private readonly dtype: DType,
    private readonly K: number,
  ) {}

  /** Device bytes the graphs hold beyond their tensors (their intermediates). */
  get bytes(): number {
    return this.entries.reduce((n, e) => n + (e.captured?.graph.bytes ?? 0), 0);
  }

  /**
   * The logits [B, V] of one step through the graph of `key` (the storages the step reads), or null when this step
   * is to run kernel by kernel. `tables` are the rotary cos/sin of each row's position, [B·K] each.
   */
  step(
    key: readonly Storage[],
    ids: Int32Array,
    tables: { cos: Float64Array; sin: Float64Array },
    body: StepBody,
  ): Tensor | null {
    const stale = (e: Entry) => e.key.some((s) => s.released);
    for (const e of this.entries.filter(stale)) free(e);
    this.entries = this.entries.filter((e) => !stale(e));
    const entry = this.entries.find((e) => sameKey(e.key, key));
    if (!entry) {
      this.entries.push({ key, captured: null, failed: false });
      while (this.entries.length > GRAPHS) free(this.entries.shift()!);
      return null;
    }
    this.entries = [...this.entries.filter((e) => e !== entry), entry];
    if (entry.failed) return null;
    entry.captured ??= this.capture(ids.length, body);
    const c = entry.captured;
    if (!c) {
      entry.failed = true;
      return null;
    }
    this.device.write(c.ids, ids);
    this.device.write(c.rope.cos, tables.cos);
    this.device.write(c.rope.sin, tables.sin);
    c.graph.launch();
    const out = this.device.empty(c.logits.shape, c.logits.dtype);
    this.device.copy(c.logits, 0, out, 0, c.logits.size);
    return out;
  }

  private capture(B: number, body: StepBody): Captured | null {
    const ids = keep(this.device.empty([B, 1], 'int32'));
    const rope: RotaryTables = {
      cos: keep(this.device.empty([B, 1, this.K], this.dtype)),
      sin: keep(this.device.empty([B, 1, this.K], this.dtype)),
      owned: false,
    };
    try {
      const { graph, outputs } = this.device.capture(() => [noGrad(() => tidy(() => body(ids, rope)))]);
      return { graph, ids, rope, logits: keep(outputs[0]!) };
    } catch (e) {
      for (const t of [ids, rope.cos, rope.sin]) t.dispose();
      if (!StepGraphs.said) {
        StepGraphs.said = true;
        globalThis.process?.stderr.write(
          `retnet: the decode step could not be captured as a ${this.device.name} graph (${(e as Error).message}); ` +
            'it runs kernel by kernel\n',
        );
      }
      return null;
    }
  }

  /** Frees every graph and its tensors. */
  dispose(): void {
    for (const e of this.entries) free(e);
    this.entries = [];
  }
}

function free(e: Entry): void {
  const c = e.captured;
  if (!c) return;
  c.graph.dispose();
  for (const t of [c.ids, c.rope.cos, c.rope.sin, c.logits]) t.dispose();
  e.captured = null;
}
