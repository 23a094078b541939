// The stand-in writer of `retnet bench pretrained` (bench/standin.ts) at a tiny fla shape: an HF-style directory with
// config.json (model_type retnet, BF16), two safetensors shards with their index and a SentencePiece-style tokenizer.
// It must load as the fla variant with exactly the values written, and `retnet generate --model DIR` must decode it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { FLA_1_3B, writeFlaStandIn } from '../bench/standin.js';
import { loadModelDir } from '../src/io/model-dir.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { ref } from './helpers.js';

const ROOT = join(import.meta.dirname, '..');
const TOKENIZER = join(ROOT, '..', 'shared', 'fla-vectors', 'tokenizer', 'tokenizer.json');

describe('fla stand-in checkpoint (tiny shape)', () => {
  it('writes BF16 shards that load bit for bit, and retnet generate decodes the directory', () => {
    const work = mkdtempSync(join(tmpdir(), 'retnet-fla-standin-'));
    try {
      const dir = join(work, 'model');
      const shape = { ...FLA_1_3B, vocab_size: 724, hidden_size: 64, num_hidden_layers: 2, num_heads: 2 };
      const { bytes } = writeFlaStandIn(dir, shape, { shards: 2, seed: 4, tokenizer: TOKENIZER });
      const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
      for (const f of [...shards, 'model.safetensors.index.json', 'config.json', 'tokenizer.json'])
        assert.ok(existsSync(join(dir, f)), `${f} written`);
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(config.model_type, 'retnet');
      assert.equal(config.dtype, 'bfloat16');
      const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as {
        metadata: { total_size: number };
        weight_map: Record<string, string>;
      };
      assert.equal(index.metadata.total_size, bytes);
      assert.deepEqual(new Set(Object.values(index.weight_map)), new Set(shards));

      const written = new Map(shards.flatMap((f) => [...readSafetensors(join(dir, f)).tensors]));
      for (const t of written.values()) assert.equal(t.dtype, 'BF16');
      const model = loadModelDir(dir, { backend: ref, dtype: 'float64' }).model as RetNetModel;
      assert.equal(model.config.format, 'fla');
      assert.equal(model.namedParameters().length, written.size);
      for (const [n, t] of model.namedParameters())
        assert.deepEqual(Array.from(t.data()), Array.from(written.get(n)!.data), `${n} as written`);
      model.dispose();

      const g = spawnSync(
        process.execPath,
        [
          ...['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), 'generate', '--model', dir],
          ...['--prompt', 'The jury', '--max-tokens', '6', '--temperature', '0', '--ignore-eos'],
        ],
        { encoding: 'utf8', cwd: ROOT },
      );
      assert.equal(g.status, 0, g.stderr);
      assert.match(g.stderr, /decode: 5 tokens in [\d.]+ ms/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
