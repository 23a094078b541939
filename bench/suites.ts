// The benchmark suites, one module each, run by `retnet bench SUITE` (src/cli/bench.ts) and `npm run bench -- SUITE`
// (bench/run.ts). Each prints its tables, writes bench/results/<SUITE>.json (see bench/lib.ts) and, for the paper's
// claims, a chart and its section of BENCHMARKS.md (bench/report.ts); it throws when a measured point failed.

export interface Suite {
  summary: string;
  run(argv: string[]): Promise<void>;
}

// Suites load on demand: a run imports only the one it needs.
export const suites: Record<string, Suite> = {
  decode: {
    summary: 'decode latency, tokens/s and memory vs context length: RetNet recurrent vs Transformer KV cache',
    run: async (argv) => (await import('./decode.js')).decodeSuite(argv),
  },
  batch: {
    summary: 'decode latency and tokens/s vs batch size at a fixed context: RetNet vs Transformer',
    run: async (argv) => (await import('./batch.js')).batchSuite(argv),
  },
  train: {
    summary: 'training-step tokens/s, peak memory and MFU vs length: RetNet parallel/chunkwise vs Transformer',
    run: async (argv) => (await import('./train.js')).trainSuite(argv),
  },
  quality: {
    summary: 'validation perplexity of RetNet vs a parameter-matched Transformer trained alike on Brown, loss curves',
    run: async (argv) => (await import('./quality.js')).qualitySuite(argv),
  },
  peer: {
    summary: 'our RetNet vs the same RetNet in PyTorch on the CPU: training-step and decode tokens/s',
    run: async (argv) => (await import('./peer.js')).peerSuite(argv),
  },
  lowp: {
    summary: 'decode with f32/bf16/int8/q4 weights vs the memory bound and PyTorch [--models base,1.3B]',
    run: async (argv) => (await import('./lowp.js')).lowpSuite(argv),
  },
  data: {
    summary: 'tokenising Brown into shards (bytes, BPE 4096): cold and reused',
    run: async (argv) => (await import('./data.js')).dataSuite(argv),
  },
  generate: {
    summary: 'generate() prefill/decode tokens/s by batch; HTTP server tokens/s, time to first token, loop blocking',
    run: async (argv) => (await import('./generate.js')).generateSuite(argv),
  },
  attention: {
    summary: 'attention kernels: validation, naive vs flash fwd/fwd+bwd by length, KV-cache decode kernel',
    run: async (argv) => (await import('./attention.js')).attentionSuite(argv),
  },
  pretrained: {
    summary: 'a pretrained fla RetNet at 1.3B (random-weight stand-in unless --model DIR): load time, peak RSS, decode',
    run: async (argv) => (await import('./pretrained.js')).pretrainedSuite(argv),
  },
  gemm: {
    summary: 'GEMM GFLOP/s vs OpenBLAS from C, tiny-op overhead, copy bandwidth [--sizes 256,1024]',
    run: async (argv) => (await import('./gemm.js')).gemmSuite(argv),
  },
};

export function suitesUsage(command: string): string {
  const width = Math.max(...Object.keys(suites).map((n) => n.length));
  const lines = Object.entries(suites).map(([name, s]) => `  ${name.padEnd(width)}  ${s.summary}`);
  return `usage: ${command} SUITE [--quick] [flags]\nsuites:\n${lines.join('\n')}\n`;
}
