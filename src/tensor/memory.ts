// Exact accounting of the bytes held by tensor storage, per backend. Every storage allocation and release goes
// through a tracker, so `current` is the sum of live storage sizes at any instant and `peak` its maximum since the
// last reset. This is how the project measures the paper's memory claims (not sampled process RSS).

export class MemoryTracker {
  /** Bytes held by live storages. */
  current = 0;
  /** Highest `current` since construction or the last `resetPeak()`. */
  peak = 0;
  /** Number of live storages. */
  storages = 0;

  allocated(bytes: number): void {
    this.current += bytes;
    this.storages++;
    if (this.current > this.peak) this.peak = this.current;
  }

  released(bytes: number): void {
    this.current -= bytes;
    this.storages--;
  }

  /** Sets the peak to the current value, so that the next `peak` covers only what follows. */
  resetPeak(): void {
    this.peak = this.current;
  }
}
