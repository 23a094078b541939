// `retnet bench peer [--quick]`: our RetNet against the same RetNet written in PyTorch on the CPU (bench/peer_torch.py,
// run with Debian's python3-torch), same shapes, same thread count: tokens/s of a training step (parallel form,
// forward + cross-entropy + backward + AdamW) and of greedy recurrent decoding at batch 1, as ours / PyTorch.
//
// Both sides follow one protocol: one warm-up training step, then `steps` timed steps (mean); eight warm-up decode
// steps from an empty state, then `decode` timed steps (mean). PyTorch runs in its own process, so the two cannot
// take turns sample by sample; instead they take turns by rounds (ours, PyTorch, ours, PyTorch, ...) and each side
// reports its best round, so a burst of load from other processes does not decide the ratio.
//
// A decode step at batch 1 reads every weight once, so its bound is the weight bytes over the machine's streaming
// read rate, measured in each round right after our decode (bench/lib.ts readProbe, same threads): the best read
// over the best PyTorch rate is the most the decode ratio can reach on this machine. The probe reads as many bytes as
// the step's weights (100 MiB for `base`): a fixed 256 MiB probe read 16.6 GB/s on one thread of this stop's Intel
// Xeon while our decode streamed its 100 MiB at 21.1 (2026-12-03), as the caches there hold up to 64 MiB at ~30 GB/s.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import { backward } from '../src/autograd/tape.js';
import { packageRoot } from '../src/backend/cpu/load.js';
import { threadCount } from '../src/backend/index.js';
import { createModel } from '../src/models/registry.js';
import type { RetNetConfig } from '../src/models/retnet/config.js';
import type { RetNetModel } from '../src/models/retnet/model.js';
import { crossEntropy } from '../src/ops/nn.js';
import { tidy } from '../src/tensor/scope.js';
import { AdamW } from '../src/train/optimizer.js';
import {
  BenchFailure,
  type BenchRecord,
  type Column,
  type ReadProbe,
  cpuCounters,
  failOnFailedRecords,
  otherLoad,
  printTable,
  readProbe,
  writeResults,
} from './lib.js';
import { markdownTable, plural, sectionMarkdown, updateBenchmarksMd, writePlot } from './report.js';

/** Debian's interpreter, which has python3-torch (a pyenv python3 may come first on PATH, without torch). */
export const PYTHON = process.env.RETNET_PEER_PYTHON ?? '/usr/bin/python3';

export interface PeerShape {
  preset: string;
  vocab: number;
  seq: number;
  batch: number;
  steps: number;
  decode: number;
}

export interface PeerResult {
  train_tokens_per_s: number;
  decode_tokens_per_s: number;
}

/** The flags of bench/peer_torch.py for a RetNet config and the protocol's counts. */
export function peerArgs(c: RetNetConfig, s: PeerShape, threads: number): string[] {
  const args: Record<string, number> = {
    vocab: c.vocabSize,
    d: c.embedDim,
    dv: c.valueDim,
    heads: c.heads,
    ffn: c.ffnDim,
    layers: c.layers,
    seq: s.seq,
    batch: s.batch,
    steps: s.steps,
    decode: s.decode,
    threads,
  };
  return Object.entries(args).flatMap(([k, v]) => [`--${k}`, String(v)]);
}

/** Throws a BenchFailure saying how to install PyTorch when the interpreter cannot import it. */
export function checkTorch(python = PYTHON): string {
  try {
    return execFileSync(python, ['-c', 'import torch; print(torch.__version__)'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }).trim();
  } catch (e) {
    throw new BenchFailure(
      `peer: ${python} cannot import torch (${(e as Error).message.split('\n')[0]}); ` +
        'install Debian\'s PyTorch with "sudo apt-get install python3-torch" (or set RETNET_PEER_PYTHON)',
    );
  }
}

function runTorch(c: RetNetConfig, s: PeerShape, threads: number): PeerResult {
  const out = execFileSync(PYTHON, [join(packageRoot(), 'bench', 'peer_torch.py'), ...peerArgs(c, s, threads)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, OMP_NUM_THREADS: String(threads) },
  });
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as PeerResult;
  if (!(r.train_tokens_per_s > 0 && r.decode_tokens_per_s > 0))
    throw new BenchFailure(`peer: bench/peer_torch.py printed no rates: ${out.trim()}`);
  return r;
}

/** GB/s of the best of five reads of the probe with `threads` threads (the decode step's bound). */
function readRate(probe: ReadProbe, threads: number): number {
  const read = probe.batch(threads);
  let best = Infinity;
  for (let i = 0; i < 5; i++) best = Math.min(best, read(1));
  return probe.gbps(best);
}

