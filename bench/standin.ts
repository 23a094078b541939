// A random-weight stand-in for a public fla RetNet checkpoint (fla-hub/retnet-1.3B-100B): the same config.json,
// parameter names and shapes, BF16 weights in Hugging Face shards with model.safetensors.index.json, and the
// tokenizer files, so that loading and decoding can be measured at real size without the real weights (which we
// never download). Values have a realistic scale (Linear U(±sqrt(3/fan_in)), i.e. variance 1/fan_in; embeddings
// variance 1; norm gains 1), drawn tensor by tensor so that only one shard's BF16 data is in memory at a time.

import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { writeFileAtomic } from '../src/io/atomic.js';
import { type TensorToSave, WEIGHTS_INDEX, writeSafetensors } from '../src/io/safetensors.js';
import { encoded } from '../src/tensor/dtype.js';
import { flaConfigFromJSON, flaConfigToJSON, flaParameterShapes } from '../src/models/retnet/fla.js';
import { Rng } from '../src/tensor/random.js';

/** fla-hub/retnet-1.3B-100B's config.json keys that set its shape (fla-spec §1). */
export const FLA_1_3B: Record<string, unknown> = {
  model_type: 'retnet',
  vocab_size: 32000,
  hidden_size: 2048,
  num_hidden_layers: 24,
  num_heads: 8,
  expand_k: 1,
  expand_v: 2,
  hidden_ratio: 2,
  intermediate_size: null,
  norm_eps: 1e-6,
  use_output_gate: true,
  fuse_norm: true,
  tie_word_embeddings: false,
  attn_mode: 'fused_chunk',
  bos_token_id: 1,
  eos_token_id: 2,
};

export interface StandInOptions {
  /** Number of safetensors shards (1: a single model.safetensors). */
  shards: number;
  seed: number;
  /** A tokenizer.json to copy in (the stand-in of the 1.3B uses the Mistral tokenizer fla-hub's models use). */
  tokenizer: string | null;
}

/** Values of one tensor as BF16 bit patterns. */
function draw(name: string, shape: readonly number[], rng: Rng): Uint16Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  if (shape.length === 1)
    x.fill(1); // norm gains
  else {
    const a = Math.sqrt(3 / (name.endsWith('embeddings.weight') ? 1 : shape[1]!));
    // xorshift32 seeded from rng: 1.35 B draws through Rng.uniform take minutes (12 M/s measured here).
    let z = (rng.int(2 ** 31) | 1) >>> 0;
    for (let i = 0; i < n; i++) {
      z ^= z << 13;
      z ^= z >>> 17;
      z ^= z << 5;
      x[i] = ((z >>> 0) / 2 ** 31 - 1) * a;
    }
  }
  return encoded('bfloat16', x, shape) as Uint16Array;
}

/**
 * Writes the stand-in of the fla checkpoint whose config.json keys are `shape` into dir: config.json (dtype
 * bfloat16), the weights in `shards` files (filled greedily in sorted-name order, as transformers does),
 * generation_config.json and, when given, tokenizer.json with a tokenizer_config.json that adds BOS. Returns the
 * weight bytes written.
 */
export function writeFlaStandIn(dir: string, shape: Record<string, unknown>, opts: StandInOptions): { bytes: number } {
  mkdirSync(dir, { recursive: true });
  const config = flaConfigFromJSON({ model_type: 'retnet', ...shape }, 'stand-in config');
  const params = flaParameterShapes(config).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const sizes = params.map(([, s]) => 2 * s.reduce((a, b) => a * b, 1));
  const total = sizes.reduce((a, b) => a + b, 0);
  // Shard k holds the tensors whose first byte falls in [k·total/n, (k+1)·total/n).
  const groups: (typeof params)[] = Array.from({ length: opts.shards }, () => []);
  let at = 0;
  params.forEach((p, i) => {
    groups[Math.min(opts.shards - 1, Math.floor((at * opts.shards) / total))]!.push(p);
    at += sizes[i]!;
  });
  const rng = new Rng(opts.seed);
  const weightMap: Record<string, string> = {};
  const n = groups.length;
  groups.forEach((group, k) => {
    const file =
      n === 1
        ? 'model.safetensors'
        : `model-${String(k + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
    const tensors = new Map<string, TensorToSave>();
    for (const [name, s] of group) {
      tensors.set(name, { dtype: 'BF16', shape: s, data: draw(name, s, rng) });
      weightMap[name] = file;
    }
    writeSafetensors(join(dir, file), tensors, { format: 'pt' });
  });
  if (n > 1) {
    const index = {
      metadata: { total_parameters: total / 2, total_size: total },
      weight_map: Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    };
    writeFileAtomic(join(dir, WEIGHTS_INDEX), `${JSON.stringify(index, null, 2)}\n`);
  }
  const json: Record<string, unknown> = { ...flaConfigToJSON(config), dtype: 'bfloat16' };
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(json, null, 2)}\n`);
  const ids = { bos_token_id: json.bos_token_id ?? 1, eos_token_id: json.eos_token_id ?? 2 };
  writeFileAtomic(join(dir, 'generation_config.json'), `${JSON.stringify(ids, null, 2)}\n`);
  if (opts.tokenizer) {
    copyFileSync(opts.tokenizer, join(dir, 'tokenizer.json'));
    const tc = { add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' };
    writeFileAtomic(join(dir, 'tokenizer_config.json'), `${JSON.stringify(tc, null, 2)}\n`);
  }
  return { bytes: total };
}
