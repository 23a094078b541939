// Loading model directories: BF16 weights in shards behind model.safetensors.index.json, the Hugging Face side files
// (generation_config.json, tokenizer_config.json with a chat template, special_tokens_map.json), and the checks that
// run before and while the model is allocated: regression tests for #17 items 3 (no runaway allocation) and 5
// (non-finite weights, configs that contradict the weights, a tokenizer larger than the vocabulary).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { ConfigError, FormatError, ShapeError } from '../src/errors.js';
import { loadModelDir, saveModelDir } from '../src/io/model-dir.js';
import { type TensorToSave, WEIGHTS_INDEX, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { encoded } from '../src/tensor/dtype.js';
import { createModel } from '../src/models/registry.js';
import { Rng } from '../src/tensor/random.js';
import { HfTokenizer } from '../src/tokenizer/hf.js';
import { nat, ref } from './helpers.js';

const SHARED = join(import.meta.dirname, '..', '..', 'shared');
const TOK = join(SHARED, 'fla-vectors', 'tokenizer');
const TS = join(SHARED, 'torchscale-vectors');
const root = mkdtempSync(join(tmpdir(), 'retnet-mdl-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => mkdtempSync(join(root, `d${n++}-`));

/** torchscale's dev_default checkpoint with config.json edited by `edit`. */
function torchscale(edit: (c: Record<string, unknown>) => void = () => {}): string {
  const dir = freshDir();
  const config = JSON.parse(readFileSync(join(TS, 'config_dev_default.json'), 'utf8')) as Record<string, unknown>;
  edit(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  copyFileSync(join(TS, 'weights_dev_default.safetensors'), join(dir, 'model.safetensors'));
  return dir;
}

function rewriteWeights(dir: string, edit: (m: Map<string, TensorToSave>) => void): void {
  const path = join(dir, 'model.safetensors');
  const m = new Map<string, TensorToSave>(
    [...readSafetensors(path).tensors].map(([k, v]) => [k, { dtype: 'F64', shape: v.shape, data: v.data }]),
  );
  edit(m);
  writeSafetensors(path, m);
}

describe('Hugging Face style directories', () => {
  it('loads BF16 shards with the index, generation defaults, special tokens, BOS policy and chat template', () => {
    const dir = freshDir();
    const model = createModel('retnet', 'tiny', { vocabSize: 724, layers: 2 }, { backend: nat(), seed: 9 });
    saveModelDir(dir, model);
    rmSync(join(dir, 'model.safetensors'));
    // Three BF16 shards, names distributed round-robin, and the index transformers writes.
    const params = model.namedParameters();
    const shards: Map<string, TensorToSave>[] = [new Map(), new Map(), new Map()];
    const weightMap: Record<string, string> = {};
    let total = 0;
    params.forEach(([name, t], i) => {
      const file = `model-0000${(i % 3) + 1}-of-00003.safetensors`;
      shards[i % 3]!.set(name, { dtype: 'BF16', shape: t.shape, data: encoded('bfloat16', t.data(), t.shape) });
      weightMap[name] = file;
      total += t.size * 2;
    });
    shards.forEach((s, i) => writeSafetensors(join(dir, `model-0000${i + 1}-of-00003.safetensors`), s));
    const index = { metadata: { total_size: total }, weight_map: weightMap };
    writeFileSync(join(dir, WEIGHTS_INDEX), JSON.stringify(index));
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, torch_dtype: 'bfloat16' }));
    copyFileSync(join(TOK, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const template = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    writeFileSync(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ add_bos_token: true, bos_token: '<s>', eos_token: '</s>', chat_template: template }),
    );
    writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }));
    writeFileSync(
      join(dir, 'generation_config.json'),
      JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 0], do_sample: true, temperature: 0.7, top_p: 0.9 }),
    );

    const loaded = loadModelDir(dir, { backend: nat() });
    assert.equal(loaded.storedDType, 'bfloat16');
    assert.equal(loaded.chatTemplate, template);
    assert.deepEqual(loaded.generation, {
      bosTokenId: 1,
      eosTokenIds: [2, 0],
      padTokenId: null,
      sampling: { doSample: true, temperature: 0.7, topP: 0.9 },
    });
    assert.ok(loaded.tokenizer instanceof HfTokenizer);
    assert.deepEqual(loaded.tokenizer.encode('Hello world'), [1, 400, 576, 263, 336, 332, 409]);
    // Every weight is the BF16 rounding of the saved float32 value.
    const back = new Map(loaded.model.namedParameters());
    for (const [name, t] of params) {
      const want = Array.from(
        encoded('bfloat16', t.data(), t.shape) as Uint16Array,
        (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0],
      );
      assert.deepEqual(Array.from(back.get(name)!.data()), want, name);
    }
    loaded.model.dispose();

    // The index must agree with the shards.
    const withIndex = (patch: object, pattern: RegExp) => {
      writeFileSync(join(dir, WEIGHTS_INDEX), JSON.stringify({ ...index, ...patch }));
      assert.throws(
        () => loadModelDir(dir, { backend: nat() }),
        (e: Error) => e instanceof FormatError && pattern.test(e.message),
      );
    };
    const [first, second] = [params[0]![0], params[1]![0]];
    withIndex({ metadata: { total_size: total + 2 } }, /metadata.total_size is \d+, the shards hold \d+ bytes/);
    withIndex(
      { weight_map: { ...weightMap, [first]: weightMap[second] } },
      new RegExp(`tensor '${first}' is mapped to model-00002-of-00003.safetensors, which does not hold it`),
    );
    const dropped = { ...weightMap };
    delete dropped[first];
    withIndex({ weight_map: dropped }, new RegExp(`model-00001-of-00003.safetensors: tensor '${first}' is not listed`));
    withIndex({ weight_map: { ...weightMap, x: '../model.safetensors' } }, /weight_map\['x'\] must be a file name/);
    withIndex({ weight_map: { ...weightMap, x: 'model-00004-of-00003.safetensors' } }, /model-00004.*cannot read/);
    withIndex({ weight_map: null }, /expected an object with a "weight_map" object/);
  });

  it("fla's F64, BF16 and sharded copies load to bit-identical float64 weights; BF16 stays BF16 on disk", () => {
    const dev = join(SHARED, 'fla-vectors', 'dev');
    const load = (d: string) => loadModelDir(d, { backend: ref, dtype: 'float64' });
    const [f64, bf16, sharded] = [dev, join(dev, 'bf16'), join(dev, 'sharded')].map(load);
    assert.equal(f64!.modelType, 'retnet');
    assert.deepEqual([f64!.storedDType, bf16!.storedDType, sharded!.storedDType], ['float64', 'bfloat16', 'bfloat16']);
    assert.deepEqual(f64!.generation.eosTokenIds, [2]);
    const a = f64!.model.namedParameters();
    assert.equal(a.length, 25);
    for (const other of [bf16!, sharded!]) {
      const b = new Map(other.model.namedParameters());
      for (const [name, t] of a) assert.deepEqual(b.get(name)!.data(), t.data(), name);
    }
    for (const l of [f64!, bf16!, sharded!]) l.model.dispose();
  });

  it('recognises model_type and rejects the ones it does not know', () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'mamba', hidden_size: 8 }));
    assert.throws(() => loadModelDir(dir), /config.json: unknown arch "mamba"/);
  });
});

