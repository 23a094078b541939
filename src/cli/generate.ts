// `retnet generate`: streams the continuation of a prompt to stdout as it is produced, and reports prefill and decode
// speed on stderr. `--temperature 0` is greedy and deterministic.

import { readFileSync, statSync } from 'node:fs';

import { ConfigError } from '../errors.js';
import { generate } from '../generate/generate.js';
import type { SamplingOptions } from '../generate/sampler.js';
import type { CausalLM } from '../models/lm.js';
import { RetNetModel, type StateFormat } from '../models/retnet/model.js';
import { loadModelDir } from '../io/model-dir.js';
import { HfTokenizer } from '../tokenizer/hf.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { TemplateTokens } from '../server/chat.js';
import type { WeightFormat } from '../quant/formats.js';
import { DEVICE_FLAG, STATE_FLAG, UsageError, WEIGHTS_FLAG, bool, defineCommand, int, num, text } from './command.js';

/** What generation needs from a model directory. */
export interface LoadedForGeneration {
  model: CausalLM;
  tokenizer: Tokenizer;
  /** The ids that end a generation: generation_config.json's eos_token_id(s) and the tokenizer's end-of-text. */
  eosIds: number[];
  /** tokenizer_config.json's chat_template, when it has one. */
  chatTemplate?: string;
  /** The special-token texts chat templates write (`bos_token`, `eos_token`). */
  templateTokens: TemplateTokens;
}

/** Loads a model directory for generation, which needs its tokenizer (weights: as `--weights`). */
export function loadForGeneration(
  dir: string,
  weights?: WeightFormat,
  state: StateFormat = 'f32',
): LoadedForGeneration {
  const { model, tokenizer, generation, chatTemplate } = loadModelDir(dir, { weights });
  if (state === 'f16') {
    if (!(model instanceof RetNetModel)) {
      model.dispose();
      throw new UsageError(`--state f16: ${dir} holds a ${model.arch}; a 16-bit decode state is a RetNet's`);
    }
    model.setStateFormat(state);
  }
  if (!tokenizer) {
    model.dispose();
    throw new ConfigError(`${dir}: no tokenizer.json; generation needs the tokenizer the model was trained with`);
  }
  const eosIds = [...new Set([...generation.eosTokenIds, tokenizer.eosId])];
  const bad = eosIds.find((id) => id >= model.vocabSize);
  if (bad !== undefined) {
    model.dispose();
    throw new ConfigError(`${dir}: eos_token_id ${bad} is not an id of the model's vocabulary [0, ${model.vocabSize})`);
  }
  const templateTokens: TemplateTokens =
    tokenizer instanceof HfTokenizer
      ? { eos_token: tokenizer.eosToken, ...(tokenizer.bosToken === null ? {} : { bos_token: tokenizer.bosToken }) }
      : {};
  return { model, tokenizer, eosIds, templateTokens, ...(chatTemplate === null ? {} : { chatTemplate }) };
}

export interface GenerateTextOptions {
  prompt: string;
  maxTokens: number;
  sampling: SamplingOptions;
  stop?: string[];
  ignoreEos?: boolean;
  /** The ids that end the generation (default: the tokenizer's end-of-text). */
  eosIds?: readonly number[];
  signal?: AbortSignal;
}

export interface GenerateStats {
  promptTokens: number;
  completionTokens: number;
  finishReason: string;
  /** From the call to the first token: the prefill and one sampling. */
  prefillMs: number;
  /** From the first token to the last: completionTokens − 1 decode steps. */
  decodeMs: number;
}

const rate = (tokens: number, ms: number) => (ms > 0 ? ((tokens * 1000) / ms).toFixed(1) : '-');

/** One line summing up a generation's speed. */
export function formatStats(s: GenerateStats): string {
  const steps = Math.max(s.completionTokens - 1, 0);
  return (
    `prefill: ${s.promptTokens} tokens in ${s.prefillMs.toFixed(1)} ms (${rate(s.promptTokens, s.prefillMs)} tokens/s); ` +
    `decode: ${steps} tokens in ${s.decodeMs.toFixed(1)} ms (${rate(steps, s.decodeMs)} tokens/s); ` +
    `finish: ${s.finishReason}`
  );
}

/** Generates one continuation, writing its text to `write` as soon as each piece is complete. */
export async function generateText(
  model: CausalLM,
  tokenizer: Tokenizer,
  opts: GenerateTextOptions,
  write: (text: string) => void,
): Promise<GenerateStats> {
  const request = {
    prompt: opts.prompt,
    maxNewTokens: opts.maxTokens,
    sampling: opts.sampling,
    stop: opts.stop,
    ignoreEos: opts.ignoreEos,
    eosIds: opts.eosIds,
  };
  const start = performance.now();
  let first = -1;
  const events = generate(model, tokenizer, [request], { signal: opts.signal });
  for await (const e of events) {
    if (first < 0) first = performance.now();
    if (e.text !== '') write(e.text);
    if (e.type === 'end')
      return {
        promptTokens: e.promptTokens,
        completionTokens: e.completionTokens,
        finishReason: e.finishReason,
        prefillMs: first - start,
        decodeMs: performance.now() - first,
      };
  }
  throw new Error('generate ended without an end event');
}

