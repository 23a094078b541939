// Turning a stream of token ids into a stream of text: incremental detokenisation that never splits a multi-byte
// character, and stop strings that may span several tokens.

import type { Tokenizer } from '../tokenizer/tokenizer.js';

const REPLACEMENT = '\uFFFD';
/** A UTF-8 character has at most 4 bytes, so at most 4 tokens can end inside one character. */
const MAX_PENDING = 4;

/**
 * Decodes ids one at a time and releases text only once it decodes without a trailing incomplete character (which a
 * tokenizer's decode turns into U+FFFD). It re-decodes a short window of recent ids (`prefix`..end) rather than each
 * id alone, because a token's text can depend on its neighbours (a byte of a character, a leading space).
 */
export class IncrementalDetokenizer {
  /** Ids from the start of the decode window; earlier ids are done with. */
  private window: number[] = [];
  /** window[0, read) has been released as text. */
  private read = 0;

  constructor(private readonly tokenizer: Tokenizer) {}

  /** Adds one id; returns the text it completes (possibly ''). */
  push(id: number): string {
    this.window.push(id);
    const done = this.tokenizer.decode(this.window.slice(0, this.read));
    const all = this.tokenizer.decode(this.window);
    const pending = this.window.length - this.read;
    if (all.endsWith(REPLACEMENT) && pending < MAX_PENDING) return ''; // an unfinished character: wait
    const text = all.slice(done.length);
    if (all.endsWith(REPLACEMENT)) {
      // So many ids pending that it cannot be one character: the bytes are invalid and were released as U+FFFD.
      // Start a fresh window so that later ids cannot change text already released.
      this.window = [];
      this.read = 0;
    } else {
      // Keep the released ids as context for the next decode.
      this.window = this.window.slice(this.read);
      this.read = this.window.length;
    }
    return text;
  }

  /** The text still held back (incomplete characters decode as U+FFFD); the stream is over. */
  flush(): string {
    const done = this.tokenizer.decode(this.window.slice(0, this.read));
    const all = this.tokenizer.decode(this.window);
    this.window = [];
    this.read = 0;
    return all.slice(done.length);
  }
}

/**
 * Finds stop strings in streamed text. Text that might be the start of a stop string is held back until the next
 * piece shows whether it is, so a stop string split across tokens is still found and never partly emitted.
 */
export class StopMatcher {
  private held = '';

  constructor(private readonly stops: readonly string[]) {}

  /** Adds text; returns what can be emitted now and whether a stop string was found (text after it is dropped). */
  push(text: string): { text: string; stopped: boolean } {
    const buffer = this.held + text;
    let first = -1;
    for (const s of this.stops) {
      const at = buffer.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      this.held = '';
      return { text: buffer.slice(0, first), stopped: true };
    }
    // Hold back the longest suffix of the buffer that is a proper prefix of some stop string.
    let keepLen = 0;
    for (const s of this.stops)
      for (let n = Math.min(s.length - 1, buffer.length); n > keepLen; n--)
        if (buffer.endsWith(s.slice(0, n))) {
          keepLen = n;
          break;
        }
    this.held = buffer.slice(buffer.length - keepLen);
    return { text: buffer.slice(0, buffer.length - keepLen), stopped: false };
  }

  /** The held-back text; the stream ended without a stop string. */
  flush(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }
}
