// The trainer on a tiny test model: schedules, AdamW against a float64 reference, gradient accumulation, exact
// resume (bit for bit), stopping on non-finite loss or gradients, crash-safe checkpoints, metrics and progress output.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { record } from '../src/autograd/tape.js';
import { getBackend } from '../src/backend/index.js';
import { kernelsOf } from '../src/backend/kernels.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { Rng } from '../src/tensor/random.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { checkpointsDir, latestCheckpoint } from '../src/train/checkpoint.js';
import { BatchSampler, ShardReader, prepareData, sequentialBatches, type Batch } from '../src/train/data.js';
import { batchTensors, evaluate } from '../src/train/evaluate.js';
import { AdamW } from '../src/train/optimizer.js';
import { learningRate, validateSchedule } from '../src/train/schedule.js';
import {
  TrainingError,
  accumulateGradients,
  train,
  trainConfig,
  type TrainConfig,
  type TrainOptions,
} from '../src/train/trainer.js';
import { crossEntropy } from '../src/ops/nn.js';
import { noGrad } from '../src/autograd/tape.js';
import { assertClose, ref } from './helpers.js';
import { TinyLM, writeParameters } from './tiny-lm.js';
import { TransformerModel } from '../src/models/transformer/model.js';
import { transformerPreset } from '../src/models/transformer/config.js';
import { tempDir } from './temp.js';

const be = getBackend();
const tokenizer = new ByteTokenizer();

function tmp(): string {
  return tempDir('retnet-train-');
}

/** A small corpus of varied lines, prepared once with the byte tokenizer. */
const corpusDir = tmp();
const rng = new Rng(11);
const words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog', 'ran', 'far', 'away', 'home', 'today'];
writeFileSync(
  join(corpusDir, 'corpus.txt'),
  Array.from(
    { length: 600 },
    () => `${Array.from({ length: 8 }, () => words[rng.int(words.length)]).join(' ')}.\n`,
  ).join(''),
);
const data = prepareData({
  source: join(corpusDir, 'corpus.txt'),
  tokenizer,
  cacheDir: join(corpusDir, 'cache'),
  valFraction: 0.1,
});

const silent = { write: () => true, isTTY: false };

function model(seed = 1, dropout = 0): TinyLM {
  return new TinyLM(tokenizer.vocabSize, 24, dropout, seed, be);
}

const baseConfig = (over: Partial<TrainConfig> = {}): TrainConfig =>
  trainConfig({ steps: 8, batch: 4, seqLen: 24, lr: 3e-3, warmupSteps: 2, evalBatches: 2, ...over });

function run(m: TinyLM, outDir: string, over: Partial<TrainOptions> = {}, config = baseConfig()) {
  return train({ model: m, data, outDir, config, writeModel: (dir) => m.writeDir(dir), progress: silent, ...over });
}

function metrics(dir: string): { type: string; step: number; loss: number; gradNorm?: number }[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; step: number; loss: number });
}

describe('learning-rate schedule', () => {
  const s = validateSchedule({ peak: 1, warmupSteps: 4, totalSteps: 14, decay: 'cosine', minRatio: 0.1 });

  it('warms up linearly, then decays by cosine to the floor at the last step', () => {
    assert.deepEqual(
      [0, 1, 2, 3].map((k) => learningRate(s, k)),
      [0.25, 0.5, 0.75, 1],
    );
    assert.equal(learningRate(s, 4), 1);
    assertClose([learningRate(s, 13)], [0.1], 1e-15, 'floor');
    assertClose([learningRate(s, 4 + 4.5)], [0.55], 1e-15, 'cosine midpoint');
    for (let k = 4; k < 13; k++) assert.ok(learningRate(s, k + 1) < learningRate(s, k));
  });

  it('decays linearly or stays constant', () => {
    const lin = { ...s, decay: 'linear' as const };
    assertClose(
      [4, 8.5, 13].map((k) => learningRate(lin, k)),
      [1, 0.55, 0.1],
      1e-15,
      'linear',
    );
    assert.equal(learningRate({ ...s, decay: 'constant' }, 12), 1);
  });

  it('rejects bad settings', () => {
    assert.throws(() => validateSchedule({ ...s, warmupSteps: 20 }), /warmup steps must be an integer in \[0, 14\]/);
    assert.throws(() => validateSchedule({ ...s, peak: 0 }), /learning rate must be positive/);
  });
});

