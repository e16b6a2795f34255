import { describe, expect, it } from "vitest";
import { Counters } from "./counters.js";
import type { ConsumerSnapshot, ProducerSnapshot } from "./types.js";

const offline = (): { connected: boolean; credit: number; inFlight: number } => ({
  connected: false,
  credit: 0,
  inFlight: 0,
});

/** Asserts that actual is within 1% of expected, the precision of a histogram with two significant digits. */
function expectWithinOnePercent(actual: number, expected: number): void {
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(expected * 0.01);
}

/** Builds an expected consumer snapshot: disconnected and all zero except the given figures. */
function consumerSnapshot(consumerId: string, figures: Partial<ConsumerSnapshot>): ConsumerSnapshot {
  return {
    consumerId,
    connected: false,
    credit: 0,
    inFlight: 0,
    processed: 0,
    totalProcessingMs: 0,
    rejectedResults: 0,
    failedAttempts: 0,
    ...figures,
  };
}

describe("Counters", () => {
  it("starts at zero", () => {
    const counters = new Counters();

    expect(counters.created).toBe(0);
    expect(counters.processed).toBe(0);
    expect(counters.redelivered).toBe(0);
    expect(counters.rejectedResults).toBe(0);
    expect(counters.lateResults).toBe(0);
    expect(counters.failedAttempts).toBe(0);
    expect(counters.duplicatesRefused).toBe(0);
    expect(counters.totalProcessingMs).toBe(0);
    expect(counters.lastSequence("p")).toBe(0);
    expect(counters.queueWait()).toEqual({ p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 });
    expect(counters.consumerSnapshots(offline)).toEqual([]);
    expect(counters.producerSnapshots()).toEqual([]);
  });

  it("counts created jobs per producer", () => {
    const counters = new Counters();
    counters.recordCreated("p1", 1);
    counters.recordCreated("p1", 2);
    counters.recordCreated("p2", 0);

    expect(counters.created).toBe(3);
    expect(counters.producerSnapshots()).toEqual([
      { producerId: "p1", created: 2, lastSequence: 2 },
      { producerId: "p2", created: 1, lastSequence: 0 },
    ] satisfies ProducerSnapshot[]);
  });

  it("keeps the highest producer sequence", () => {
    const counters = new Counters();
    counters.recordCreated("p", 5);
    counters.recordCreated("p", 3);
    counters.recordCreated("p", 0);

    expect(counters.producerSnapshots()).toEqual([{ producerId: "p", created: 3, lastSequence: 5 }]);
    expect(counters.lastSequence("p")).toBe(5);
  });

  it("lastSequence is kept per producer", () => {
    const counters = new Counters();
    counters.recordCreated("p1", 4);
    counters.recordCreated("p2", 9);
    counters.recordCreated("p3", 0);

    expect(counters.lastSequence("p1")).toBe(4);
    expect(counters.lastSequence("p2")).toBe(9);
    expect(counters.lastSequence("p3")).toBe(0);
    expect(counters.lastSequence("unknown")).toBe(0);
    // Reading a cursor does not list the producer.
    expect(counters.producerSnapshots().map((producer) => producer.producerId)).toEqual(["p1", "p2", "p3"]);
  });

  it("counts processed jobs per consumer", () => {
    const counters = new Counters();
    counters.recordProcessed("c1", 10, 1);
    counters.recordProcessed("c1", 30, 1);
    counters.recordProcessed("c2", 5, 1);

    expect(counters.processed).toBe(3);
    expect(counters.totalProcessingMs).toBe(45);
    expect(counters.consumerSnapshots(offline)).toEqual([
      consumerSnapshot("c1", { processed: 2, totalProcessingMs: 40 }),
      consumerSnapshot("c2", { processed: 1, totalProcessingMs: 5 }),
    ] satisfies ConsumerSnapshot[]);
  });

  it("counts rejected results per consumer", () => {
    const counters = new Counters();
    counters.recordRejected("c1");
    counters.recordRejected("c1");

    expect(counters.rejectedResults).toBe(2);
    expect(counters.processed).toBe(0);
    expect(counters.consumerSnapshots(offline)).toEqual([
      consumerSnapshot("c1", { rejectedResults: 2 }),
    ] satisfies ConsumerSnapshot[]);
  });

  it("counts failed attempts per consumer", () => {
    const counters = new Counters();
    counters.recordFailedAttempt("c1");
    counters.recordFailedAttempt("c1");
    counters.recordFailedAttempt("c2");

    expect(counters.failedAttempts).toBe(3);
    expect(counters.processed).toBe(0);
    expect(counters.rejectedResults).toBe(0);
    const failedByConsumer = counters.consumerSnapshots(offline).map((consumer) => [
      consumer.consumerId,
      consumer.failedAttempts,
    ]);
    expect(failedByConsumer).toEqual([
      ["c1", 2],
      ["c2", 1],
    ]);
  });

  it("touchConsumer lists a consumer with zero counts", () => {
    const counters = new Counters();
    counters.touchConsumer("c1");
    counters.touchConsumer("c1");

    expect(counters.consumerSnapshots(offline)).toEqual([
      consumerSnapshot("c1", {}),
    ] satisfies ConsumerSnapshot[]);
  });

  it("merges live figures into consumer snapshots", () => {
    const counters = new Counters();
    counters.touchConsumer("up");
    counters.touchConsumer("down");
    const requestedIds: string[] = [];

    const snapshots = counters.consumerSnapshots((consumerId) => {
      requestedIds.push(consumerId);
      return consumerId === "up" ? { connected: true, credit: 8, inFlight: 3 } : offline();
    });

    expect(requestedIds).toEqual(["up", "down"]);
    expect(snapshots).toEqual([
      consumerSnapshot("up", { connected: true, credit: 8, inFlight: 3 }),
      consumerSnapshot("down", {}),
    ] satisfies ConsumerSnapshot[]);
  });

  it("queueWait reports one recorded wait", () => {
    const counters = new Counters();
    counters.recordProcessed("c", 1, 250);

    const wait = counters.queueWait();

    expectWithinOnePercent(wait.p50Ms, 250);
    expectWithinOnePercent(wait.p90Ms, 250);
    expectWithinOnePercent(wait.p99Ms, 250);
    expectWithinOnePercent(wait.maxMs, 250);
  });

  it("queueWait reports percentiles of many waits", () => {
    const counters = new Counters();
    for (let waitMs = 1; waitMs <= 100; waitMs++) {
      counters.recordProcessed("c", 0, waitMs);
    }

    const wait = counters.queueWait();

    expectWithinOnePercent(wait.p50Ms, 50);
    expectWithinOnePercent(wait.p90Ms, 90);
    expectWithinOnePercent(wait.p99Ms, 99);
    expectWithinOnePercent(wait.maxMs, 100);
  });

  it("queueWait keeps sub-millisecond waits", () => {
    const counters = new Counters();
    counters.recordProcessed("c", 0, 0.5);

    expectWithinOnePercent(counters.queueWait().maxMs, 0.5);
  });

  it("queueWait records a negative wait as zero", () => {
    const counters = new Counters();
    counters.recordProcessed("c", 0, -20);

    expect(counters.queueWait()).toEqual({ p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 });
    expect(counters.processed).toBe(1);
  });
});
