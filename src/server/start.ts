// The server's entry in the package API: `import 'retnet'` does not load the server or its dependencies (fastify,
// prom-client, @huggingface/jinja); the first startServer() call does.
import type { CausalLM } from '../models/lm.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { RunningServer, ServerOptions } from './server.js';

export type { RunningServer, ServerOptions } from './server.js';

/** Starts the OpenAI-compatible HTTP server (see server.ts). */
export async function startServer(model: CausalLM, tokenizer: Tokenizer, opts: ServerOptions): Promise<RunningServer> {
  return (await import('./server.js')).startServer(model, tokenizer, opts);
}
