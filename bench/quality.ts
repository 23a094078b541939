// `retnet bench quality [--quick]`: RetNet against the parameter-matched Transformer, trained by the project's trainer
// (src/train) on the Brown corpus with the same data, tokens, schedule and seed; validation perplexity of both on the
// whole validation split, and their loss curves on one chart (the paper's Figure 5 / Table 1 claim, at CPU scale).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readCurves, renderCurves } from '../src/cli/plot.js';
import { DEFAULT_CACHE } from '../src/cli/train.js';
import { saveModelDir } from '../src/io/model-dir.js';
import { type Arch, createModel } from '../src/models/registry.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { ShardReader, prepareData } from '../src/train/data.js';
import { evaluate } from '../src/train/evaluate.js';
import { type TrainConfig, train, trainConfig } from '../src/train/trainer.js';
import {
  type BenchRecord,
  type Column,
  cpuCounters,
  failOnFailedRecords,
  otherLoad,
  printTable,
  writeResults,
} from './lib.js';
import { markdownTable, sectionMarkdown, updateBenchmarksMd, writeChart } from './report.js';

interface Settings {
  preset: string;
  config: TrainConfig;
  /** Batches of the final validation (0: the whole split). */
  finalEvalBatches: number;
}

function settings(quick: boolean): Settings {
  const shared = { lr: 2e-3, seed: 0, evalBatches: 8 };
  return quick
    ? {
        preset: 'tiny',
        config: trainConfig({ ...shared, steps: 30, batch: 8, seqLen: 64, evalEvery: 10 }),
        finalEvalBatches: 16,
      }
    : {
        preset: 'small',
        config: trainConfig({ ...shared, steps: 300, batch: 16, seqLen: 128, evalEvery: 30 }),
        finalEvalBatches: 0,
      };
}

/** The goal: RetNet's validation perplexity at most 5% above the Transformer's. */
const GOAL_PPL_RATIO = 1.05;

