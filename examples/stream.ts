// Stream a generation from TypeScript: tokens arrive as an AsyncIterable, text is UTF-8 safe, and an AbortSignal
// stops it.
//
//   node --import tsx examples/stream.ts [MODEL_DIR] [--prompt TEXT] [--max-tokens N]
//
// Without a model directory it uses a freshly initialised tiny RetNet (its text is noise, the streaming is real).

import { parseArgs } from 'node:util';

import { ByteTokenizer, type CausalLM, type Tokenizer, createModel, generate, loadModelDir } from 'retnet';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { prompt: { type: 'string', default: 'Retention is ' }, 'max-tokens': { type: 'string', default: '64' } },
});

let model: CausalLM;
let tokenizer: Tokenizer;
if (positionals[0] !== undefined) {
  const loaded = loadModelDir(positionals[0]);
  if (!loaded.tokenizer) throw new Error(`${positionals[0]} has no tokenizer.json`);
  ({ model, tokenizer } = { model: loaded.model, tokenizer: loaded.tokenizer });
} else {
  tokenizer = new ByteTokenizer();
  model = createModel('retnet', 'tiny', { vocabSize: tokenizer.vocabSize }, { seed: 0 });
}

const controller = new AbortController();
process.on('SIGINT', () => controller.abort()); // Ctrl-C ends the stream cleanly
const requests = [
  { prompt: values.prompt, maxNewTokens: Number(values['max-tokens']), sampling: { temperature: 0.8, seed: 1 } },
];
process.stdout.write(values.prompt);
for await (const event of generate(model, tokenizer, requests, { signal: controller.signal })) {
  process.stdout.write(event.text);
  if (event.type === 'end')
    process.stdout.write(`\n[${event.finishReason}: ${event.completionTokens} tokens after ${event.promptTokens}]\n`);
}
model.dispose();
