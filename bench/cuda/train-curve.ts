// The first training steps of the tiny RetNet and Transformer on two devices from the same seed and the same
// batches (bytes of a fixed text, vocabulary 256): the loss curves must agree step by step (float32 on both; they
// drift apart only by rounding). Prints one JSON line per step and writes them all to --out.
//   node --import tsx bench/cuda/train-curve.ts --devices reference,cuda [--steps N] [--out FILE]
import { writeFileSync } from 'node:fs';

import { backward } from '../../src/autograd/tape.js';
import { type BackendName, getBackend } from '../../src/backend/index.js';
import { type Arch, createModel } from '../../src/models/registry.js';
import { crossEntropy } from '../../src/ops/nn.js';
import { tidy } from '../../src/tensor/scope.js';
import { AdamW } from '../../src/train/optimizer.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : dflt);
const devices = flag('--devices', 'reference,cuda').split(',') as BackendName[];
const steps = Number(flag('--steps', '20'));
const outPath = args.includes('--out') ? flag('--out', '') : null;
const [B, T] = [4, 64];

// A fixed byte stream: a short text repeated with a position-dependent twist, so batches differ.
const text = new TextEncoder().encode(
  'Retention networks keep a state of fixed size and decay it per head; the chunkwise form trains them in parallel. ',
);
function batch(step: number): { ids: number[]; targets: number[] } {
  const ids: number[] = [];
  const targets: number[] = [];
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const at = (step * 131 + b * 37 + t) % text.length;
      ids.push(text[at]!);
      targets.push(text[(at + 1) % text.length]!);
    }
  return { ids, targets };
}

const results: Record<string, unknown>[] = [];
for (const arch of ['retnet', 'transformer'] as Arch[]) {
  const curves: Record<string, number[]> = {};
  for (const name of devices) {
    const device = getBackend(name);
    const model = createModel(arch, 'tiny', { vocabSize: 256 }, { backend: device, seed: 1 });
    const opt = new AdamW(model.namedParameters());
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) {
      const { ids, targets } = batch(s);
      const loss = tidy(() => {
        const x = device.fromData(ids, [B, T], 'int32');
        const y = device.fromData(targets, [B, T], 'int32');
        const logits = model.forward(x);
        const l = crossEntropy(logits, y); // the mean over the B·T targets
        backward(l);
        return l.item();
      });
      opt.update(1e-3);
      for (const p of model.parameters()) {
        p.grad?.dispose();
        p.grad = null;
      }
      losses.push(loss);
    }
    curves[name] = losses;
  }
  const [a, b] = devices;
  const diffs = curves[a!]!.map((l, i) => Math.abs(l - curves[b!]![i]!));
  const r = { arch, preset: 'tiny', B, T, steps, devices, curves, max_abs_diff: Math.max(...diffs) };
  results.push(r);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
if (outPath) writeFileSync(outPath, JSON.stringify(results, null, 1));
