// What a suite leaves besides its JSON: a chart (bench/results/<suite>.svg and .png, drawn by Vega through the same
// renderer as `retnet plot`) and its section of BENCHMARKS.md, which each run regenerates between the markers
// `<!-- bench:SUITE:start -->` and `<!-- bench:SUITE:end -->` (other sections are left as they are).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { Spec } from 'vega';

import { FONT_CONFIG, renderSpec } from '../src/cli/plot.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { type BenchRecord, type Column, type ResultFile, outputRoot } from './lib.js';

// ---------------------------------------------------------------------------------------------------------------------
// Charts

export interface Axis {
  field: string;
  title: string;
  /** Logarithmic (base 2) scale, for lengths and batch sizes that double. */
  log?: boolean;
}

export interface Panel {
  title: string;
  /** Bars over the categories of x.field (strings) instead of lines over numbers. */
  bars?: boolean;
  /** The records to draw; those without a finite number in x.field or y.field are left out. */
  records: readonly BenchRecord[];
  x: Axis;
  y: Axis;
  /** The name of the line a record belongs to (its colour, the same in every panel). */
  series: (r: BenchRecord) => string;
}

interface Point {
  x: number | string;
  y: number;
  series: string;
}

function points(p: Panel): Point[] {
  const out: Point[] = [];
  for (const r of p.records) {
    const [x, y] = [r[p.x.field], r[p.y.field]];
    const xOk = p.bars ? typeof x === 'string' : typeof x === 'number' && isFinite(x);
    if (xOk && typeof y === 'number' && isFinite(y)) out.push({ x: x as number | string, y, series: p.series(r) });
  }
  return out;
}

/** Marks of a bar panel: one bar per point, labelled by its category and series, coloured by series. */
function barMarks(name: string): object[] {
  return [
    {
      type: 'rect',
      from: { data: name },
      encode: {
        enter: {
          x: { scale: 'x', field: 'label' },
          width: { scale: 'x', band: 1 },
          y: { scale: 'y', field: 'y' },
          y2: { scale: 'y', value: 0 },
          fill: { scale: 'color', field: 'series' },
        },
      },
    },
    {
      type: 'text',
      from: { data: name },
      encode: {
        enter: {
          x: { scale: 'x', field: 'label', band: 0.5 },
          y: { scale: 'y', field: 'y', offset: -4 },
          text: { signal: "format(datum.y, '.3~s')" },
          align: { value: 'center' },
          fontSize: { value: 10 },
        },
      },
    },
  ];
}

const PANEL_WIDTH = 360;
const PANEL_HEIGHT = 240;

/** One line chart per panel, in a grid of `columns`, with one colour legend for all of them. */
export function panelsSpec(title: string, panels: readonly Panel[], columns = 2): Spec {
  const data = panels.map(points);
  const names = [...new Set(data.flat().map((p) => p.series))];
  const scale = (name: string, axis: Axis, data: string, field: 'x' | 'y', bars: boolean) =>
    field === 'x' && bars
      ? {
          name,
          type: 'band',
          domain: { data, field: 'label' },
          range: [0, PANEL_WIDTH],
          padding: 0.2,
        }
      : {
          name,
          type: axis.log ? 'log' : 'linear',
          ...(axis.log ? { base: 2 } : { zero: field === 'y' }),
          domain: { data, field },
          // Explicit pixel ranges: 'width' and 'height' would name the top-level view's size, not the panel's.
          range: field === 'x' ? [0, PANEL_WIDTH] : [PANEL_HEIGHT, 0],
          nice: !axis.log,
        };
  return {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    padding: 10,
    background: 'white',
    title: { text: title, fontSize: 15 },
    config: FONT_CONFIG,
    layout: { columns: Math.min(columns, panels.length), padding: 30 },
    scales: [{ name: 'color', type: 'ordinal', domain: names, range: 'category' }],
    legends: [{ stroke: 'color', fill: 'color', title: 'series', symbolType: 'stroke', orient: 'right' }],
    marks: panels.map((panel, i) => {
      const name = `panel${i}`;
      return {
        type: 'group',
        title: { text: panel.title, fontSize: 12 },
        encode: { update: { width: { value: PANEL_WIDTH }, height: { value: PANEL_HEIGHT } } },
        data: [
          {
            name,
            values: data[i]!.map((p) => (panel.bars ? { ...p, label: `${p.x}: ${p.series}` } : p)),
          },
        ],
        scales: [scale('x', panel.x, name, 'x', panel.bars === true), scale('y', panel.y, name, 'y', false)],
        axes: [
          // A log x axis is labelled at the measured values (lengths and batch sizes), not at every power.
          {
            orient: 'bottom',
            scale: 'x',
            title: panel.x.title,
            grid: true,
            gridOpacity: 0.3,
            ...(panel.x.log ? { values: [...new Set(data[i]!.map((p) => p.x as number))].sort((a, b) => a - b) } : {}),
          },
          {
            orient: 'left',
            scale: 'y',
            title: panel.y.title,
            grid: true,
            gridOpacity: 0.3,
            ...(panel.y.log ? { tickCount: 6, format: '~g' } : {}),
          },
        ],
        marks: panel.bars
          ? barMarks(name)
          : [
              {
                type: 'group',
                from: { facet: { name: `${name}_series`, data: name, groupby: 'series' } },
                marks: [
                  {
                    type: 'line',
                    from: { data: `${name}_series` },
                    sort: { field: 'datum.x' },
                    encode: {
                      enter: {
                        x: { scale: 'x', field: 'x' },
                        y: { scale: 'y', field: 'y' },
                        stroke: { scale: 'color', field: 'series' },
                        strokeWidth: { value: 2 },
                      },
                    },
                  },
                  {
                    type: 'symbol',
                    from: { data: `${name}_series` },
                    encode: {
                      enter: {
                        x: { scale: 'x', field: 'x' },
                        y: { scale: 'y', field: 'y' },
                        fill: { scale: 'color', field: 'series' },
                        size: { value: 25 },
                      },
                    },
                  },
                ],
              },
            ],
      };
    }),
  } as Spec;
}

