// Prometheus metrics of one server (prom-client, the maintained Node client; a registry of its own, so that two
// servers in one process do not share counters): requests by route and status, prompt and generated tokens, queue
// length and running sequences, time to first token, and the durations of decode steps and prefill calls.

import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Buckets in seconds from 1 ms to about 30 s. */
const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'retnet_http_requests_total',
    help: 'HTTP requests answered, by route and status code',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  });
  readonly promptTokens = new Counter({
    name: 'retnet_prompt_tokens_total',
    help: 'Prompt tokens of finished sequences',
    registers: [this.registry],
  });
  readonly generatedTokens = new Counter({
    name: 'retnet_generation_tokens_total',
    help: 'Tokens generated',
    registers: [this.registry],
  });
  readonly timeToFirstToken = new Histogram({
    name: 'retnet_time_to_first_token_seconds',
    help: 'From a request being queued to its first generated token',
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly modelCall = new Histogram({
    name: 'retnet_model_call_seconds',
    help: 'Duration of one model call: a decode step of the batch, a prefill piece, or prompt scoring',
    labelNames: ['kind'] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });

  constructor(queued: () => number, active: () => number) {
    new Gauge({
      name: 'retnet_queue_length',
      help: 'Requests waiting for admission',
      registers: [this.registry],
      collect() {
        this.set(queued());
      },
    });
    new Gauge({
      name: 'retnet_active_sequences',
      help: 'Sequences being prefilled or decoded',
      registers: [this.registry],
      collect() {
        this.set(active());
      },
    });
  }
}
