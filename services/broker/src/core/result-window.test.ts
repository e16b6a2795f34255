import { describe, expect, it } from "vitest";
import { ResultWindow } from "./result-window.js";
import type { ResultRecord } from "./types.js";

function makeResult(sequence: number): ResultRecord {
  return {
    sequence,
    jobId: sequence * 10,
    consumerId: "c",
    producerId: "p",
    data: BigInt(sequence),
    output: BigInt(sequence * 2),
    attempt: 1,
    processingMs: 1,
    queueWaitMs: 0,
    completedAtMs: 1_000 + sequence,
  };
}

function filled(size: number, count: number): ResultWindow {
  const window = new ResultWindow(size);
  for (let sequence = 1; sequence <= count; sequence++) {
    window.push(makeResult(sequence));
  }
  return window;
}

function sequencesOf(records: ResultRecord[] | undefined): number[] | undefined {
  return records?.map((record) => record.sequence);
}

describe("ResultWindow", () => {
  it("starts empty", () => {
    const window = new ResultWindow(3);

    expect(window.last).toBe(0);
    expect(window.first).toBe(1);
    expect(window.after(0, 10)).toEqual([]);
  });

  it("keeps every result below its size", () => {
    const window = filled(5, 3);

    expect(window.last).toBe(3);
    expect(window.first).toBe(1);
    expect(window.after(0, 10)).toEqual([makeResult(1), makeResult(2), makeResult(3)]);
  });

  it("drops the oldest results past its size", () => {
    const window = filled(3, 7);

    expect(window.last).toBe(7);
    expect(window.first).toBe(5);
    expect(sequencesOf(window.after(4, 10))).toEqual([5, 6, 7]);
  });

  it("after returns undefined once results are gone", () => {
    const window = filled(3, 7);

    expect(window.after(0, 10)).toBeUndefined();
    expect(window.after(3, 10)).toBeUndefined();
    expect(sequencesOf(window.after(4, 10))).toEqual([5, 6, 7]);
  });

  it("after honours the limit", () => {
    const window = filled(10, 6);

    expect(sequencesOf(window.after(1, 2))).toEqual([2, 3]);
    expect(sequencesOf(window.after(3, 2))).toEqual([4, 5]);
    expect(sequencesOf(window.after(5, 2))).toEqual([6]);
    expect(window.after(1, 0)).toEqual([]);
  });

  it("after the last result is empty", () => {
    const window = filled(3, 7);

    expect(window.after(7, 10)).toEqual([]);
    expect(window.after(100, 10)).toEqual([]);
  });

  it("paged reads resume without gaps", () => {
    const window = filled(50, 40);
    const read: number[] = [];

    for (let cursor = 0; cursor < window.last; ) {
      const page = window.after(cursor, 7);
      expect(page).toBeDefined();
      const sequences = sequencesOf(page) ?? [];
      expect(sequences.length).toBeGreaterThan(0);
      read.push(...sequences);
      cursor = sequences.at(-1) ?? window.last;
    }

    expect(read).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
  });

  it("a reader that falls behind loses its place", () => {
    const window = new ResultWindow(4);
    for (let sequence = 1; sequence <= 4; sequence++) {
      window.push(makeResult(sequence));
    }
    expect(sequencesOf(window.after(2, 1))).toEqual([3]);

    for (let sequence = 5; sequence <= 8; sequence++) {
      window.push(makeResult(sequence));
    }

    // The reader has seen up to 3, but 4 has left the window.
    expect(window.first).toBe(5);
    expect(window.after(3, 10)).toBeUndefined();
    expect(sequencesOf(window.after(4, 10))).toEqual([5, 6, 7, 8]);
  });
});