/** Our side of the protocol on `model`. */
function runOurs(model: RetNetModel, s: PeerShape): PeerResult {
  const V = model.vocabSize;
  const be = model.backend;
  const data = Array.from({ length: s.batch * s.seq }, (_, i) => (i * 7919) % V);
  const ids = be.fromData(data, [s.batch, s.seq], 'int32');
  const targets = be.fromData(
    data.map((x) => (x * 31 + 7) % V),
    [s.batch, s.seq],
    'int32',
  );
  const optimizer = new AdamW(model.namedParameters());
  const step = () => {
    tidy(() => backward(crossEntropy(model.forward(ids, { form: 'parallel' }), targets)));
    optimizer.update(1e-4);
    model.zeroGrad();
  };
  try {
    step(); // warm-up
    let t0 = performance.now();
    for (let i = 0; i < s.steps; i++) step();
    const trainS = (performance.now() - t0) / 1000 / s.steps;

    const state = model.emptyState(1);
    let token = 1;
    const next = () => {
      const logits = model.step([token], state);
      const row = logits.data();
      logits.dispose();
      let best = 0;
      for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
      token = best;
    };
    for (let i = 0; i < 8; i++) next(); // warm-up
    t0 = performance.now();
    for (let i = 0; i < s.decode; i++) next();
    const decodeS = (performance.now() - t0) / 1000 / s.decode;
    state.dispose();
    return { train_tokens_per_s: (s.batch * s.seq) / trainS, decode_tokens_per_s: 1 / decodeS };
  } finally {
    optimizer.dispose();
    ids.dispose();
    targets.dispose();
  }
}

const GOAL_TRAIN = 1;
const GOAL_DECODE = 2;

