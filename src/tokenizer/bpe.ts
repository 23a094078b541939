// Byte-level BPE (GPT-2 style): text is split by the GPT-2 regex, each piece's UTF-8 bytes are mapped to printable
// characters, and learned merges join them. Ids 0..255 are the single bytes (in byte order, as in ByteTokenizer), then
// one id per merge, then the special tokens. Any string round-trips, since every byte has a token.
//
// Two Hugging Face libraries do the work, both reading the same standard tokenizer.json:
// - training: `tokenizers` (the Rust library's Node binding, prebuilt binaries inside the npm package). Its Node
//   binding only exposes `train(files)` with the model's default trainer (vocabulary 30000, no special tokens, only
//   the bytes seen in the corpus), so we train with that and cut the result down: BPE training is greedy, the target
//   size only decides when to stop, so the first N merges of a longer run are exactly the merges of a run to N.
// - encoding and decoding: HfTokenizer (hf.ts, on `@huggingface/tokenizers`: pure JS, synchronous), because the Rust
//   binding's encode and decode return Promises and the Tokenizer interface is synchronous. Tests check both
//   libraries give the same ids.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ConfigError } from '../errors.js';
import { requireOptional } from '../optional.js';
import { HfTokenizer } from './hf.js';
import { BYTE_SPECIAL_TOKENS, specialTokensJSON } from './tokenizer.js';

/** GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the rest move to U+0100 and up. */
export function byteLevelAlphabet(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) chars.push(String.fromCharCode(printable(b) ? b : next++));
  return chars;
}

const BYTE_LEVEL = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };

type NativeTokenizers = typeof import('tokenizers');

/**
 * Trains a byte-level BPE with `vocabSize` ids (256 bytes + merges + 3 special tokens) on the text files given.
 * The result can be smaller when the corpus runs out of pairs to merge. Deterministic for the same files.
 */
export function trainBpe(files: readonly string[], vocabSize: number): HfTokenizer {
  const minimum = 256 + BYTE_SPECIAL_TOKENS.length;
  if (!Number.isInteger(vocabSize) || vocabSize < minimum)
    throw new ConfigError(`BPE vocabulary size must be an integer >= ${minimum} (256 bytes + special tokens)`);
  // Loaded on demand: the native library (an optional dependency) is only needed to train.
  const native = requireOptional<NativeTokenizers>('tokenizers');
  const trainer = new native.Tokenizer(native.BPE.empty());
  trainer.setPreTokenizer(native.byteLevelPreTokenizer(false, true));
  trainer.train([...files]);
  const tmp = mkdtempSync(join(tmpdir(), 'retnet-bpe-'));
  let trained: { model: { merges: [string, string][] } };
  try {
    trainer.save(join(tmp, 'tokenizer.json'));
    trained = JSON.parse(readFileSync(join(tmp, 'tokenizer.json'), 'utf8')) as typeof trained;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const vocab = new Map(byteLevelAlphabet().map((c, b) => [c, b]));
  const mergeLimit = vocabSize - BYTE_SPECIAL_TOKENS.length;
  const merges: [string, string][] = [];
  for (const [a, b] of trained.model.merges) {
    if (vocab.size >= mergeLimit) break;
    merges.push([a, b]);
    // Two merges can spell the same token ("a"+"bc", "ab"+"c"); the token keeps its first id.
    if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
  }
  const size = vocab.size;
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialTokensJSON(size),
    normalizer: null,
    pre_tokenizer: BYTE_LEVEL,
    post_processor: null,
    decoder: BYTE_LEVEL,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  };
  return new HfTokenizer(JSON.stringify(json), 'trained BPE');
}