describe('AdamW', () => {
  // A float64 model of the update, written out: decoupled decay, bias-corrected moments, clipping as a gradient scale.
  function referenceAdamW(p: number[], grads: number[][], lr: number, wd: number, scales: number[]): number[] {
    const [b1, b2, eps] = [0.9, 0.95, 1e-8];
    const m = p.map(() => 0);
    const v = p.map(() => 0);
    const out = [...p];
    grads.forEach((g, t) => {
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]! * scales[t]!;
        m[i] = b1 * m[i]! + (1 - b1) * gi;
        v[i] = b2 * v[i]! + (1 - b2) * gi * gi;
        const mHat = m[i]! / (1 - b1 ** (t + 1));
        const vHat = v[i]! / (1 - b2 ** (t + 1));
        out[i] = out[i]! * (1 - lr * wd) - (lr * mHat) / (Math.sqrt(vHat) + eps);
      }
    });
    return out;
  }

  it('decays matrices but not vectors, corrects bias, and folds clipping into the gradient scale', () => {
    const r = new Rng(4);
    const w0 = Array.from({ length: 6 }, () => r.normal());
    const b0 = Array.from({ length: 3 }, () => r.normal());
    const w = ref.fromData(w0, [2, 3], 'float64');
    const b = ref.fromData(b0, [3], 'float64');
    const opt = new AdamW(
      [
        ['w', w],
        ['b', b],
        ['tied', w],
      ],
      { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.5 },
    );
    const gw = [0, 1].map(() => Array.from({ length: 6 }, () => r.normal()));
    const gb = [0, 1].map(() => Array.from({ length: 3 }, () => r.normal()));
    const scales: number[] = [];
    for (let t = 0; t < 2; t++) {
      w.grad = ref.fromData(gw[t]!, [2, 3], 'float64');
      b.grad = ref.fromData(gb[t]!, [3], 'float64');
      const norm = opt.gradNorm();
      const expected = Math.sqrt([...gw[t]!, ...gb[t]!].reduce((s, x) => s + x * x, 0));
      assertClose([norm], [expected], 1e-15, 'global norm');
      scales.push(t === 1 ? 0.5 / norm : 1); // clip the second step to norm 0.5
      opt.update(0.1, scales[t]);
    }
    assertClose(w.toArray(), referenceAdamW(w0, gw, 0.1, 0.5, scales), 1e-14, 'matrix (decayed)');
    assertClose(b.toArray(), referenceAdamW(b0, gb, 0.1, 0, scales), 1e-14, 'vector (not decayed)');
    assert.equal(opt.step, 2);
  });

  it('saves and restores its moments and step', () => {
    const make = () => {
      const p = ref.fromData([1, 2, 3, 4], [2, 2], 'float64');
      return { p, opt: new AdamW([['p', p]]) };
    };
    const a = make();
    a.p.grad = ref.fromData([0.1, -0.2, 0.3, -0.4], [2, 2], 'float64');
    a.opt.update(0.01);
    const { tensors, metadata } = a.opt.stateTensors();
    const b = make();
    b.p.grad = null;
    ref.write(b.p, a.p.toArray());
    b.opt.loadState(tensors, metadata, 'state');
    for (const x of [a, b]) {
      x.p.grad = ref.fromData([0.5, 0.5, -0.5, 0.1], [2, 2], 'float64');
      x.opt.update(0.01);
    }
    assert.deepEqual(b.p.toArray(), a.p.toArray());
    assert.equal(b.opt.step, 2);
    assert.throws(() => b.opt.loadState(new Map(), {}, 'x.safetensors'), /x\.safetensors: missing or invalid "step"/);
  });
});