const COLUMNS: Column[] = [
  { key: 'measure' },
  { key: 'ours_tokens_per_s', header: 'ours tokens/s', digits: 1 },
  { key: 'pytorch_tokens_per_s', header: 'PyTorch tokens/s', digits: 1 },
  { key: 'ours_vs_pytorch', header: 'ours / PyTorch', digits: 2 },
  { key: 'ours_rounds', header: 'ours, each round' },
  { key: 'pytorch_rounds', header: 'PyTorch, each round' },
  { key: 'read_gb_per_s', header: 'read GB/s', digits: 1 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export async function peerSuite(values: { quick: boolean }): Promise<void> {
  const quick = values.quick;
  const shape: PeerShape = quick
    ? { preset: 'small', vocab: 4096, seq: 128, batch: 2, steps: 2, decode: 16 }
    : { preset: 'base', vocab: 4096, seq: 512, batch: 4, steps: 3, decode: 64 };
  const rounds = 2;
  const torchVersion = checkTorch();
  const threads = threadCount();
  const model = createModel('retnet', shape.preset, { vocabSize: shape.vocab }, { seed: 1 }) as RetNetModel;
  const ours: PeerResult[] = [];
  const torch: PeerResult[] = [];
  const readGbps: number[] = [];
  const weightBytes = model.parameterCount() * 4; // float32: what a decode step at batch 1 reads
  const probe = readProbe(weightBytes, 'bench peer');
  const before = cpuCounters();
  try {
    for (let r = 0; r < rounds; r++) {
      process.stderr.write(`peer: round ${r + 1} of ${rounds}: ours\n`);
      ours.push(runOurs(model, shape));
      readGbps.push(readRate(probe, threads));
      process.stderr.write(`peer: round ${r + 1} of ${rounds}: PyTorch ${torchVersion}\n`);
      torch.push(runTorch(model.config, shape, threads));
    }
  } finally {
    model.dispose();
  }
  const load = otherLoad(before, cpuCounters());
  const c = model.config;
  const records: BenchRecord[] = (['train', 'decode'] as const).map((what) => {
    const key = what === 'train' ? 'train_tokens_per_s' : 'decode_tokens_per_s';
    const best = (xs: PeerResult[]) => Math.max(...xs.map((x) => x[key]));
    return {
      measure: what === 'train' ? `training step (B=${shape.batch}, T=${shape.seq})` : 'recurrent decode (B=1)',
      what,
      model: shape.preset,
      arch: 'retnet',
      form: what === 'train' ? 'parallel' : 'recurrent',
      parameters: model.parameterCount(),
      d: c.embedDim,
      dv: c.valueDim,
      heads: c.heads,
      ffn: c.ffnDim,
      layers: c.layers,
      vocab: c.vocabSize,
      length: what === 'train' ? shape.seq : null,
      batch: what === 'train' ? shape.batch : 1,
      threads,
      torch_version: torchVersion,
      status: 'ok',
      ours_tokens_per_s: best(ours),
      pytorch_tokens_per_s: best(torch),
      ours_vs_pytorch: best(ours) / best(torch),
      ours_rounds: ours.map((x) => x[key].toFixed(1)).join(', '),
      pytorch_rounds: torch.map((x) => x[key].toFixed(1)).join(', '),
      ...(what === 'decode' ? { read_gb_per_s: Math.max(...readGbps) } : {}),
      other_load: load,
    };
  });
  printTable(
    `Ours vs PyTorch ${torchVersion}, RetNet ${shape.preset}, ${threads} threads, best of ${rounds} rounds`,
    records,
    COLUMNS,
  );
  const [train, decode] = records as [BenchRecord, BenchRecord];
  const verdict = (r: BenchRecord, goal: number) =>
    `ours / PyTorch = ${(r.ours_vs_pytorch as number).toFixed(2)} (goal ≥ ${goal}: ${(r.ours_vs_pytorch as number) >= goal ? 'met' : 'NOT met'})`;
  // A decode step at batch 1 reads every weight once: the weight bytes times tokens/s is the memory bandwidth each
  // side reaches, against the machine's streaming read measured in the same rounds.
  const gbps = (tokensPerS: number) => (weightBytes * tokensPerS) / 1e9;
  const read = decode.read_gb_per_s as number;
  const pytorchGbps = gbps(decode.pytorch_tokens_per_s as number);
  const findings = [
    `training step: ${verdict(train, GOAL_TRAIN)}`,
    `decoding: ${verdict(decode, GOAL_DECODE)}; each token reads the ${(weightBytes / 2 ** 20).toFixed(0)} MiB ` +
      `of weights: ours streams them at ${gbps(decode.ours_tokens_per_s as number).toFixed(1)} GB/s, PyTorch at ` +
      `${pytorchGbps.toFixed(1)} GB/s, against a streaming read of ${read.toFixed(1)} GB/s measured in the same ` +
      `rounds; so on this machine no engine's decode exceeds ${(read / pytorchGbps).toFixed(2)}× PyTorch's`,
  ];
  for (const f of findings) process.stdout.write(`${f}\n`);
  const { path, file } = writeResults('peer', records);
  // One bar per side and measure: the best round's tokens/s.
  const bars = records.flatMap((r) => [
    { what: r.what, side: 'ours', tokens_per_s: r.ours_tokens_per_s },
    { what: r.what, side: 'PyTorch', tokens_per_s: r.pytorch_tokens_per_s },
  ]);
  const panel = (what: string, title: string) => ({
    title,
    bars: true,
    records: bars.filter((b) => b.what === what),
    x: { field: 'what', title: '' },
    y: { field: 'tokens_per_s', title: 'tokens/s' },
    series: (b: BenchRecord) => b.side as string,
  });
  const plot = await writePlot(
    'peer',
    `Ours vs PyTorch ${torchVersion} on the CPU (RetNet ${shape.preset}, ${plural(threads, 'thread')})`,
    [panel('train', `training step, B=${shape.batch} T=${shape.seq}`), panel('decode', 'recurrent decoding, B=1')],
  );
  updateBenchmarksMd(
    'peer',
    sectionMarkdown({
      title: 'Peer: ours against PyTorch on the CPU',
      intro:
        `The same RetNet (\`${shape.preset}\` preset: d = ${c.embedDim}, ${c.layers} layers, ${c.heads} heads, ` +
        `dv = ffn = ${c.valueDim}, vocabulary ${c.vocabSize}; ${(model.parameterCount() / 1e6).toFixed(1)}M ` +
        `parameters) in our engine and in PyTorch ${torchVersion} (Debian's python3-torch, bench/peer_torch.py: ` +
        `torchscale's math written directly in PyTorch), both float32 with ${plural(threads, 'thread')}. Training step: ` +
        `parallel form, batch ${shape.batch} × ${shape.seq} tokens, forward + cross-entropy + backward + AdamW, ` +
        `mean of ${shape.steps} steps after one warm-up. Decoding: greedy, batch 1, recurrent form, mean of ` +
        `${shape.decode} steps after 8 warm-up steps. The two sides alternate by rounds; each reports its best round.`,
      file,
      table: markdownTable(records, COLUMNS),
      findings,
      plot,
    }),
  );
  process.stdout.write(`\nwrote ${path}, ${plot.png}, ${plot.svg} and the peer section of BENCHMARKS.md\n`);
  failOnFailedRecords('peer', records);
}
