// What the user watches: on a terminal, one progress line redrawn in place (step, bar, loss, learning rate, tokens/s,
// ETA); otherwise plain log lines every few steps, which read well in a CI log or a file.

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface StepInfo {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSec: number;
}

/** "1h02m", "3m05s", "12s". */
export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const s = Math.max(0, Math.round(sec));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

export class Progress {
  private readonly tty: boolean;
  private lastDraw = 0;
  private drawn = false;
  private started = performance.now();
  private firstStep = 0;

  constructor(
    private readonly out: ProgressStream,
    private readonly totalSteps: number,
    private readonly logEvery: number,
  ) {
    this.tty = out.isTTY === true;
  }

  /** Training starts (or resumes) at `step` now: the ETA counts from here. */
  begin(step: number): void {
    this.firstStep = step;
    this.started = performance.now();
  }

  /** Seconds left, from the average time per step of this run so far. */
  private eta(step: number): number {
    const done = step - this.firstStep;
    return done > 0 ? (((performance.now() - this.started) / 1000) * (this.totalSteps - step)) / done : Infinity;
  }

  update(info: StepInfo): void {
    const now = performance.now();
    const last = info.step === this.totalSteps;
    const numbers =
      `loss ${info.loss.toFixed(4)} lr ${info.lr.toExponential(2)} ` +
      `${Math.round(info.tokensPerSec)} tok/s ETA ${formatDuration(this.eta(info.step))}`;
    if (this.tty) {
      if (!last && now - this.lastDraw < 100) return;
      this.lastDraw = now;
      const width = this.out.columns ?? 100;
      const head = `step ${info.step}/${this.totalSteps} `;
      const barWidth = Math.max(10, Math.min(40, width - head.length - numbers.length - 4));
      const filled = Math.round((barWidth * info.step) / this.totalSteps);
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]`;
      this.out.write(`\r\x1b[K${`${head}${bar} ${numbers}`.slice(0, width - 1)}`);
      this.drawn = true;
    } else if (info.step % this.logEvery === 0 || last || info.step === this.firstStep + 1) {
      this.out.write(`step ${info.step}/${this.totalSteps} ${numbers} grad-norm ${info.gradNorm.toFixed(3)}\n`);
    }
  }

  /** A line of its own (validation results, checkpoints), below the progress line. */
  message(line: string): void {
    if (this.tty && this.drawn) this.out.write('\r\x1b[K');
    this.out.write(`${line}\n`);
    this.drawn = false;
  }

  done(): void {
    if (this.tty && this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
