/**
 * Writes one progress line per second to stderr while a phase runs, e.g.
 * "[submit mpmc] 3 s: 12000 calls, 4000/s, 0 errors". stdout stays free for the report.
 */
export class Progress {
  private readonly started = performance.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly label: string,
    private readonly describe: () => string,
  ) {
    this.timer = setInterval(() => this.print(), 1000);
    // A forgotten progress line must not keep the benchmark running.
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private print(): void {
    const seconds = Math.round((performance.now() - this.started) / 1000);
    process.stderr.write(`[${this.label}] ${seconds} s: ${this.describe()}\n`);
  }
}

/** Writes one line about the benchmark's phases to stderr. */
export function note(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Formats a rate with no decimals for the progress lines. */
export function perSecond(count: number, elapsedMs: number): string {
  return elapsedMs <= 0 ? "0/s" : `${Math.round((count * 1000) / elapsedMs)}/s`;
}
