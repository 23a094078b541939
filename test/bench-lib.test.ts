// The benchmark harness's pure parts: statistics, the timing rule (on a fake clock), unit conversions, the table
// printer, the machine-load arithmetic and the shape of a result file.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  type Batch,
  type Machine,
  checkRecords,
  cpuModel,
  formatTable,
  gbPerS,
  gemmGflops,
  measure,
  measureEach,
  median,
  otherLoad,
  resultFile,
} from '../bench/lib.js';

describe('bench/lib statistics and timing', () => {
  it('median of odd and even counts, unsorted input left alone', () => {
    const xs = [5, 1, 4];
    assert.equal(median(xs), 4);
    assert.deepEqual(xs, [5, 1, 4]);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([7]), 7);
    assert.throws(() => median([]), /no values/);
  });

  it('measure: warm-up sizes the batch, sampling runs to the minimum time and count, per-call median and min', async () => {
    let now = 0;
    const costs = [3, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
    let call = 0;
    const fn = () => {
      now += costs[call++ % costs.length]!;
    };
    const t = await measure(fn, { warmup: 2, minTimeMs: 20, minSamples: 3, sampleTargetMs: 5 }, () => now);
    // Warm-up: 3 ms then 2 ms; the last (2 ms) sizes the batch to ceil(5 / 2) = 3 calls.
    assert.equal(t.callsPerSample, 3);
    // Samples: [2,2,1] = 5/3 ms, then 2 ms per call; 20 ms of sampling needs 4 samples (5 + 6 + 6 + 6 >= 20).
    assert.equal(t.samples, 4);
    assert.equal(t.msMin, 5 / 3);
    assert.equal(t.msMedian, 2);
  });

  it('measure: a call slower than the target gets one call per sample, and minSamples holds', async () => {
    let now = 0;
    const t = await measure(
      () => (now += 50),
      { warmup: 1, minTimeMs: 0, minSamples: 5, sampleTargetMs: 10 },
      () => now,
    );
    assert.equal(t.callsPerSample, 1);
    assert.equal(t.samples, 5);
    assert.equal(t.msMedian, 50);
  });

  it('measureEach without warm-up takes one call per sample from the start', async () => {
    const log: number[] = [];
    const [t] = await measureEach([async (calls) => (log.push(calls), 30 * calls)], {
      warmup: 0,
      minTimeMs: 0,
      minSamples: 3,
      sampleTargetMs: 100,
    });
    assert.deepEqual(log, [1, 1, 1]);
    assert.equal(t!.callsPerSample, 1);
    assert.equal(t!.msMedian, 30);
  });

  it('measureEach: batches take their samples in turn, each sized by its own warm-up', async () => {
    const log: string[] = [];
    const batch =
      (name: string, msPerCall: number): Batch =>
      async (calls) => {
        log.push(`${name}${calls}`);
        return calls * msPerCall;
      };
    const [a, b] = await measureEach([batch('a', 1), batch('b', 4)], {
      warmup: 1,
      minTimeMs: 0,
      minSamples: 2,
      sampleTargetMs: 8,
    });
    assert.deepEqual(log, ['a1', 'b1', 'a8', 'b2', 'a8', 'b2']);
    assert.equal(a!.callsPerSample, 8);
    assert.equal(b!.msMedian, 4);
    assert.equal(b!.samples, 2);
    log.length = 0;
    const turns = { warmup: 1, minTimeMs: 30, minSamples: 1, sampleTargetMs: 8, samplesPerTurn: 2 };
    await measureEach([batch('a', 1), batch('b', 4)], turns);
    // Turns of two samples; 8 + 8 + 8 + 8 = 32 ms of samples reach minTimeMs after the first round.
    assert.deepEqual(log, ['a1', 'b1', 'a8', 'a8', 'b2', 'b2']);
  });

  it('unit conversions', () => {
    assert.equal(gemmGflops(1000, 2), 1000); // 2e9 flops in 2 ms
    assert.equal(gbPerS(3e9, 1000), 3);
  });
});

describe('bench/lib machine description and load', () => {
  it('reads the model name from cpuinfo text', () => {
    assert.equal(cpuModel('processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t: fpu\n'), 'AMD EPYC 9R14');
    assert.equal(cpuModel('processor\t: 0\n'), 'unknown');
  });

  it('other load: machine busy time minus our own, over total time', () => {
    const before = { busy: 100, total: 1000, own: 40 };
    assert.equal(otherLoad(before, { busy: 300, total: 1400, own: 140 }), 0.25); // (200 - 100) / 400
    assert.equal(otherLoad(before, { busy: 200, total: 1400, own: 150 }), 0, 'clamped at 0');
    assert.equal(otherLoad(before, before), null, 'no time passed');
    assert.equal(otherLoad(null, before), null);
  });
});

describe('bench/lib tables and result files', () => {
  it('formats a table: numbers right-aligned with the given digits, text left-aligned, missing as -', () => {
    const text = formatTable(
      [
        { what: 'add', us: 1.2345, n: 64 },
        { what: 'matmul op', us: 12.5, n: null },
      ],
      [{ key: 'what' }, { key: 'us', header: 'µs', digits: 1 }, { key: 'n', digits: 0 }],
    );
    assert.equal(
      text,
      ['what         µs   n', '---------  ----  --', 'add         1.2  64', 'matmul op  12.5   -'].join('\n'),
    );
  });

  const machine: Machine = {
    cpu: 'test cpu',
    cores: 2,
    memory_gib: 24,
    node: 'v20.0.0',
    platform: 'linux-x64',
    openblas_coretype: null,
    omp_wait_policy: 'passive',
    blas_core: 'Haswell',
    blas_config: null,
    threads: 2,
  };

  it('a result file has the suite, machine, commit, command, time and the records', () => {
    const records = [{ kind: 'gemm', n: 256, gflops: 150.5, note: null, ok: true }];
    const file = resultFile('gemm', records, {
      machine,
      commit: 'abc',
      command: 'node bench/run.ts gemm',
      createdAt: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
    });
    assert.deepEqual(Object.keys(file), ['suite', 'machine', 'commit', 'command', 'createdAt', 'records']);
    assert.equal(file.createdAt, '2026-01-02T03:04:05.000Z');
    assert.deepEqual(JSON.parse(JSON.stringify(file)).records, records, 'survives JSON unchanged');
  });

  it('rejects records that JSON would mangle or that are not flat', () => {
    assert.throws(() => checkRecords('s', [{ gflops: NaN }]), /record 0 field 'gflops' must be a finite number/);
    assert.throws(() => checkRecords('s', [{ a: 1 }, { gb_per_s: Infinity }]), /record 1 field 'gb_per_s'/);
    const nested = [{ sizes: [1, 2] }] as unknown as Parameters<typeof checkRecords>[1];
    assert.throws(() => checkRecords('s', nested), /field 'sizes'/);
    assert.throws(() => checkRecords('s', [null] as unknown as Parameters<typeof checkRecords>[1]), /record 0/);
  });
});
