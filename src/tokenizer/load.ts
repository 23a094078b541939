// Loads a tokenizer from its tokenizer.json text: the byte tokenizer's own JSON or a Hugging Face byte-level BPE.

import { FormatError } from '../errors.js';
import { BpeTokenizer } from './bpe.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';

export function loadTokenizer(json: string, source: string): Tokenizer {
  let obj: { model?: { type?: string } };
  try {
    obj = JSON.parse(json) as typeof obj;
  } catch (e) {
    throw new FormatError(`${source}: not valid JSON (${(e as Error).message})`);
  }
  const type = obj.model?.type;
  if (type === 'retnet-bytes') return new ByteTokenizer();
  if (type === 'BPE') return new BpeTokenizer(json, source);
  throw new FormatError(
    `${source}: unsupported tokenizer model type ${JSON.stringify(type)} (expected retnet-bytes or BPE)`,
  );
}
