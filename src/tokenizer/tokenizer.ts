// The tokenizer interface, and the default byte-level tokenizer: ids 0..255 are the bytes of the UTF-8 encoding, then
// the special tokens. It round-trips any string, needs no training, and its vocabulary (259) fits small demo models.

export interface Tokenizer {
  /** Number of ids, special tokens included. */
  readonly vocabSize: number;
  /** End-of-text id, appended between documents and used as a stop token. */
  readonly eosId: number;
  /**
   * The ids of a text, with the special tokens the tokenizer adds around a sequence (a BOS, say) unless `special` is
   * false, as for a chat template's output, which already holds them.
   */
  encode(text: string, opts?: { special?: boolean }): number[];
  /** Decodes ids to text; bytes that do not form complete UTF-8 characters decode to U+FFFD. */
  decode(ids: readonly number[]): string;
  /** The Hugging Face tokenizer.json text describing this tokenizer. */
  toJSON(): string;
}

export const BYTE_SPECIAL_TOKENS = ['<|endoftext|>', '<|pad|>', '<|unk|>'] as const;

/** The "added_tokens" entries of tokenizer.json for the special tokens, numbered from `firstId`. */
export function specialTokensJSON(firstId: number): object[] {
  return BYTE_SPECIAL_TOKENS.map((content, i) => ({
    id: firstId + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
}

export class ByteTokenizer implements Tokenizer {
  readonly vocabSize = 256 + BYTE_SPECIAL_TOKENS.length;
  readonly eosId = 256;
  private readonly encoder = new TextEncoder();

  /** Bytes; it adds no special tokens, so `special` changes nothing. */
  encode(text: string, _opts?: { special?: boolean }): number[] {
    return Array.from(this.encoder.encode(text));
  }

  decode(ids: readonly number[]): string {
    const bytes = ids.filter((id) => id >= 0 && id < 256);
    return new TextDecoder('utf-8', { fatal: false }).decode(Uint8Array.from(bytes));
  }

  /** A tokenizer.json in the Hugging Face format: a byte-level model whose ids are the raw byte values. */
  toJSON(): string {
    const vocab: Record<string, number> = {};
    for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = b;
    return JSON.stringify({
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: specialTokensJSON(256),
      normalizer: null,
      pre_tokenizer: null,
      model: { type: 'retnet-bytes', vocab },
      decoder: null,
    });
  }
}
