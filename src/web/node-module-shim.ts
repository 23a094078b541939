// The browser bundle's node:module (examples/web/serve.ts's bundleForBrowser maps the import here): on Node,
// src/tokenizer/hf.ts loads @huggingface/tokenizers lazily through createRequire; in a browser the bundle imports it.
import * as tokenizers from '@huggingface/tokenizers';

export function createRequire(): (id: string) => unknown {
  return (id) => {
    if (id === '@huggingface/tokenizers') return tokenizers;
    throw new Error(`retnet/web: ${id} cannot be required in a browser`);
  };
}
