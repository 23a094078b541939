// `retnet bench batch [--quick]`: decode latency and throughput against the batch size at a fixed context length,
// RetNet's recurrent form against the Transformer's KV cache (the paper's Figure 6 claim that RetNet's latency stays
// nearly flat as the batch grows). The same measurement as the decode suite (bench/decode.ts: synthetic contexts,
// the two architectures in turns), swept over the batch instead of the length.

import { retnetPreset } from '../src/models/retnet/config.js';
import { DECODE_PRESET, DECODE_VOCAB, decodeModels, disposeModels, measureDecodePoints } from './decode.js';
import {
  type BenchRecord,
  type Column,
  type TimingOptions,
  failOnFailedRecords,
  printTable,
  suiteResults,
} from './lib.js';
import { markdownTable, sectionMarkdown, updateBenchmarksMd, writePlot } from './report.js';
import { matmulParameters } from './train.js';

/** An architecture's latency at the largest batch over its latency at the smallest: the measure of "nearly flat". */
export function latencyGrowth(
  records: readonly BenchRecord[],
  arch: string,
  key: 'ms_per_token' | 'ms_per_token_min' = 'ms_per_token',
): number | null {
  const rows = records
    .filter((r) => r.arch === arch && r.status === 'ok')
    .sort((a, b) => (a.batch as number) - (b.batch as number));
  if (rows.length < 2) return null;
  return (rows.at(-1)![key] as number) / (rows[0]![key] as number);
}

const COLUMNS: Column[] = [
  { key: 'arch' },
  { key: 'batch', digits: 0 },
  { key: 'ms_per_token', header: 'latency ms/token', digits: 2 },
  { key: 'ms_per_token_min', header: 'best ms/token', digits: 2 },
  { key: 'tokens_per_s', header: 'tokens/s', digits: 1 },
  { key: 'state_mib', header: 'state MiB', digits: 1 },
  { key: 'decode_memory_mib', header: 'decode memory MiB', digits: 1 },
  { key: 'slowdown_vs_retnet', header: 'slowdown vs RetNet', digits: 2 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export async function batchSuite(values: { quick: boolean; report: boolean }): Promise<void> {
  const quick = values.quick;
  const length = quick ? 512 : 2048;
  const batches = quick ? [1, 4, 16] : [1, 2, 4, 8, 16, 32, 64];
  const timing: Partial<TimingOptions> = quick
    ? { warmup: 2, minTimeMs: 1000, minSamples: 3, sampleTargetMs: 30 }
    : { warmup: 3, minTimeMs: 30000, minSamples: 9, sampleTargetMs: 60 };
  const { path, file } = await suiteResults('batch', { report: values.report, quick }, async () => {
    const models = decodeModels(DECODE_PRESET, DECODE_VOCAB);
    try {
      process.stderr.write(`batch: batches ${batches.join(', ')} at context ${length}, in turns\n`);
      const points = batches.map((batch) => ({ length, batch }));
      return await measureDecodePoints(models, DECODE_PRESET, points, timing);
    } finally {
      disposeModels(models);
    }
  });
  const records = file.records;
  printTable(`Decode per token against batch size, context ${length}, ${DECODE_PRESET} preset`, records, COLUMNS);
  const findings: string[] = [];
  for (const arch of ['retnet', 'transformer']) {
    const g = latencyGrowth(records, arch);
    const gBest = latencyGrowth(records, arch, 'ms_per_token_min');
    if (g !== null && gBest !== null)
      findings.push(
        `${arch}: latency per token at batch ${batches.at(-1)} is ${g.toFixed(2)}× its latency at batch ` +
          `${batches[0]} (${gBest.toFixed(2)}× from best times)`,
      );
  }
  // Why RetNet's latency grows on a CPU: a step multiplies B rows by every weight matrix, 2·N·B FLOPs, and reads the
  // weights once. At batch 1 the reading sets the time; as B grows the arithmetic does.
  const first = records.find((r) => r.arch === 'retnet' && r.batch === batches[0] && r.status === 'ok');
  const last = records.find((r) => r.arch === 'retnet' && r.batch === batches.at(-1) && r.status === 'ok');
  if (first && last) {
    const n = matmulParameters('retnet', retnetPreset(DECODE_PRESET, { vocabSize: DECODE_VOCAB }));
    const gflop = (b: BenchRecord) => (2 * n * (b.batch as number)) / 1e9;
    const s = (b: BenchRecord) => (b.ms_per_token_min as number) / 1000;
    findings.push(
      `why RetNet's latency is not flat on this CPU: a step reads the ${((first.weight_bytes as number) / 2 ** 20).toFixed(0)} ` +
        `MiB of weights once and does 2·N·B FLOPs of matrix products (N = ${(n / 1e6).toFixed(1)}M). At batch ` +
        `${first.batch} that is ${gflop(first).toFixed(2)} GFLOP in ${(s(first) * 1000).toFixed(1)} ms (best), set by ` +
        `reading the weights (${((first.weight_bytes as number) / s(first) / 1e9).toFixed(1)} GB/s); at batch ` +
        `${last.batch} it is ${gflop(last).toFixed(2)} GFLOP in ${(s(last) * 1000).toFixed(1)} ms, ` +
        `${(gflop(last) / s(last)).toFixed(0)} GFLOP/s: the arithmetic, which grows with the batch, sets the time. A ` +
        'GPU (the paper) has far more arithmetic per byte of memory bandwidth and stays bound by the reads to larger ' +
        'batches.',
    );
  }
  for (const f of findings) process.stdout.write(`${f}\n`);
  const ok = records.filter((r) => r.status === 'ok');
  const x = { field: 'batch', title: 'batch size', log: true };
  const series = (r: BenchRecord) => r.arch as string;
  const plot = await writePlot(
    'batch',
    `Decoding at a ${length}-token context against batch size (${DECODE_PRESET} preset, float32, CPU)`,
    [
      { title: 'latency per token (ms)', records: ok, x, y: { field: 'ms_per_token', title: 'ms', log: true }, series },
      {
        title: 'throughput (tokens/s)',
        records: ok,
        x,
        y: { field: 'tokens_per_s', title: 'tokens/s', log: true },
        series,
      },
    ],
  );
  updateBenchmarksMd(
    'batch',
    sectionMarkdown({
      title: 'Decoding: latency and throughput against batch size',
      intro:
        `The decode measurement above (same \`${DECODE_PRESET}\` models, synthetic contexts, architectures in turns) at a ` +
        `fixed context of ${length} tokens, for batch sizes ${batches.join(', ')}. Latency is the time of one decode ` +
        'step (every row gets its next token); throughput = batch / latency.',
      file,
      table: markdownTable(records, COLUMNS),
      findings,
      plot,
    }),
  );
  process.stdout.write(`\nwrote ${path}, ${plot.png}, ${plot.svg} and the batch section of BENCHMARKS.md\n`);
  failOnFailedRecords('batch', records);
}
