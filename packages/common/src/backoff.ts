/**
 * Waits between reconnection attempts: the delay doubles from minMs up to
 * maxMs, and each wait is a random share of it from half to all, so clients
 * that lost the broker together do not all come back at the same moment.
 */
export class Backoff {
  private delayMs: number;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.delayMs = minMs;
  }

  /** Returns the next wait in ms, and doubles the delay for the one after. */
  next(): number {
    const wait = this.delayMs * (0.5 + this.random() / 2);
    this.delayMs = Math.min(this.maxMs, this.delayMs * 2);
    return wait;
  }

  /** Starts again from minMs, after an attempt that worked. */
  reset(): void {
    this.delayMs = this.minMs;
  }
}
