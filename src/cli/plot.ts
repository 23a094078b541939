// `retnet plot RUN_DIR [RUN_DIR...]`: training and validation loss against step for one or several runs on one chart
// (e.g. RetNet against the Transformer), drawn by Vega (a declarative charting library: scales, axes and legends are
// its job) to SVG, and rasterised to PNG by resvg.

import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';

import type { Spec } from 'vega';

import { FormatError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { importOptional } from '../optional.js';
import { UsageError, defineCommand, list, text } from './command.js';

export interface CurvePoint {
  run: string;
  split: 'train' | 'validation';
  step: number;
  loss: number;
}

/** The train and val records of a run's metrics.jsonl, labelled `label`. */
export function readCurves(runDir: string, label: string): CurvePoint[] {
  const path = join(runDir, 'metrics.jsonl');
  if (!existsSync(path)) throw new FormatError(`${runDir}: no metrics.jsonl (is it a training run directory?)`);
  const points: CurvePoint[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let r: { type?: string; step?: number; loss?: number };
      try {
        r = JSON.parse(line) as typeof r;
      } catch {
        throw new FormatError(`${path}:${i + 1}: not valid JSON`);
      }
      if ((r.type === 'train' || r.type === 'val') && Number.isFinite(r.step) && Number.isFinite(r.loss))
        points.push({ run: label, split: r.type === 'train' ? 'train' : 'validation', step: r.step!, loss: r.loss! });
    });
  if (points.length === 0) throw new FormatError(`${path}: no train or val records`);
  return points;
}

/** Vega config: one font (DejaVu Sans, which resvg finds on the system) for every text. */
export const FONT_CONFIG = {
  text: { font: 'DejaVu Sans' },
  axis: { labelFont: 'DejaVu Sans', titleFont: 'DejaVu Sans' },
  legend: { labelFont: 'DejaVu Sans', titleFont: 'DejaVu Sans' },
  title: { font: 'DejaVu Sans' },
};

/** The Vega specification of the chart: colour tells runs apart, dashes tell validation from training. */
export function curvesSpec(points: readonly CurvePoint[], title: string): Spec {
  const position = { x: { scale: 'x', field: 'step' }, y: { scale: 'y', field: 'loss' } };
  return {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: 720,
    height: 400,
    padding: 10,
    background: 'white',
    title: { text: title, fontSize: 15 },
    config: FONT_CONFIG,
    data: [{ name: 'points', values: points as unknown as object[] }],
    scales: [
      { name: 'x', type: 'linear', domain: { data: 'points', field: 'step' }, range: 'width', nice: true, zero: false },
      {
        name: 'y',
        type: 'linear',
        domain: { data: 'points', field: 'loss' },
        range: 'height',
        nice: true,
        zero: false,
      },
      { name: 'color', type: 'ordinal', domain: { data: 'points', field: 'run', sort: true }, range: 'category' },
      {
        name: 'dash',
        type: 'ordinal',
        domain: ['train', 'validation'],
        range: [
          [1, 0],
          [6, 3],
        ],
      },
    ],
    axes: [
      { orient: 'bottom', scale: 'x', title: 'step', grid: true, gridOpacity: 0.3 },
      { orient: 'left', scale: 'y', title: 'loss (nats per token)', grid: true, gridOpacity: 0.3 },
    ],
    legends: [
      { stroke: 'color', title: 'run', symbolType: 'stroke' },
      { strokeDash: 'dash', title: 'split', symbolType: 'stroke' },
    ],
    marks: [
      {
        type: 'group',
        from: { facet: { name: 'series', data: 'points', groupby: ['run', 'split'] } },
        marks: [
          {
            type: 'line',
            from: { data: 'series' },
            sort: { field: 'datum.step' },
            encode: {
              enter: {
                ...position,
                stroke: { scale: 'color', field: 'run' },
                strokeDash: { scale: 'dash', field: 'split' },
                strokeWidth: { signal: "datum.split === 'validation' ? 2.5 : 1.2" },
                strokeOpacity: { signal: "datum.split === 'validation' ? 1 : 0.75" },
              },
            },
          },
          {
            type: 'symbol',
            from: { data: 'series' },
            encode: {
              enter: {
                ...position,
                fill: { scale: 'color', field: 'run' },
                size: { value: 30 },
                opacity: { signal: "datum.split === 'validation' ? 1 : 0" },
              },
            },
          },
        ],
      },
    ],
  } as Spec;
}

/** Renders a Vega specification to an SVG string and PNG bytes (at twice the size, for sharp text). */
export async function renderSpec(spec: Spec): Promise<{ svg: string; png: Buffer }> {
  // Loaded here, not at startup (optional dependencies: every other command would pay for them).
  const vega = await importOptional<typeof import('vega')>('vega');
  const { Resvg } = await importOptional<typeof import('@resvg/resvg-js')>('@resvg/resvg-js');
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const png = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: 2 },
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
  })
    .render()
    .asPng();
  return { svg, png };
}

/** Renders the loss chart to an SVG string and PNG bytes. */
export function renderCurves(points: readonly CurvePoint[], title: string): Promise<{ svg: string; png: Buffer }> {
  return renderSpec(curvesSpec(points, title));
}

export const plotCommand = defineCommand({
  name: 'plot',
  summary: 'draw training and validation loss curves of one or more runs to SVG and PNG',
  flags: {
    out: text('the chart files, without extension (.svg and .png are added)', {
      placeholder: 'path',
      defaultHelp: 'RUN_DIR/curves of the first run',
      nonEmpty: true,
    }),
    labels: list('one name per run for the legend', (s) => s, { placeholder: 'a,b,...', maxItems: 64 }),
    title: text('the chart title', { default: 'Loss by step' }),
  },
  args: [{ name: '<run-dir...>', help: 'training run directories (holding metrics.jsonl)' }],
  async run({ values, positionals }) {
    const labels = values.labels ?? positionals.map((d) => basename(resolve(d)));
    if (labels.length !== positionals.length)
      throw new UsageError(`plot: --labels has ${labels.length} names for ${positionals.length} runs`);
    if (new Set(labels).size !== labels.length)
      throw new UsageError(`plot: the runs need distinct labels (got ${labels.join(', ')}); pass --labels`);
    const points = positionals.flatMap((dir, i) => readCurves(dir, labels[i]!));
    const out = resolve(values.out ?? join(positionals[0]!, 'curves'));
    const { svg, png } = await renderCurves(points, values.title);
    writeFileAtomic(`${out}.svg`, svg);
    writeFileAtomic(`${out}.png`, png);
    process.stdout.write(
      `${JSON.stringify({ svg: `${out}.svg`, png: `${out}.png`, runs: labels, points: points.length })}\n`,
    );
    return 0;
  },
});
