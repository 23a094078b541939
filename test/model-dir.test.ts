// Model directories (config.json + model.safetensors + tokenizer.json) and the `retnet logits` contract.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { noGrad } from '../src/autograd/tape.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { loadModelDir, saveModelDir } from '../src/io/model-dir.js';
import { createModel } from '../src/models/registry.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { tidy } from '../src/tensor/scope.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { assertClose, nat, ref } from './helpers.js';
import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');
const VECTORS = join(ROOT, '..', 'shared', 'torchscale-vectors');

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function torchscaleDir(name: string): string {
  const dir = tempDir('retnet-ts-');
  copyFileSync(join(VECTORS, `config_${name}.json`), join(dir, 'config.json'));
  copyFileSync(join(VECTORS, `weights_${name}.safetensors`), join(dir, 'model.safetensors'));
  return dir;
}

describe('model directory', () => {
  it('save then load gives the same logits, with the tokenizer and torchscale buffers', () => {
    const model = createModel('retnet', 'tiny', { vocabSize: 259, layers: 1 }, { backend: nat(), seed: 3 });
    const dir = tempDir('retnet-md-');
    saveModelDir(dir, model, new ByteTokenizer());
    const { model: back, tokenizer } = loadModelDir(dir, { backend: nat() });
    assert.ok(tokenizer instanceof ByteTokenizer);
    const ids = [5, 200, 17, 3];
    const run = (m: typeof back) => noGrad(() => tidy(() => m.forward(nat().fromData(ids, [1, 4], 'int32')).data()));
    assertClose(run(back), run(model), 0, 'logits after reload');
    const saved = readSafetensors(join(dir, 'model.safetensors')).tensors;
    assert.deepEqual(saved.get('retnet_rel_pos.decay')!.shape, [2]);
    assert.ok(saved.has('layers.0.retention.q_proj.weight'));
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.equal(config.arch, 'retnet');
    assert.equal(config.decoder_embed_dim, 128);
    model.dispose();
    back.dispose();
  });

  it('loads torchscale checkpoints as they are, in float32 and float64', () => {
    const dir = torchscaleDir('dev_options');
    const a = loadModelDir(dir, { backend: ref, dtype: 'float64' }).model as RetNetModel;
    assert.equal(a.config.tiedEmbeddings, true);
    assert.equal(a.config.deepnorm, true);
    const b = loadModelDir(dir, { backend: nat() }).model;
    assert.equal(a.parameterCount(), b.parameterCount());
    a.dispose();
    b.dispose();
  });

  it('rejects missing files, missing tensors and wrong shapes, naming them', () => {
    const dir = torchscaleDir('dev_default');
    const weights = join(dir, 'model.safetensors');
    const tensors = readSafetensors(weights).tensors;
    const edit = (fn: (m: Map<string, { dtype: 'F64'; shape: number[]; data: ArrayLike<number> }>) => void) => {
      const m = new Map([...tensors].map(([k, v]) => [k, { dtype: 'F64' as const, shape: v.shape, data: v.data }]));
      fn(m);
      writeSafetensors(weights, m);
    };
    edit((m) => m.delete('layers.1.ffn.gate.weight'));
    assert.throws(
      () => loadModelDir(dir, { backend: nat() }),
      /model.safetensors: missing tensors layers.1.ffn.gate.weight/,
    );
    edit((m) =>
      m.set('layers.0.retention.k_proj.weight', { dtype: 'F64', shape: [48, 47], data: new Float64Array(48 * 47) }),
    );
    assert.throws(
      () => loadModelDir(dir, { backend: nat() }),
      /tensor 'layers.0.retention.k_proj.weight' has shape \[48, 47\], the model that .*config.json describes expects \[48, 48\]/,
    );
    edit((m) => m.set('layers.9.extra', { dtype: 'F64', shape: [1], data: [0] }));
    assert.throws(() => loadModelDir(dir, { backend: nat() }), /unexpected tensors layers.9.extra/);
    writeFileSync(join(dir, 'config.json'), '{"decoder_embed_dim": 48,');
    assert.throws(() => loadModelDir(dir), /config.json: not valid JSON/);
    writeFileSync(join(dir, 'config.json'), '{"arch": "mamba"}');
    assert.throws(() => loadModelDir(dir), /config.json: unknown arch "mamba"/);
    assert.throws(() => loadModelDir(join(dir, 'nope')), /model directory does not exist/);
  });
});

