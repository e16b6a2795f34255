import { describe, expect, it } from "vitest";
import { retryDelayMs, type RetryBackoff } from "./retry-backoff.js";

const backoff: RetryBackoff = { minMs: 100, maxMs: 1_000 };

describe("retryDelayMs", () => {
  it("doubles from minMs/2 with zero jitter", () => {
    const delays = [1, 2, 3, 4, 5, 6].map((attempt) => retryDelayMs(backoff, attempt, () => 0));

    expect(delays).toEqual([50, 100, 200, 400, 500, 500]);
  });

  it("nears the full delay with top jitter", () => {
    const delays = [1, 2, 3, 4, 5, 6].map((attempt) => retryDelayMs(backoff, attempt, () => 0.999_999));

    expect(delays).toEqual([100, 200, 400, 800, 1_000, 1_000]);
  });

  it("scales the delay by half the jitter", () => {
    expect(retryDelayMs(backoff, 1, () => 0.5)).toBe(75);
    expect(retryDelayMs(backoff, 3, () => 0.5)).toBe(300);
    expect(retryDelayMs(backoff, 3, () => 0.25)).toBe(250);
  });

  it("stays between half and all of the capped delay", () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      const cap = Math.min(backoff.maxMs, backoff.minMs * 2 ** (attempt - 1));
      for (const jitter of [0, 0.1, 0.37, 0.5, 0.81, 0.999_999]) {
        const delay = retryDelayMs(backoff, attempt, () => jitter);
        expect(delay, `attempt ${attempt}, jitter ${jitter}`).toBeGreaterThanOrEqual(cap / 2);
        expect(delay, `attempt ${attempt}, jitter ${jitter}`).toBeLessThanOrEqual(cap);
      }
    }
  });

  it("treats attempts below 1 as the first", () => {
    expect(retryDelayMs(backoff, 0, () => 0)).toBe(50);
    expect(retryDelayMs(backoff, -3, () => 0)).toBe(50);
  });

  it("caps huge attempt numbers at maxMs", () => {
    expect(retryDelayMs(backoff, 1_000, () => 0)).toBe(500);
    expect(retryDelayMs(backoff, Number.MAX_SAFE_INTEGER, () => 0.999_999)).toBe(1_000);
  });

  it("returns whole milliseconds", () => {
    const delay = retryDelayMs({ minMs: 3, maxMs: 1_000 }, 1, () => 0.3);

    // 3 * (0.5 + 0.15) = 1.95, rounded.
    expect(delay).toBe(2);
  });

  it("draws the jitter once per call", () => {
    let draws = 0;

    retryDelayMs(backoff, 2, () => {
      draws++;
      return 0.5;
    });

    expect(draws).toBe(1);
  });
});