const COLUMNS: Column[] = [
  { key: 'arch' },
  { key: 'parameters', digits: 0 },
  { key: 'tokens', header: 'training tokens', digits: 0 },
  { key: 'train_loss', header: 'final train loss', digits: 4 },
  { key: 'val_loss', header: 'val loss', digits: 4 },
  { key: 'val_ppl', header: 'val ppl', digits: 3 },
  { key: 'ppl_vs_transformer', header: 'ppl / Transformer', digits: 4 },
  { key: 'tokens_per_s', header: 'tokens/s', digits: 0 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export async function qualitySuite(values: { quick: boolean }): Promise<void> {
  const s = settings(values.quick);
  const c = s.config;
  const log = (line: string) => process.stderr.write(`quality: ${line}\n`);
  const data = prepareData({ source: 'brown', tokenizer: new ByteTokenizer(), cacheDir: DEFAULT_CACHE(), log });
  const work = mkdtempSync(join(tmpdir(), 'retnet-bench-quality-'));
  const records: BenchRecord[] = [];
  const runs: { arch: Arch; dir: string }[] = [];
  try {
    for (const arch of ['retnet', 'transformer'] as const) {
      const dir = join(work, arch);
      const model = createModel(arch, s.preset, { vocabSize: data.tokenizer.vocabSize }, { seed: c.seed });
      const base: BenchRecord = {
        model: s.preset,
        arch,
        form: arch === 'retnet' ? 'parallel' : 'flash attention',
        parameters: model.parameterCount(),
        length: c.seqLen,
        batch: c.batch,
        steps: c.steps,
        lr: c.lr,
        seed: c.seed,
      };
      log(`training ${arch} ${s.preset} (${model.parameterCount()} parameters) for ${c.steps} steps`);
      try {
        const before = cpuCounters();
        const r = await train({
          model,
          data,
          outDir: dir,
          config: c,
          writeModel: (d) => saveModelDir(d, model, data.tokenizer),
          progress: { write: () => true },
        });
        const load = otherLoad(before, cpuCounters());
        // The trainer validated on the first evalBatches batches; the figure of merit is the whole split (the
        // first finalEvalBatches batches in --quick runs).
        const reader = new ShardReader(data.dir, data.manifest, 'val');
        const full = (() => {
          try {
            return evaluate(
              (ids) => model.forward(ids),
              model,
              reader,
              c.batch,
              c.seqLen,
              s.finalEvalBatches > 0 ? s.finalEvalBatches : Infinity,
            );
          } finally {
            reader.close();
          }
        })();
        if (!full) throw new Error('the validation split is shorter than one sequence');
        records.push({
          ...base,
          status: 'ok',
          tokens: r.tokens,
          train_loss: r.trainLoss,
          val_loss: full.loss,
          val_ppl: full.ppl,
          val_tokens: full.tokens,
          elapsed_s: r.elapsedSec,
          tokens_per_s: r.tokens / r.elapsedSec,
          other_load: load,
        });
        runs.push({ arch, dir });
      } catch (e) {
        records.push({ ...base, status: 'failed', error: `${arch}: ${(e as Error).message}` });
      } finally {
        model.dispose();
      }
    }
    const [ret, tr] = [records.find((r) => r.arch === 'retnet'), records.find((r) => r.arch === 'transformer')];
    const findings: string[] = [];
    if (ret?.status === 'ok' && tr?.status === 'ok') {
      const ratio = (ret.val_ppl as number) / (tr.val_ppl as number);
      ret.ppl_vs_transformer = ratio;
      findings.push(
        `RetNet validation perplexity ${(ret.val_ppl as number).toFixed(3)} vs the Transformer's ` +
          `${(tr.val_ppl as number).toFixed(3)}: ratio ${ratio.toFixed(4)} (goal ≤ ${GOAL_PPL_RATIO}: ` +
          `${ratio <= GOAL_PPL_RATIO ? 'met' : 'NOT met'})`,
      );
    }
    printTable(`Quality on Brown (bytes), ${s.preset} preset, ${c.steps} steps`, records, COLUMNS);
    for (const f of findings) process.stdout.write(`${f}\n`);
    const { path, file } = writeResults('quality', records);
    let plot: { svg: string; png: string } | null = null;
    if (runs.length > 0) {
      const points = runs.flatMap((r) => readCurves(r.dir, r.arch));
      const { svg, png } = await renderCurves(
        points,
        `RetNet vs Transformer on Brown (${s.preset} preset, bytes, ${c.steps} steps of ${c.batch}×${c.seqLen} tokens)`,
      );
      plot = writeChart('quality', svg, png);
    }
    updateBenchmarksMd(
      'quality',
      sectionMarkdown({
        title: 'Quality: RetNet against a parameter-matched Transformer on Brown',
        intro:
          `Both models are the \`${s.preset}\` preset (the Transformer parameter-matched to RetNet), trained by ` +
          `\`src/train\` on the Brown corpus as bytes (vocabulary ${data.tokenizer.vocabSize}, 1% of it held out) ` +
          `with identical data order, tokens and schedule: ${c.steps} steps of ${c.batch} × ${c.seqLen} tokens, ` +
          `AdamW (lr ${c.lr}, ${c.warmupSteps} warmup steps, ${c.decay} decay to ${c.minLrRatio}× the peak, weight decay ` +
          `${c.weightDecay}, clip ${c.clip}), seed ${c.seed} for weights and data. Validation loss is the mean over ` +
          `${s.finalEvalBatches > 0 ? `the first ${s.finalEvalBatches} batches of` : 'the whole'} validation split after training; the curve shows validation on its first ` +
          `${c.evalBatches} batches every ${c.evalEvery} steps.`,
        file,
        table: markdownTable(records, COLUMNS),
        findings,
        plot,
      }),
    );
    process.stdout.write(
      `\nwrote ${path}${plot ? `, ${plot.png}, ${plot.svg}` : ''} and the quality section of BENCHMARKS.md\n`,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  failOnFailedRecords('quality', records);
}
