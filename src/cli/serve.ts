// `retnet serve`: the OpenAI-compatible server (completions, chat completions) for a model directory. Prints the
// URL once it listens; SIGTERM (or Ctrl-C) lets generations in flight finish for a grace period, cancels the rest and exits 0.

import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { basename, resolve } from 'node:path';

import { InvalidArgumentError } from 'commander';

import { RetnetError } from '../errors.js';
import { PREFILL_CHUNK } from '../generate/scheduler.js';
import { LOG_LEVELS, startServer } from '../server/server.js';
import {
  type Flag,
  DEVICE_FLAG,
  STATE_FLAG,
  UsageError,
  WEIGHTS_FLAG,
  bool,
  choice,
  defineCommand,
  int,
  list,
  text,
} from './command.js';
import { loadForGeneration } from './generate.js';

const HOSTNAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** --host: an IP address or a host name (a name of digits and dots is a mistyped IPv4 address). */
export const hostFlag: Flag<string> = {
  ...text('the address to listen on: an IP address or a host name', { placeholder: 'host', default: '127.0.0.1' }),
  parse: (raw) => {
    if (isIP(raw) !== 0) return raw;
    if (!HOSTNAME.test(raw) || /^[\d.]+$/.test(raw))
      throw new InvalidArgumentError(`expected an IP address (127.0.0.1, ::1, 0.0.0.0) or a host name, got '${raw}'`);
    return raw;
  },
};

/** Why a server could not listen, as a RetnetError where the cause is the user's (the port, the address). */
export function listenError(e: NodeJS.ErrnoException, host: string, port: number): Error {
  const why: Record<string, string> = {
    EADDRINUSE: 'the port is in use (choose another --port)',
    EACCES: 'permission denied (ports below 1024 need privileges)',
    EADDRNOTAVAIL: 'the address is not one of this machine (check --host)',
  };
  return e.code !== undefined && e.code in why
    ? new RetnetError(`cannot listen on ${host}:${port}: ${why[e.code]}`)
    : e;
}

export const serveCommand = defineCommand({
  name: 'serve',
  summary:
    'serve a model over HTTP: OpenAI /v1/completions and /v1/chat/completions (streaming or not), /v1/models, ' +
    '/tokenize, /detokenize, /metrics, /health',
  flags: {
    model: text('the model directory', { placeholder: 'dir', required: true, nonEmpty: true }),
    port: int('the TCP port; 0 picks a free one', { min: 0, max: 65535, default: 8000 }),
    host: hostFlag,
    'api-key': text('require "Authorization: Bearer KEY" on /v1/*', {
      placeholder: 'key',
      env: 'RETNET_API_KEY',
      nonEmpty: true,
    }),
    'model-id': text('the model name in /v1/models and responses', { placeholder: 'name', defaultHelp: "DIR's name" }),
    'max-body-bytes': int('largest request body; larger get 413', { min: 1, max: 2 ** 30, default: 1 << 20 }),
    'max-prompt-tokens': int('longest prompt in tokens', { min: 1, max: 2 ** 24, default: 2048 }),
    'max-tokens': int('largest max_tokens of a request', { min: 1, max: 2 ** 24, default: 2048 }),
    'max-active': int('most sequences decoding at once', { min: 1, max: 4096, default: 16 }),
    'max-queued': int('most requests waiting for a decoding slot (0: none wait); beyond, 429', {
      min: 0,
      max: 65536,
      default: 64,
    }),
    'shutdown-grace-ms': int('on SIGTERM, how long requests in flight may finish', {
      min: 0,
      max: 3_600_000,
      default: 5000,
    }),
    'prefill-chunk': int('most prompt tokens in one prefill call', { min: 1, max: 1 << 20, default: PREFILL_CHUNK }),
    strict: bool('reject request fields this server does not implement'),
    cors: list(
      "allowed browser origins, such as http://localhost:3000 (or '*')",
      (o) => {
        if (o !== '*' && !/^https?:\/\/[^/\s]+$/.test(o)) throw new Error(`expected an origin or '*', got '${o}'`);
        return o;
      },
      { placeholder: 'origins', maxItems: 64 },
    ),
    'chat-template': text('a chat template file', { placeholder: 'file', defaultHelp: "the model directory's" }),
    ...WEIGHTS_FLAG,
    ...STATE_FLAG,
    ...DEVICE_FLAG,
    'log-level': choice('request logs on stderr; stack traces only at debug', LOG_LEVELS, { default: 'info' }),
  },
  async run({ values }) {
    const host = values.host;
    // A name that does not resolve is a typo: say so before loading the model.
    if (isIP(host) === 0)
      await lookup(host).catch((e: NodeJS.ErrnoException) => {
        throw new UsageError(`serve: --host '${host}' does not resolve (${e.code ?? e.message})`);
      });
    const graceMs = values['shutdown-grace-ms'];
    let templateFile: string | undefined;
    if (values['chat-template'] !== undefined)
      try {
        templateFile = readFileSync(values['chat-template'], 'utf8');
      } catch (e) {
        throw new UsageError(`serve: --chat-template ${values['chat-template']}: ${(e as Error).message}`);
      }
    const { model, tokenizer, chatTemplate, templateTokens, eosIds } = loadForGeneration(
      values.model,
      values.weights,
      values.state,
    );
    const server = await startServer(model, tokenizer, {
      modelId: values['model-id'] ?? basename(resolve(values.model)),
      host,
      port: values.port,
      apiKey: values['api-key'],
      maxBodyBytes: values['max-body-bytes'],
      maxPromptTokens: values['max-prompt-tokens'],
      maxTokens: values['max-tokens'],
      maxActive: values['max-active'],
      maxQueued: values['max-queued'],
      prefillChunk: values['prefill-chunk'],
      strict: values.strict,
      corsOrigins: values.cors,
      chatTemplate: templateFile ?? chatTemplate,
      templateTokens,
      eosIds,
      logLevel: values['log-level'],
    }).catch((e: NodeJS.ErrnoException) => {
      model.dispose();
      throw listenError(e, host, values.port);
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
});
