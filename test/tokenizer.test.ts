// Tokenizers: the byte tokenizer and the trained byte-level BPE round-trip arbitrary Unicode; BPE training is
// deterministic, honours the vocabulary size, and the pure-JS encoder agrees with the Rust library it was trained by.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { FormatError } from '../src/errors.js';
import { Rng } from '../src/tensor/random.js';
import { byteLevelAlphabet, trainBpe } from '../src/tokenizer/bpe.js';
import { HfTokenizer } from '../src/tokenizer/hf.js';
import { loadTokenizer } from '../src/tokenizer/load.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { randomUnicode } from './helpers.js';
import { tempDir } from './temp.js';

const CORPUS = Array.from(
  { length: 400 },
  (_, i) =>
    `Line ${i}: the quick brown fox jumps over the lazy dog; naïve café, Ελληνικά ${i % 13}, 日本語のテキスト 🎉.`,
).join('\n');

function corpusFile(): string {
  const dir = tempDir('retnet-tok-');
  const path = join(dir, 'corpus.txt');
  writeFileSync(path, CORPUS);
  return path;
}

describe('ByteTokenizer', () => {
  it('round-trips arbitrary Unicode and maps bytes to ids 0..255', () => {
    const tok = new ByteTokenizer();
    const rng = new Rng(1);
    for (let n = 0; n < 50; n++) {
      const s = randomUnicode(rng, rng.int(40));
      const ids = tok.encode(s);
      assert.ok(ids.every((id) => id >= 0 && id < 256));
      assert.equal(tok.decode(ids), s);
    }
    assert.deepEqual(tok.encode('é'), [0xc3, 0xa9]);
  });

  it('loads back from its tokenizer.json', () => {
    assert.ok(loadTokenizer(new ByteTokenizer().toJSON(), 'bytes') instanceof ByteTokenizer);
  });
});

describe('byte-level BPE', () => {
  const file = corpusFile();
  const bpe = trainBpe([file], 320);

  it('has the requested vocabulary: 256 bytes, merges, then the special tokens', () => {
    assert.equal(bpe.vocabSize, 320);
    assert.equal((JSON.parse(bpe.toJSON()) as { model: { merges: unknown[] } }).model.merges.length, 320 - 256 - 3);
    assert.equal(bpe.eosId, 317);
    assert.deepEqual(bpe.encode('A'), [0x41]);
    assert.deepEqual(bpe.encode('<|endoftext|>'), [bpe.eosId]);
  });

  it('round-trips arbitrary Unicode, with every id inside the vocabulary', () => {
    const rng = new Rng(2);
    for (let n = 0; n < 100; n++) {
      const s = randomUnicode(rng, rng.int(60));
      const ids = bpe.encode(s);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < bpe.vocabSize));
      assert.equal(bpe.decode(ids), s, `round trip of ${JSON.stringify(s)}`);
    }
    assert.equal(bpe.decode(bpe.encode(CORPUS)), CORPUS);
  });

  it('compresses the text it was trained on', () => {
    const bytes = Buffer.byteLength(CORPUS);
    const tokens = bpe.encode(CORPUS).length;
    assert.ok(tokens < 0.6 * bytes, `${tokens} tokens for ${bytes} bytes`);
  });

  it('trains deterministically and a larger vocabulary extends the smaller one', () => {
    assert.equal(trainBpe([file], 320).toJSON(), bpe.toJSON());
    const larger = JSON.parse(trainBpe([file], 400).toJSON()) as { model: { merges: string[][] } };
    const smaller = JSON.parse(bpe.toJSON()) as { model: { merges: string[][] } };
    assert.deepEqual(larger.model.merges.slice(0, smaller.model.merges.length), smaller.model.merges);
  });

  it('gives the same ids as the Rust tokenizers library on the same tokenizer.json', async () => {
    const native = createRequire(import.meta.url)('tokenizers') as typeof import('tokenizers');
    const rust = native.Tokenizer.fromString(bpe.toJSON());
    const rng = new Rng(3);
    const samples = [...CORPUS.split('\n').slice(0, 20), ...Array.from({ length: 30 }, () => randomUnicode(rng, 30))];
    for (const s of samples) {
      const expected = (await rust.encode(s, null, { addSpecialTokens: false })).getIds();
      assert.deepEqual(bpe.encode(s), expected, `ids of ${JSON.stringify(s)}`);
    }
  });

  it('loads from tokenizer.json through loadTokenizer', () => {
    const back = loadTokenizer(bpe.toJSON(), 'tokenizer.json');
    assert.ok(back instanceof HfTokenizer);
    assert.deepEqual(back.encode(CORPUS.slice(0, 200)), bpe.encode(CORPUS.slice(0, 200)));
  });

  it('rejects bad tokenizer files and vocabulary sizes', () => {
    assert.throws(() => loadTokenizer('{', 'x.json'), /x\.json: not valid JSON/);
    assert.throws(
      () => loadTokenizer('{"model":{"type":"Mamba"}}', 'x.json'),
      /unsupported tokenizer model type "Mamba"/,
    );
    const noEos = JSON.parse(bpe.toJSON()) as { added_tokens: unknown[] };
    noEos.added_tokens = [];
    assert.throws(() => loadTokenizer(JSON.stringify(noEos), 'x.json'), FormatError);
    assert.throws(() => trainBpe([file], 100), /at least|>= 259/);
  });

  it('uses the GPT-2 byte alphabet: 256 distinct characters, printable bytes standing for themselves', () => {
    const alphabet = byteLevelAlphabet();
    assert.equal(new Set(alphabet).size, 256);
    assert.equal(alphabet[0x41], 'A');
    assert.equal(alphabet[0x20], 'Ġ');
  });
});