/** The largest prompt read from a file or stdin. */
const MAX_PROMPT_BYTES = 16 * 2 ** 20;

/** The prompt: --prompt, else --prompt-file (`-` is stdin), else stdin when it is not a terminal. */
async function readPrompt(prompt: string | undefined, file: string | undefined): Promise<string> {
  if (prompt !== undefined && file !== undefined)
    throw new UsageError('generate: give --prompt or --prompt-file, not both');
  if (prompt !== undefined) return prompt;
  if (file === undefined && process.stdin.isTTY)
    throw new UsageError('generate: give --prompt TEXT, --prompt-file FILE, or the prompt on stdin');
  let bytes: Buffer;
  if (file !== undefined && file !== '-') {
    try {
      if (statSync(file).size > MAX_PROMPT_BYTES) throw new UsageError(`generate: ${file} is over 16 MiB`);
      bytes = readFileSync(file);
    } catch (e) {
      if (e instanceof UsageError) throw e;
      throw new UsageError(`generate: cannot read --prompt-file ${file}: ${(e as Error).message}`);
    }
  } else {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin) {
      size += (chunk as Buffer).length;
      if (size > MAX_PROMPT_BYTES) throw new UsageError('generate: the prompt on stdin is over 16 MiB');
      chunks.push(chunk as Buffer);
    }
    bytes = Buffer.concat(chunks);
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  if (text.includes('\uFFFD'))
    throw new UsageError(`generate: the prompt ${file ? `in ${file} ` : ''}is not valid UTF-8`);
  return text;
}

export const generateCommand = defineCommand({
  name: 'generate',
  summary: 'stream the continuation of a prompt (speed on stderr)',
  flags: {
    model: text('the model directory', { placeholder: 'dir', required: true, nonEmpty: true }),
    prompt: text('the prompt'),
    'prompt-file': text('read the prompt from a file (- for stdin); without either, stdin is read', {
      placeholder: 'file',
      nonEmpty: true,
    }),
    'max-tokens': int('tokens to generate at most', { min: 1, max: 2 ** 20, default: 128 }),
    temperature: num('sampling temperature; 0 is greedy', { min: 0, max: 100, default: 1 }),
    'top-p': num('nucleus sampling: the smallest set of tokens with this probability', {
      min: 1e-6,
      max: 1,
      default: 1,
    }),
    'top-k': int('sample from the k most likely tokens; 0: all', { min: 0, max: 2 ** 24, default: 0 }),
    'repetition-penalty': num('divides the logits of tokens already seen', { min: 1e-3, max: 100, default: 1 }),
    seed: int('seeds the sampler', { min: 0, max: 2 ** 32 - 1, defaultHelp: 'random' }),
    stop: text('stop when the text contains this string'),
    'ignore-eos': bool('keep generating past the end-of-text token'),
    ...WEIGHTS_FLAG,
    ...STATE_FLAG,
    ...DEVICE_FLAG,
  },
  async run({ values }) {
    const sampling: SamplingOptions = {
      temperature: values.temperature,
      topP: values['top-p'],
      topK: values['top-k'],
      repetitionPenalty: values['repetition-penalty'],
    };
    if (values.seed !== undefined) sampling.seed = values.seed;
    const opts: GenerateTextOptions = {
      prompt: await readPrompt(values.prompt, values['prompt-file']),
      maxTokens: values['max-tokens'],
      sampling,
      stop: values.stop === undefined || values.stop === '' ? [] : [values.stop],
      ignoreEos: values['ignore-eos'],
    };
    const { model, tokenizer, eosIds } = loadForGeneration(values.model, values.weights, values.state);
    // Ctrl-C ends the generation cleanly (the text so far and the speed line are still printed).
    const interrupt = new AbortController();
    const onSigint = () => interrupt.abort();
    process.once('SIGINT', onSigint);
    try {
      const stats = await generateText(model, tokenizer, { ...opts, eosIds, signal: interrupt.signal }, (t) =>
        process.stdout.write(t),
      );
      if (process.stdout.isTTY) process.stdout.write('\n'); // piped output is exactly the generated text
      process.stderr.write(`${formatStats(stats)}\n`);
    } finally {
      process.off('SIGINT', onSigint);
      model.dispose();
    }
    return 0;
  },
});
