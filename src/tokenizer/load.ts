// Loads a tokenizer from its tokenizer.json text: the byte tokenizer's own JSON, or any Hugging Face tokenizer.json
// (with tokenizer_config.json / special_tokens_map.json when a model directory has them).

import { FormatError } from '../errors.js';
import { HfTokenizer, type TokenizerContext } from './hf.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';

export function loadTokenizer(json: string, source: string, ctx: TokenizerContext = {}): Tokenizer {
  let obj: unknown;
  try {
    obj = JSON.parse(json);
  } catch (e) {
    throw new FormatError(`${source}: not valid JSON (${(e as Error).message})`);
  }
  const model = obj !== null && typeof obj === 'object' ? (obj as { model?: unknown }).model : undefined;
  if (model !== null && typeof model === 'object' && (model as { type?: unknown }).type === 'retnet-bytes')
    return new ByteTokenizer();
  return new HfTokenizer(json, source, ctx);
}
