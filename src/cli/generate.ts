// `retnet generate`: streams the continuation of a prompt to stdout as it is produced, and reports prefill and decode
// speed on stderr. `--temperature 0` is greedy and deterministic.

import { ConfigError } from '../errors.js';
import { generate } from '../generate/generate.js';
import type { SamplingOptions } from '../generate/sampler.js';
import type { CausalLM } from '../models/lm.js';
import { loadModelDir } from '../io/model-dir.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { WeightFormat } from '../quant/formats.js';
import {
  type Command,
  UsageError,
  WEIGHTS_FLAG,
  WEIGHTS_USAGE,
  intFlag,
  numberFlag,
  parseFlags,
  weightsFlag,
} from './command.js';

/** Loads a model directory for generation, which needs its tokenizer (weights: as `--weights`). */
export function loadForGeneration(
  dir: string,
  weights?: WeightFormat,
): { model: CausalLM; tokenizer: Tokenizer; chatTemplate?: string } {
  const loaded = loadModelDir(dir, { weights });
  const { model, tokenizer } = loaded;
  if (!tokenizer) {
    model.dispose();
    throw new ConfigError(`${dir}: no tokenizer.json; generation needs the tokenizer the model was trained with`);
  }
  // tokenizer_config.json's chat_template, once the model-directory loader reads it.
  const { chatTemplate } = loaded as { chatTemplate?: unknown };
  return { model, tokenizer, ...(typeof chatTemplate === 'string' ? { chatTemplate } : {}) };
}

export interface GenerateTextOptions {
  prompt: string;
  maxTokens: number;
  sampling: SamplingOptions;
  stop?: string[];
  ignoreEos?: boolean;
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

export const generateCommand: Command = {
  name: 'generate',
  summary: 'stream the continuation of a prompt (speed on stderr)',
  usage:
    'retnet generate --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] ' +
    `[--repetition-penalty R] [--seed S] [--stop STRING] [--ignore-eos] ${WEIGHTS_USAGE}`,
  async run(argv) {
    const { values } = parseFlags('generate', argv, {
      model: { type: 'string' },
      prompt: { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      'repetition-penalty': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string' },
      'ignore-eos': { type: 'boolean' },
      ...WEIGHTS_FLAG,
    });
    if (!values.model) throw new UsageError('generate: --model DIR is required');
    if (values.prompt === undefined) throw new UsageError('generate: --prompt TEXT is required');
    const sampling: SamplingOptions = {
      temperature: numberFlag('generate', 'temperature', values.temperature, 1, 0),
      topP: numberFlag('generate', 'top-p', values['top-p'], 1, Number.MIN_VALUE, 1),
      topK: intFlag('generate', 'top-k', values['top-k'], 0, 0),
      repetitionPenalty: numberFlag(
        'generate',
        'repetition-penalty',
        values['repetition-penalty'],
        1,
        Number.MIN_VALUE,
      ),
    };
    if (values.seed !== undefined) sampling.seed = intFlag('generate', 'seed', values.seed, 0, 0, 2 ** 32 - 1);
    const opts: GenerateTextOptions = {
      prompt: values.prompt,
      maxTokens: intFlag('generate', 'max-tokens', values['max-tokens'], 128),
      sampling,
      stop: values.stop === undefined || values.stop === '' ? [] : [values.stop],
      ignoreEos: values['ignore-eos'] ?? false,
    };
    const { model, tokenizer } = loadForGeneration(values.model, weightsFlag('generate', values.weights));
    // Ctrl-C ends the generation cleanly (the text so far and the speed line are still printed).
    const interrupt = new AbortController();
    const onSigint = () => interrupt.abort();
    process.once('SIGINT', onSigint);
    try {
      const stats = await generateText(model, tokenizer, { ...opts, signal: interrupt.signal }, (t) =>
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
};