describe('gradient accumulation', () => {
  it('accum 2 x batch B gives the loss and gradients of one batch of 2B', () => {
    const reader = new ShardReader(data.dir, data.manifest, 'train');
    const full = new BatchSampler(reader, 6, 24, 3).next();
    const half = (k: number): Batch => ({
      rows: 3,
      inputs: full.inputs.slice(k * 72, (k + 1) * 72),
      targets: full.targets.slice(k * 72, (k + 1) * 72),
    });
    const grads = (batches: Batch[]) => {
      const m = model(5);
      const loss = accumulateGradients(m, (ids) => m.forward(ids), batches, 24);
      const g = m.parameters().map((p) => p.grad!.toArray());
      m.dispose();
      return { loss, g };
    };
    const one = grads([full]);
    const two = grads([half(0), half(1)]);
    assertClose([two.loss], [one.loss], 1e-6, 'loss');
    one.g.forEach((g, i) => assertClose(two.g[i]!, g, 1e-5, `gradient ${i}`));
    reader.close();
  });

  it('a run with accum 2 logs the losses of a run with twice the batch', async () => {
    const a = tmp();
    const b = tmp();
    await run(model(2), a, {}, baseConfig({ steps: 3, batch: 4, accum: 2 }));
    await run(model(2), b, {}, baseConfig({ steps: 3, batch: 8, accum: 1 }));
    const losses = (d: string) =>
      metrics(d)
        .filter((r) => r.type === 'train')
        .map((r) => r.loss);
    assertClose(losses(a), losses(b), 1e-5, 'losses');
  });
});