/** Draws the panels to bench/results/<suite>.svg and .png; returns the paths relative to the package root. */
export async function writePlot(
  suite: string,
  title: string,
  panels: readonly Panel[],
  columns = 2,
): Promise<{ svg: string; png: string }> {
  const { svg, png } = await renderSpec(panelsSpec(title, panels, columns));
  return writeChart(suite, svg, png);
}

/** Writes a rendered chart as bench/results/<suite>.svg and .png; returns the paths relative to the package root. */
export function writeChart(suite: string, svg: string, png: Buffer): { svg: string; png: string } {
  const rel = { svg: `bench/results/${suite}.svg`, png: `bench/results/${suite}.png` };
  writeFileAtomic(join(outputRoot(), rel.svg), svg);
  writeFileAtomic(join(outputRoot(), rel.png), png);
  return rel;
}

// ---------------------------------------------------------------------------------------------------------------------
// BENCHMARKS.md

/** A Markdown table; numbers right-aligned with the column's digits, missing values as '-'. */
export function markdownTable(rows: readonly Record<string, unknown>[], columns: readonly Column[]): string {
  const cell = (v: unknown, c: Column): string =>
    v === undefined || v === null ? '-' : typeof v === 'number' ? v.toFixed(c.digits ?? 2) : String(v);
  const numeric = columns.map((c) => rows.some((r) => typeof r[c.key] === 'number'));
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [
    line(columns.map((c) => c.header ?? c.key)),
    line(numeric.map((n) => (n ? '--:' : '---'))),
    ...rows.map((r) => line(columns.map((c) => cell(r[c.key], c).replaceAll('|', '\\|')))),
  ].join('\n');
}

export const markers = (suite: string) => ({
  start: `<!-- bench:${suite}:start -->`,
  end: `<!-- bench:${suite}:end -->`,
});

/**
 * The document with the section of `suite` replaced by `body` (markers kept); a document without that section gets
 * it appended. Throws when the markers are unbalanced, rather than guess what to overwrite.
 */
export function replaceSection(doc: string, suite: string, body: string): string {
  const { start, end } = markers(suite);
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  const block = `${start}\n${body.trim()}\n${end}`;
  if (i < 0 && j < 0) return `${doc.trimEnd()}${doc.trim() === '' ? '' : '\n\n'}${block}\n`;
  if (i < 0 || j < i || doc.indexOf(start, i + 1) >= 0 || doc.indexOf(end, j + 1) >= 0)
    throw new Error(`BENCHMARKS.md: the markers of section '${suite}' are missing, repeated or out of order`);
  return doc.slice(0, i) + block + doc.slice(j + end.length);
}

export interface Section {
  title: string;
  /** Prose before the table: what was measured and how. */
  intro: string;
  file: ResultFile;
  table: string;
  /** Goals met or not, with the reasons; notes on the run. */
  findings: string[];
  plot: { svg: string; png: string } | null;
}

export const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

/** The Markdown of a section: title, provenance (machine, commit, command, load), intro, table, findings, chart. */
export function sectionMarkdown(s: Section): string {
  const m = s.file.machine;
  const load = s.file.records.map((r) => r.other_load).filter((v): v is number => typeof v === 'number' && isFinite(v));
  const loadText =
    load.length === 0
      ? 'not measured'
      : `${[...new Set([Math.min(...load), Math.max(...load)].map((x) => (x * 100).toFixed(0)))].join('-')}% ` +
        "of the machine's CPU";
  const lines = [
    `### ${s.title}`,
    '',
    `- command: \`${s.file.command}\``,
    `- commit: \`${s.file.commit ?? 'unknown'}\`, run ${s.file.createdAt}`,
    `- machine: ${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, Node ${m.node}, ${plural(m.threads, 'thread')}, ` +
      `OpenBLAS ${m.blas_core ?? '-'} (OPENBLAS_CORETYPE ${m.openblas_coretype ?? 'unset'})`,
    `- other processes' load during the measurements: ${loadText}`,
    '',
    s.intro.trim(),
    '',
    s.table,
    '',
    ...s.findings.map((f) => `- ${f}`),
  ];
  if (s.plot) lines.push('', `![${s.title}](${s.plot.png}) ([SVG](${s.plot.svg}))`);
  return lines.join('\n');
}

/** Regenerates the section of `suite` in BENCHMARKS.md (at the output root); returns the file's path. */
export function updateBenchmarksMd(suite: string, markdown: string): string {
  const path = join(outputRoot(), 'BENCHMARKS.md');
  const doc = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n';
  writeFileAtomic(path, replaceSection(doc, suite, markdown));
  return path;
}
