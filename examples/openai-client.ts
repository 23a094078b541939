// The official OpenAI client talking to `retnet serve`: the server speaks /v1/completions, streamed and whole.
//
//   node --import tsx examples/openai-client.ts [MODEL_DIR]
//
// It starts the server in-process on a free port of 127.0.0.1 (the same server `retnet serve --model DIR` runs),
// then sends a normal and a streamed completion. Without a model directory it serves an untrained tiny RetNet.

import OpenAI from 'openai';

import { ByteTokenizer, createModel, loadModelDir, startServer } from 'retnet';

const dir = process.argv[2];
const loaded = dir ? loadModelDir(dir) : null;
const tokenizer = loaded?.tokenizer ?? new ByteTokenizer();
const model = loaded?.model ?? createModel('retnet', 'tiny', { vocabSize: tokenizer.vocabSize }, { seed: 0 });
const server = await startServer(model, tokenizer, { modelId: 'retnet-demo', port: 0 });

const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' });
try {
  const models = await client.models.list();
  console.log('models:', models.data.map((m) => m.id).join(', '));

  const completion = await client.completions.create({
    model: 'retnet-demo',
    prompt: 'The jury said',
    max_tokens: 32,
    temperature: 0,
  });
  console.log('completion:', JSON.stringify(completion.choices[0]?.text), completion.usage);

  const stream = await client.completions.create({
    model: 'retnet-demo',
    prompt: 'The jury said',
    max_tokens: 32,
    temperature: 0,
    stream: true,
  });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? '';
  console.log('streamed:  ', JSON.stringify(streamed));
  if (streamed !== completion.choices[0]?.text) throw new Error('streamed and whole greedy completions differ');
} finally {
  await server.close();
  model.dispose();
}