describe('checks before allocation (#17 item 3)', () => {
  it('decoder_layers 1000 / vocab_size 1e6 over a 2-layer, 80-token checkpoint fail fast with a shape error naming the field, at low RSS', () => {
    // (decoder_layers 65536 itself is now refused by the config's size bounds; 1000 is within them.)
    const cases: [string, number, RegExp][] = [
      ['decoder_layers', 1000, /decoder_layers is 1000 but the checkpoint has 2 layers/],
      ['vocab_size', 1e6, /vocab_size is 1000000 but 'embed_tokens.weight' has 80 rows/],
    ];
    for (const [key, value, pattern] of cases) {
      const dir = torchscale((c) => (c[key] = value));
      const script = `
        import { loadModelDir } from ${JSON.stringify(new URL('../src/io/model-dir.ts', import.meta.url).href)};
        import { readFileSync } from 'node:fs';
        const t0 = performance.now();
        let message = '', name = '';
        try { loadModelDir(process.argv[1]); } catch (e) { message = e.message; name = e.name; }
        const hwm = Number(/VmHWM:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
        console.log(JSON.stringify({ message, name, ms: performance.now() - t0, hwm }));
      `;
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], {
        encoding: 'utf8',
      });
      const r = JSON.parse(out.trim().split('\n').pop()!) as { message: string; name: string; ms: number; hwm: number };
      assert.equal(r.name, 'ShapeError', r.message);
      assert.match(r.message, pattern);
      assert.ok(r.hwm < 400 * 2 ** 20, `${key} ${value}: peak RSS ${(r.hwm / 2 ** 20).toFixed(0)} MiB`);
      assert.ok(r.ms < 5000, `${key} ${value}: took ${r.ms.toFixed(0)} ms`);
    }
  });

  it('sizes of 2^31 and more get a config error, not a RangeError', () => {
    for (const key of ['decoder_layers', 'vocab_size', 'decoder_embed_dim']) {
      const dir = torchscale((c) => (c[key] = 2 ** 31));
      assert.throws(
        () => loadModelDir(dir),
        (e: Error) => (e instanceof ShapeError || e instanceof ConfigError) && e.message.includes('2147483648'),
        key,
      );
    }
  });

  it('fills parameters from the file without drawing a random initialisation first', () => {
    const dir = torchscale();
    const proto = Rng.prototype as unknown as Record<string, () => number>;
    const saved = { uniform: proto.uniform, normal: proto.normal };
    proto.uniform = proto.normal = () => {
      throw new Error('random draw while loading');
    };
    try {
      loadModelDir(dir, { backend: nat() }).model.dispose();
    } finally {
      proto.uniform = saved.uniform!;
      proto.normal = saved.normal!;
    }
  });
});