describe('Transformer model directory', () => {
  it('save then load gives the same logits; retnet logits runs it and rejects --form', () => {
    const model = createModel('transformer', 'tiny', { vocabSize: 40, layers: 1 }, { backend: nat(), seed: 5 });
    const dir = tempDir('retnet-tf-');
    saveModelDir(dir, model);
    const { model: back } = loadModelDir(dir, { backend: nat() });
    assert.equal(back.arch, 'transformer');
    const ids = [1, 2, 3];
    const run = (m: typeof back) => noGrad(() => tidy(() => m.forward(nat().fromData(ids, [1, 3], 'int32')).data()));
    const expected = run(model);
    assertClose(run(back), expected, 0, 'logits after reload');
    const r = cli('logits', '--model', dir, '--tokens', '1,2,3');
    assert.equal(r.code, 0, r.stderr);
    assertClose((JSON.parse(r.stdout) as { logits: number[][] }).logits.flat(), expected, 1e-6, 'CLI logits');
    const bad = cli('logits', '--model', dir, '--tokens', '1,2,3', '--form', 'recurrent');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--form and --chunk-size apply to RetNet models, not to a transformer/);
    model.dispose();
    back.dispose();
  });
});

describe('retnet logits', () => {
  it('prints one row per position; float64 forms match torchscale to 1e-9', () => {
    const dir = torchscaleDir('dev_default');
    const tokens = JSON.parse(readFileSync(join(VECTORS, 'tokens_dev_default.json'), 'utf8')) as number[];
    const expected = readSafetensors(join(VECTORS, 'expected_dev_default.safetensors')).tensors;
    const first = tokens.slice(0, 10);
    for (const [form, key, extra] of [
      ['parallel', 'logits.parallel', []],
      ['recurrent', 'logits.recurrent', []],
      ['chunkwise', 'logits.chunk7', ['--chunk-size', '7']],
    ] as const) {
      const r = cli(
        'logits',
        '--model',
        dir,
        '--tokens',
        first.join(','),
        '--form',
        form,
        '--dtype',
        'float64',
        ...extra,
      );
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { logits: number[][] };
      assert.equal(out.logits.length, 10);
      assert.equal(out.logits[0]!.length, 80);
      assertClose(out.logits.flat(), expected.get(key)!.data.slice(0, 10 * 80), 1e-9, `logits --form ${form}`);
    }
  });

  it('bad input gets a clear error and a non-zero exit', () => {
    const dir = torchscaleDir('dev_default');
    const cases: [string[], RegExp][] = [
      [['--model', dir], /--tokens is required/],
      [
        ['--model', dir, '--tokens', '1,x'],
        /'--tokens <ids>' argument '1,x' is invalid\. item 1 \('x'\): expected an integer/,
      ],
      [['--model', dir, '--tokens', '1,80'], /token 80 at position 1 is outside the vocabulary \[0, 80\)/],
      [
        ['--model', dir, '--tokens', '1', '--form', 'sideways'],
        /'--form <parallel\|recurrent\|chunkwise>' argument 'sideways' is invalid/,
      ],
      [
        ['--model', dir, '--tokens', '1', '--dtype', 'int8'],
        /argument 'int8' is invalid\. expected one of float32, float64/,
      ],
      [
        ['--model', dir, '--tokens', '1', '--chunk-size', '0'],
        /'--chunk-size <int>' argument '0' is invalid\. expected an integer in \[1, 8192\]/,
      ],
      [['--tokens', '1'], /retnet logits: --model is required/],
      [['--model', join(dir, 'missing'), '--tokens', '1'], /model directory does not exist/],
    ];
    for (const [args, re] of cases) {
      const r = cli('logits', ...args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, re);
    }
  });
});
