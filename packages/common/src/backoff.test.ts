import { describe, expect, it } from "vitest";
import { Backoff } from "./backoff.js";

describe("Backoff", () => {
  it("doubles up to the maximum", () => {
    const backoff = new Backoff(200, 1_000, () => 0.999_999);
    const waits = Array.from({ length: 5 }, () => Math.round(backoff.next()));
    expect(waits).toEqual([200, 400, 800, 1_000, 1_000]);
  });

  it("waits at least half the delay", () => {
    const backoff = new Backoff(200, 1_000, () => 0);
    expect(backoff.next()).toBe(100);
    expect(backoff.next()).toBe(200);
  });

  it("starts again after reset", () => {
    const backoff = new Backoff(200, 1_000, () => 0);
    backoff.next();
    backoff.next();
    backoff.reset();
    expect(backoff.next()).toBe(100);
  });
});
