import { describe, expect, it } from "vitest";
import { DeadLetters, type DeadLetterRecord } from "./dead-letters.js";
import type { JobRecord } from "./types.js";

function makeRecord(jobId: number, error = `error ${jobId}`): DeadLetterRecord {
  const job: JobRecord = {
    id: jobId,
    producerId: "p",
    createdAtMs: 1_000,
    attempt: 3,
    data: BigInt(jobId),
    payload: new Uint8Array(),
    attributes: {},
    sequence: jobId,
    leaseMs: 0,
  };
  return { job, error, consumerId: "c", deadLetteredAtMs: 2_000 + jobId };
}

function idsOf(records: DeadLetterRecord[]): number[] {
  return records.map((record) => record.job.id);
}

function filled(...jobIds: number[]): DeadLetters {
  const letters = new DeadLetters();
  for (const jobId of jobIds) {
    letters.add(makeRecord(jobId));
  }
  return letters;
}

describe("DeadLetters", () => {
  it("starts empty", () => {
    const letters = new DeadLetters();

    expect(letters.size).toBe(0);
    expect(letters.purged).toBe(0);
    expect(letters.list(0, 10)).toEqual([]);
    expect(letters.take("all")).toEqual([]);
  });

  it("list sorts by job id", () => {
    const letters = filled(5, 2, 9, 1);

    expect(letters.size).toBe(4);
    expect(idsOf(letters.list(0, 10))).toEqual([1, 2, 5, 9]);
    expect(letters.list(0, 1)).toEqual([makeRecord(1)]);
  });

  it("list pages after a job id", () => {
    const letters = filled(5, 2, 9, 1);

    expect(idsOf(letters.list(1, 2))).toEqual([2, 5]);
    expect(idsOf(letters.list(5, 2))).toEqual([9]);
    expect(idsOf(letters.list(3, 10))).toEqual([5, 9]);
    expect(letters.list(9, 10)).toEqual([]);
  });

  it("add replaces an entry with the same job id", () => {
    const letters = filled(1);

    letters.add(makeRecord(1, "second failure"));

    expect(letters.size).toBe(1);
    expect(letters.list(0, 10).map((record) => record.error)).toEqual(["second failure"]);
  });

  it("take removes the given ids", () => {
    const letters = filled(1, 2, 3, 4);

    const removed = letters.take([4, 2, 99, 2]);

    expect(idsOf(removed)).toEqual([2, 4]);
    expect(letters.size).toBe(2);
    expect(idsOf(letters.list(0, 10))).toEqual([1, 3]);
  });

  it("take all empties the set", () => {
    const letters = filled(3, 1, 2);

    const removed = letters.take("all");

    expect(idsOf(removed)).toEqual([1, 2, 3]);
    expect(letters.size).toBe(0);
    expect(letters.list(0, 10)).toEqual([]);
    expect(letters.purged).toBe(0);
  });
});
