/** How long a failed job waits before its next attempt. */
export interface RetryBackoff {
  /** Delay after the first failure, in ms. */
  minMs: number;
  /** Upper bound of the delay, in ms. */
  maxMs: number;
}

/**
 * Exponential backoff with jitter: the delay doubles with each failed attempt
 * up to maxMs, and a random factor in [0.5, 1] spreads out jobs that failed
 * together, so they do not all come back at once.
 */
export function retryDelayMs(backoff: RetryBackoff, failedAttempt: number, random: () => number): number {
  const exponent = Math.min(Math.max(failedAttempt - 1, 0), 30);
  const base = Math.min(backoff.maxMs, backoff.minMs * 2 ** exponent);
  return Math.round(base * (0.5 + random() / 2));
}
