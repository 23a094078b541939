// Any Hugging Face tokenizer.json: byte-level BPE (GPT-2, Llama-3, Qwen), SentencePiece-style BPE with byte fallback
// and the "▁" convention (Llama-2 / Mistral, in both the Prepend+Replace normalizer and the Metaspace layouts),
// WordPiece and Unigram. The pipeline itself (normalizer, pre-tokenizer, model, post-processor, decoder, added
// tokens) is `@huggingface/tokenizers` (pure JS, synchronous; tests hold it to the Rust library's ids). This file
// checks the file's structure first, so a malformed one gets a message instead of a TypeError deep in the library,
// and takes the special tokens and the BOS/EOS policy from the file, tokenizer_config.json and special_tokens_map.json.

import { createRequire } from 'node:module';

import type { Tokenizer as Pipeline } from '@huggingface/tokenizers';

import { FormatError } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

// The library loads with the first HfTokenizer (its CommonJS build, synchronously), not with `import 'retnet'`:
// byte-level models never need it.
let PipelineClass: typeof Pipeline | undefined;
function pipelineClass(): typeof Pipeline {
  PipelineClass ??= (createRequire(import.meta.url)('@huggingface/tokenizers') as { Tokenizer: typeof Pipeline })
    .Tokenizer;
  return PipelineClass;
}

/** Largest vocabulary accepted (the largest public ones are ~256k); bounds every table built from the file. */
export const MAX_VOCAB = 1 << 24;

/** tokenizer_config.json and special_tokens_map.json as read (either may be absent). */
export interface TokenizerContext {
  tokenizerConfig?: Record<string, unknown> | null;
  specialTokensMap?: Record<string, unknown> | null;
}

/** End-of-text tokens tried, in order, when no config names one. */
const EOS_NAMES = ['<|endoftext|>', '</s>', '<|end_of_text|>', '<eos>', '<|im_end|>'];

interface AddedTokenJSON {
  id: number;
  content: string;
  special?: boolean;
}

function plainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A special token named in a config: a string, or an AddedToken-like {content}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (plainObject(v) && typeof v.content === 'string') return v.content;
  return null;
}

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly eosId: number;
  /** The beginning-of-text id, null when the tokenizer has none. */
  readonly bosId: number | null;
  /** The text of the end-of-text and beginning-of-text tokens (chat templates write them: `eos_token`). */
  readonly eosToken: string;
  readonly bosToken: string | null;
  /** Special tokens by content (from added_tokens with special: true). */
  readonly specialTokens: ReadonlyMap<string, number>;
  private readonly pipeline: Pipeline;
  /** null: the file's post-processor decides what encode() adds; else tokenizer_config's add_bos/eos_token. */
  private readonly addBos: boolean | null;
  private readonly addEos: boolean;
  private readonly cleanUpSpaces: boolean;

  /** `json` is the tokenizer.json text; `source` names it in errors. */
  constructor(
    private readonly json: string,
    source: string,
    ctx: TokenizerContext = {},
  ) {
    let obj: unknown;
    try {
      obj = JSON.parse(json);
    } catch (e) {
      throw new FormatError(`${source}: not valid JSON (${(e as Error).message})`);
    }
    if (!plainObject(obj)) throw new FormatError(`${source}: expected a JSON object`);
    const model = obj.model;
    if (!plainObject(model)) throw new FormatError(`${source}: "model" must be an object`);
    const vocabIds = modelVocabIds(model, source);
    if (vocabIds.length === 0) throw new FormatError(`${source}: the model's vocabulary is empty`);
    const added = addedTokens(obj.added_tokens, source);
    let max = -1;
    for (const id of vocabIds) if (id > max) max = id;
    for (const t of added) if (t.id > max) max = t.id;
    this.vocabSize = max + 1;
    if (this.vocabSize > MAX_VOCAB)
      throw new FormatError(`${source}: token id ${max} is beyond the largest vocabulary accepted (${MAX_VOCAB})`);
    this.specialTokens = new Map(added.filter((t) => t.special).map((t) => [t.content, t.id]));

    const config = ctx.tokenizerConfig ?? {};
    const map = ctx.specialTokensMap ?? {};
    try {
      const extra = Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : [];
      this.pipeline = new (pipelineClass())(obj, {
        ...config,
        additional_special_tokens: extra.map(tokenText).filter(Boolean),
      });
    } catch (e) {
      throw new FormatError(`${source}: cannot build the tokenizer (${(e as Error).message})`);
    }
    /** The role's token text as the config names it, checked to be a token. */
    const named = (role: string): string | null => {
      const text = tokenText(config[`${role}_token`]) ?? tokenText(map[`${role}_token`]);
      if (text !== null && this.pipeline.token_to_id(text) === undefined)
        throw new FormatError(
          `${source}: ${role}_token ${JSON.stringify(text)} (from the tokenizer config) is not a token`,
        );
      return text;
    };
    const eos = named('eos') ?? EOS_NAMES.find((n) => this.specialTokens.has(n)) ?? null;
    if (eos === null)
      throw new FormatError(
        `${source}: no end-of-text token: set eos_token in tokenizer_config.json or add one of ${EOS_NAMES.join(', ')} ` +
          `to added_tokens`,
      );
    this.eosToken = eos;
    this.eosId = this.pipeline.token_to_id(eos)!;
    this.bosToken = named('bos') ?? (this.specialTokens.has('<s>') ? '<s>' : null);
    this.bosId = this.bosToken === null ? null : this.pipeline.token_to_id(this.bosToken)!;
    const flag = (key: string): boolean | null => {
      const v = config[key];
      if (v === undefined || v === null) return null;
      if (typeof v !== 'boolean')
        throw new FormatError(
          `${source}: tokenizer_config.json ${key} must be true or false, got ${JSON.stringify(v)}`,
        );
      return v;
    };
    this.addBos = flag('add_bos_token');
    this.addEos = flag('add_eos_token') ?? false;
    if (this.addBos && this.bosId === null)
      throw new FormatError(`${source}: tokenizer_config.json sets add_bos_token but the tokenizer has no BOS token`);
    this.cleanUpSpaces = flag('clean_up_tokenization_spaces') ?? false;
  }

  /**
   * Ids of a text, with the special tokens the tokenizer adds to a sequence (BOS for Llama/Mistral when the config
   * says so; `special: false` leaves them out). Special tokens written in the text ("</s>") map to their ids.
   */
  encode(text: string, opts: { special?: boolean } = {}): number[] {
    const special = opts.special ?? true;
    if (!special || this.addBos === null)
      return this.pipeline.encode(text, { add_special_tokens: special && this.addBos === null }).ids;
    const ids = this.pipeline.encode(text, { add_special_tokens: false }).ids;
    if (this.addBos) ids.unshift(this.bosId!);
    if (this.addEos) ids.push(this.eosId);
    return ids;
  }

  /** Special tokens decode to their text ("</s>") unless `skipSpecial`; ids outside the vocabulary are dropped. */
  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    const known = ids.filter((id) => Number.isInteger(id) && id >= 0 && id < this.vocabSize);
    if (known.length === 0) return '';
    return this.pipeline.decode(known, {
      skip_special_tokens: opts.skipSpecial ?? false,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  toJSON(): string {
    return this.json;
  }
}

/** The ids of the model's vocabulary, checked (non-negative integers below MAX_VOCAB). */
function modelVocabIds(model: Record<string, unknown>, source: string): number[] {
  const type = model.type;
  const vocab = model.vocab;
  let ids: unknown[];
  if (type === 'BPE' || type === 'WordPiece' || (type === undefined && plainObject(vocab))) {
    if (!plainObject(vocab)) throw new FormatError(`${source}: model.vocab must be an object (token -> id)`);
    ids = Object.values(vocab);
    if (type !== 'WordPiece' && !Array.isArray(model.merges))
      throw new FormatError(`${source}: a BPE model needs a "merges" list`);
  } else if (type === 'Unigram') {
    if (!Array.isArray(vocab))
      throw new FormatError(`${source}: a Unigram model's vocab must be a list of [piece, score]`);
    ids = vocab.map((_, i) => i);
  } else
    throw new FormatError(
      `${source}: unsupported tokenizer model type ${JSON.stringify(type)} (expected BPE, WordPiece or Unigram)`,
    );
  for (const id of ids)
    if (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= MAX_VOCAB)
      throw new FormatError(
        `${source}: model.vocab ids must be integers in [0, ${MAX_VOCAB}), got ${JSON.stringify(id)}`,
      );
  return ids as number[];
}

function addedTokens(v: unknown, source: string): AddedTokenJSON[] {
  if (v === undefined) return [];
  if (!Array.isArray(v))
    throw new FormatError(`${source}: added_tokens must be a list of {id, content, ...}, got ${JSON.stringify(v)}`);
  return v.map((t, i) => {
    if (!plainObject(t) || typeof t.content !== 'string' || t.content === '')
      throw new FormatError(`${source}: added_tokens[${i}] must be an object with a non-empty "content" string`);
    if (!Number.isSafeInteger(t.id) || (t.id as number) < 0 || (t.id as number) >= MAX_VOCAB)
      throw new FormatError(
        `${source}: added_tokens[${i}] (${JSON.stringify(t.content)}) has id ${JSON.stringify(t.id)}`,
      );
    if (t.special !== undefined && typeof t.special !== 'boolean')
      throw new FormatError(`${source}: added_tokens[${i}].special must be true or false`);
    return { id: t.id as number, content: t.content, special: t.special as boolean | undefined };
  });
}