describe('training runs', () => {
  it('learn: the validation loss falls well below the uniform guess', async () => {
    const dir = tmp();
    const m = model(3);
    const r = await run(m, dir, {}, baseConfig({ steps: 60, lr: 1e-2, batch: 8 }));
    assert.equal(r.finished, true);
    assert.ok(r.valLoss! < 0.6 * Math.log(tokenizer.vocabSize), `val loss ${r.valLoss}`);
    assert.ok(existsSync(join(dir, 'model.safetensors')));
  });

  it('resume continues exactly: 2N steps equal N + N with a resume between, bit for bit', async () => {
    const config = baseConfig({ steps: 8, evalEvery: 3, checkpointEvery: 3 });
    const straight = tmp();
    await run(model(7, 0.1), straight, {}, config);

    const parted = tmp();
    const first = await run(model(7, 0.1), parted, { stopAtStep: 4 }, config);
    assert.equal(first.finished, false);
    assert.equal(first.step, 4);
    // A fresh process would build the model from another seed; the checkpoint must overwrite everything.
    const second = await run(model(99, 0.1), parted, { resume: true }, config);
    assert.equal(second.finished, true);

    for (const f of ['model.safetensors'])
      assert.ok(readFileSync(join(parted, f)).equals(readFileSync(join(straight, f))), `${f} differs`);
    const last = (d: string) => latestCheckpoint(d)!;
    assert.ok(
      readFileSync(join(last(parted), 'optimizer.safetensors')).equals(
        readFileSync(join(last(straight), 'optimizer.safetensors')),
      ),
    );
    // The metrics log reads as one run: steps 1..8 once each, the same losses.
    const steps = (d: string) => metrics(d).filter((r) => r.type === 'train');
    assert.deepEqual(
      steps(parted).map((r) => r.step),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.deepEqual(
      steps(parted).map((r) => r.loss),
      steps(straight).map((r) => r.loss),
    );
  });

  it('trains the Transformer baseline and resumes it exactly', async () => {
    const make = (seed: number) =>
      new TransformerModel(transformerPreset('tiny', { vocabSize: tokenizer.vocabSize, layers: 1 }), { seed });
    const config = baseConfig({ steps: 4, batch: 2, seqLen: 16 });
    const runT = (m: TransformerModel, out: string, over: Partial<TrainOptions> = {}) =>
      train({
        model: m,
        data,
        outDir: out,
        config,
        writeModel: (d) => writeParameters(m, d),
        progress: silent,
        ...over,
      });
    const straight = tmp();
    const r = await runT(make(1), straight);
    assert.ok(r.valLoss! < Math.log(tokenizer.vocabSize), `val loss ${r.valLoss}`);
    const parted = tmp();
    await runT(make(1), parted, { stopAtStep: 2 });
    await runT(make(5), parted, { resume: true });
    const weights = (d: string) => readFileSync(join(d, 'model.safetensors'));
    assert.ok(weights(parted).equals(weights(straight)));
  });

  it('without the model RNG in the checkpoint, dropout would differ (the test can fail)', async () => {
    const config = baseConfig({ steps: 4 });
    const straight = tmp();
    await run(model(7, 0.3), straight, {}, config);
    const parted = tmp();
    await run(model(7, 0.3), parted, { stopAtStep: 2 }, config);
    const m = model(7, 0.3);
    const setRngState = m.setRngState.bind(m);
    m.setRngState = (s) => setRngState(s.map((x) => (x ^ 1) >>> 0));
    await run(m, parted, { resume: true }, config);
    assert.ok(
      !readFileSync(join(parted, 'model.safetensors')).equals(readFileSync(join(straight, 'model.safetensors'))),
    );
  });

  it('stops on a non-finite loss, naming the step and keeping the last good checkpoint', async () => {
    const dir = tmp();
    const m = model(4);
    let calls = 0;
    const forward = (ids: Tensor) => {
      const logits = m.forward(ids);
      return ++calls === 3 ? noGradScale(logits, NaN) : logits;
    };
    await assert.rejects(
      run(m, dir, { forward }, baseConfig({ checkpointEvery: 2 })),
      (e: Error) =>
        e instanceof TrainingError &&
        /step 3: the loss is NaN; training stopped\. The last good checkpoint is .*step-00000002/.test(e.message),
    );
    assert.match(latestCheckpoint(dir)!, /step-00000002$/);
    assert.deepEqual(
      readdirSync(checkpointsDir(dir)).filter((n) => n.startsWith('step')),
      ['step-00000002'],
    );
    const saved = readSafetensors(join(latestCheckpoint(dir)!, 'model.safetensors'));
    for (const t of saved.tensors.values()) assert.ok(t.data.every(Number.isFinite));
  });

  it('stops on non-finite gradients before updating the weights', async () => {
    const dir = tmp();
    const m = model(4);
    let calls = 0;
    const forward = (ids: Tensor) => {
      const logits = m.forward(ids);
      return ++calls === 2 ? nanGradient(logits) : logits;
    };
    const before: number[][] = [];
    const writeModel = (d: string) => {
      before.splice(0, before.length, ...m.parameters().map((p) => p.toArray()));
      m.writeDir(d);
    };
    await assert.rejects(
      run(m, dir, { forward, writeModel }, baseConfig({ checkpointEvery: 1 })),
      /step 2: the gradient norm is NaN/,
    );
    m.parameters().forEach((p, i) => assert.deepEqual(p.toArray(), before[i]));
  });

  it('a crash while writing a checkpoint leaves the previous one as latest, and resume cleans up', async () => {
    const dir = tmp();
    const m = model(6);
    let writes = 0;
    const writeModel = (d: string) => {
      if (d.includes('.step-00000004')) throw new Error('simulated crash');
      writes++;
      m.writeDir(d);
    };
    await assert.rejects(run(m, dir, { writeModel }, baseConfig({ checkpointEvery: 2 })), /simulated crash/);
    assert.ok(writes > 0);
    assert.match(latestCheckpoint(dir)!, /step-00000002$/);
    assert.ok(readdirSync(checkpointsDir(dir)).some((n) => n.startsWith('.step-00000004')));
    const r = await run(model(6), dir, { resume: true }, baseConfig({ checkpointEvery: 2 }));
    assert.equal(r.step, 8);
    assert.ok(!readdirSync(checkpointsDir(dir)).some((n) => n.startsWith('.')));
    // Two checkpoints are kept, `latest` names the newest.
    assert.deepEqual(readdirSync(checkpointsDir(dir)).sort(), ['latest', 'step-00000006', 'step-00000008']);
    assert.equal(readFileSync(join(checkpointsDir(dir), 'latest'), 'utf8'), 'step-00000008\n');
  });

  it('refuses to resume on other data or without a checkpoint', async () => {
    const dir = tmp();
    await assert.rejects(run(model(), dir, { resume: true }), /no checkpoint to resume from/);
    await run(model(), dir, { stopAtStep: 1 });
    const other = { ...data, manifest: { ...data.manifest, key: 'f'.repeat(64) } };
    await assert.rejects(run(model(), dir, { resume: true, data: other }), /trained on other data/);
  });

  it('logs train metrics every step and validation every N steps and at the end', async () => {
    const dir = tmp();
    await run(model(), dir, {}, baseConfig({ steps: 6, evalEvery: 2 }));
    const rows = metrics(dir);
    assert.equal(rows[0]!.type, 'run');
    assert.deepEqual(
      rows.filter((r) => r.type === 'train').map((r) => r.step),
      [1, 2, 3, 4, 5, 6],
    );
    assert.deepEqual(
      rows.filter((r) => r.type === 'val').map((r) => r.step),
      [2, 4, 6],
    );
    assert.ok(rows.every((r) => r.type === 'run' || Number.isFinite(r.loss)));
  });

  it('shows plain log lines off a terminal and a redrawn progress line on one', async () => {
    const capture = (isTTY: boolean) => {
      let text = '';
      return { stream: { write: (s: string) => ((text += s), true), isTTY, columns: 120 }, text: () => text };
    };
    const plain = capture(false);
    await run(model(), tmp(), { progress: plain.stream }, baseConfig({ steps: 4, logEvery: 2 }));
    const lines = plain.text().trim().split('\n');
    assert.ok(
      lines.some((l) => /^step 2\/4 loss \d+\.\d{4} lr \S+ \d+ tok\/s ETA \S+ grad-norm/.test(l)),
      lines.join('\n'),
    );
    assert.ok(!plain.text().includes('\r'));
    const tty = capture(true);
    await run(model(), tmp(), { progress: tty.stream }, baseConfig({ steps: 4 }));
    assert.ok(tty.text().includes('\r\x1b[Kstep 4/4 [####'), JSON.stringify(tty.text()));
  });
});

describe('evaluation', () => {
  it('is the mean cross-entropy over every validation window', () => {
    const m = model(8);
    const reader = new ShardReader(data.dir, data.manifest, 'val');
    const r = evaluate((ids) => m.forward(ids), m, reader, 3, 16)!;
    const all = [...sequentialBatches(reader, 1000, 16)];
    assert.equal(all.length, 1);
    const expected = noGrad(() => {
      const { ids, targets } = batchTensors(m, all[0]!, 16);
      return crossEntropy(m.forward(ids), targets).item();
    });
    assert.equal(r.tokens, all[0]!.rows * 16);
    assertClose([r.loss], [expected], 1e-6, 'loss');
    assertClose([r.ppl], [Math.exp(expected)], 1e-5, 'ppl');
    reader.close();
  });
});

/** logits · NaN as a fresh tensor on the tape (the loss becomes NaN). */
function noGradScale(t: Tensor, s: number): Tensor {
  const y = kernelsOf(t).scale(t, s);
  record('nanScale', [t], [y], ([g]) => [kernelsOf(t).scale(g!, s)]);
  return y;
}

/** The identity in the forward pass whose gradient is NaN: a finite loss with non-finite gradients. */
function nanGradient(t: Tensor): Tensor {
  const y = kernelsOf(t).scale(t, 1);
  record('nanGradient', [t], [y], ([g]) => [kernelsOf(t).scale(g!, NaN)]);
  return y;
}