describe('configs and weights that contradict each other (#17 item 5)', () => {
  it('NaN/Inf weights are rejected with the tensor name unless allowNonFinite', () => {
    for (const bad of [NaN, Infinity]) {
      const dir = torchscale();
      rewriteWeights(dir, (m) => {
        const t = m.get('layers.1.ffn.fc2.weight')!;
        const data = Float64Array.from(t.data);
        data[5] = bad;
        m.set('layers.1.ffn.fc2.weight', { ...t, data });
      });
      assert.throws(
        () => loadModelDir(dir, { backend: nat() }),
        new RegExp(`tensor 'layers.1.ffn.fc2.weight' holds a non-finite value \\(${bad}\\) at flat index 5`),
      );
      loadModelDir(dir, { backend: nat(), allowNonFinite: true }).model.dispose();
    }
  });

  it('tied embeddings declared over untied weights', () => {
    const dir = torchscale((c) => (c.share_decoder_input_output_embed = true));
    assert.throws(
      () => loadModelDir(dir, { backend: nat() }),
      (e: Error) =>
        e instanceof ConfigError &&
        /share_decoder_input_output_embed is true \(ties 'output_projection.weight' to 'embed_tokens.weight'\), but .* holds different values/.test(
          e.message,
        ),
    );
  });

  it('1 head declared over 3-head weights (torchscale decay buffer)', () => {
    const dir = torchscale((c) => (c.decoder_retention_heads = 1));
    assert.throws(
      () => loadModelDir(dir, { backend: nat() }),
      /retnet_rel_pos.decay has shape \[3\] \(one decay per head\), but config.json sets decoder_retention_heads 1/,
    );
  });

  it('layernorm_eps 1e400 and non-boolean flags', () => {
    const dir = torchscale();
    const text = readFileSync(join(dir, 'config.json'), 'utf8').replace(
      '"layernorm_eps":0.000001',
      '"layernorm_eps":1e400',
    );
    assert.match(text, /1e400/);
    writeFileSync(join(dir, 'config.json'), text);
    assert.throws(
      () => loadModelDir(dir),
      /config.json: "layernorm_eps" is too large for a number \(it reads as Infinity\)/,
    );
    for (const [key, value] of [
      ['deepnorm', 'yes'],
      ['share_decoder_input_output_embed', 1],
      ['chunkwise_recurrent', null],
    ] as const) {
      const d = torchscale((c) => (c[key] = value));
      assert.throws(() => loadModelDir(d), /must be true or false, got/, key);
    }
  });

  it('a tokenizer with more ids than the model vocabulary', () => {
    const dir = torchscale(); // vocab_size 80
    copyFileSync(join(TOK, 'tokenizer.json'), join(dir, 'tokenizer.json')); // 724 ids
    assert.throws(
      () => loadModelDir(dir, { backend: nat() }),
      /tokenizer.json: the tokenizer has 724 ids but the model's vocabulary \(.*config.json vocab_size\) is 80/,
    );
  });
});
