// `retnet serve`: the OpenAI-compatible server (completions, chat completions) for a model directory. Prints the
// URL once it listens; SIGTERM (or Ctrl-C) lets generations in flight finish for a grace period, cancels the rest and exits 0.

import { readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';

import { PREFILL_CHUNK } from '../generate/scheduler.js';
import { LOG_LEVELS, startServer } from '../server/server.js';
import {
  type Command,
  UsageError,
  choiceFlag,
  intFlag,
  parseFlags,
  WEIGHTS_FLAG,
  WEIGHTS_USAGE,
  weightsFlag,
} from './command.js';
import { loadForGeneration } from './generate.js';

export const serveCommand: Command = {
  name: 'serve',
  summary:
    'serve a model over HTTP: OpenAI /v1/completions and /v1/chat/completions (streaming or not), /v1/models, ' +
    '/tokenize, /detokenize, /metrics, /health',
  usage:
    'retnet serve --model DIR [--port N] [--host H] [--api-key K] [--model-id NAME] [--max-body-bytes N] ' +
    '[--max-prompt-tokens N] [--max-tokens N] [--max-active N] [--max-queued N] [--shutdown-grace-ms N] ' +
    `[--prefill-chunk N] [--strict] [--cors ORIGIN[,ORIGIN...]|'*'] [--chat-template FILE] ` +
    `[--log-level ${LOG_LEVELS.join('|')}] ${WEIGHTS_USAGE}  ` +
    '(the key may also come from RETNET_API_KEY)',
  async run(argv) {
    const { values } = parseFlags('serve', argv, {
      model: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'api-key': { type: 'string' },
      'model-id': { type: 'string' },
      'max-body-bytes': { type: 'string' },
      'max-prompt-tokens': { type: 'string' },
      'max-tokens': { type: 'string' },
      'max-active': { type: 'string' },
      'max-queued': { type: 'string' },
      'shutdown-grace-ms': { type: 'string' },
      'log-level': { type: 'string' },
      'prefill-chunk': { type: 'string' },
      strict: { type: 'boolean' },
      cors: { type: 'string' },
      'chat-template': { type: 'string' },
      ...WEIGHTS_FLAG,
    });
    if (!values.model) throw new UsageError('serve: --model DIR is required');
    const int = (flag: keyof typeof values, fallback: number, min = 1, max?: number) =>
      intFlag('serve', flag, values[flag] as string | undefined, fallback, min, max);
    const apiKey = values['api-key'] ?? process.env.RETNET_API_KEY;
    if (apiKey === '') throw new UsageError('serve: the API key must not be empty');
    const graceMs = int('shutdown-grace-ms', 5000, 0);
    const corsOrigins = values.cors?.split(',').map((o) => o.trim());
    if (corsOrigins?.some((o) => o !== '*' && !/^https?:\/\/[^/\s]+$/.test(o)))
      throw new UsageError(`serve: --cors takes origins such as http://localhost:3000 (or '*'), got '${values.cors}'`);
    const prefillChunk = int('prefill-chunk', PREFILL_CHUNK, 1, 1 << 20);
    let templateFile: string | undefined;
    if (values['chat-template'] !== undefined)
      try {
        templateFile = readFileSync(values['chat-template'], 'utf8');
      } catch (e) {
        throw new UsageError(`serve: --chat-template ${values['chat-template']}: ${(e as Error).message}`);
      }
    const { model, tokenizer, chatTemplate } = loadForGeneration(values.model, weightsFlag('serve', values.weights));
    const server = await startServer(model, tokenizer, {
      modelId: values['model-id'] ?? basename(resolve(values.model)),
      host: values.host ?? '127.0.0.1',
      port: int('port', 8000, 0, 65535),
      apiKey,
      maxBodyBytes: int('max-body-bytes', 1 << 20),
      maxPromptTokens: int('max-prompt-tokens', 2048),
      maxTokens: int('max-tokens', 2048),
      maxActive: int('max-active', 16),
      maxQueued: int('max-queued', 64, 0),
      prefillChunk,
      strict: values.strict ?? false,
      corsOrigins,
      chatTemplate: templateFile ?? chatTemplate,
      logLevel: choiceFlag('serve', 'log-level', values['log-level'], LOG_LEVELS, 'info'),
    });
    process.stdout.write(`retnet serve: listening on ${server.url}\n`);
    const signal = await new Promise<string>((done) => {
      process.once('SIGTERM', () => done('SIGTERM'));
      process.once('SIGINT', () => done('SIGINT'));
    });
    process.stderr.write(`retnet serve: ${signal}: finishing in-flight requests (up to ${graceMs} ms), then exiting\n`);
    await server.close(graceMs);
    model.dispose();
    return 0;
  },
};
