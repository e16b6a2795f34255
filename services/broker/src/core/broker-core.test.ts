import { MpmcError, type ErrorCode } from "@mpmc/common";
import { describe, expect, it } from "vitest";
import { BrokerCore, maxCredit, type BrokerCoreOptions } from "./broker-core.js";
import { ManualClock } from "./clock.js";
import type {
  AckInput,
  BrokerSnapshot,
  ConsumerSink,
  ConsumerSnapshot,
  JobInput,
  JobRecord,
  Lease,
  NackInput,
  OfferResult,
  ProducerSnapshot,
  Rejection,
  ResultRecord,
  ResultSink,
} from "./types.js";

const startMs = 1_000_000;

/** A delivered lease, copied when delivered because the core raises job.attempt in place on redelivery. */
interface Delivery {
  jobId: number;
  token: number;
  attempt: number;
  sessionId: number;
  deliveredAtMs: number;
  deadlineMs: number;
}

class RecordingConsumerSink implements ConsumerSink {
  /** One entry per deliver() call. */
  readonly batches: Delivery[][] = [];
  readonly events: string[] = [];
  endCalls = 0;

  deliver(leases: readonly Lease[]): void {
    this.batches.push(
      leases.map((lease) => ({
        jobId: lease.job.id,
        token: lease.token,
        attempt: lease.job.attempt,
        sessionId: lease.sessionId,
        deliveredAtMs: lease.deliveredAtMs,
        deadlineMs: lease.deadlineMs,
      })),
    );
    this.events.push("deliver");
  }

  end(): void {
    this.endCalls++;
    this.events.push("end");
  }

  get deliveries(): Delivery[] {
    return this.batches.flat();
  }

  jobIds(): number[] {
    return this.deliveries.map((delivery) => delivery.jobId);
  }

  /** Returns the newest delivery of a job to this sink, failing the test when there is none. */
  latest(jobId: number): Delivery {
    const found = this.deliveries.filter((delivery) => delivery.jobId === jobId).at(-1);
    if (found === undefined) {
      throw new Error(`job ${jobId} was never delivered to this sink`);
    }
    return found;
  }
}

class RecordingResultSink implements ResultSink {
  readonly batches: ResultRecord[][] = [];
  readonly finishes: BrokerSnapshot[] = [];
  readonly events: string[] = [];

  results(batch: readonly ResultRecord[]): void {
    this.batches.push([...batch]);
    this.events.push("results");
  }

  finish(stats: BrokerSnapshot): void {
    this.finishes.push(stats);
    this.events.push("finish");
  }

  get records(): ResultRecord[] {
    return this.batches.flat();
  }
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

function setup(
  capacity = 100,
  leaseMs = 1_000,
  options: Partial<BrokerCoreOptions> = {},
): { core: BrokerCore; clock: ManualClock } {
  const clock = new ManualClock(startMs);
  return { core: new BrokerCore({ capacity, leaseMs, clock, ...options }), clock };
}

function makeJob(sequence = 0, data = 0n, leaseMs = 0): JobInput {
  return { data, payload: new Uint8Array([1, 2, 3]), attributes: { kind: "test" }, sequence, leaseMs };
}

function makeJobs(count: number, firstSequence = 1): JobInput[] {
  return Array.from({ length: count }, (_, i) => makeJob(firstSequence + i, BigInt(firstSequence + i)));
}

function ackOf(delivery: Delivery, output = 0n, processingMs = 0): AckInput {
  return { jobId: delivery.jobId, token: delivery.token, output, processingMs };
}

function nackOf(delivery: Delivery, error: string, permanent: boolean): NackInput {
  return { jobId: delivery.jobId, token: delivery.token, error, permanent };
}

function expectMpmcError(action: () => unknown, code: ErrorCode): void {
  let thrown: unknown;
  try {
    action();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(MpmcError);
  expect((thrown as MpmcError).code).toBe(code);
}

/** Lets promise callbacks run. Needs no timers, so the tests stay independent of real time. */
async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await Promise.resolve();
  }
}

interface PromiseState {
  state: "pending" | "resolved" | "rejected";
  error?: unknown;
}

function track(promise: Promise<void>): PromiseState {
  const tracked: PromiseState = { state: "pending" };
  void promise.then(
    () => {
      tracked.state = "resolved";
    },
    (err: unknown) => {
      tracked.state = "rejected";
      tracked.error = err;
    },
  );
  return tracked;
}

/** Returns a seeded mulberry32 PRNG that yields floats in [0, 1), so a failing random sequence can be replayed. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("BrokerCore construction", () => {
  it.each([0, -1, 2.5, Number.NaN])("constructor rejects capacity %s", (capacity) => {
    expectMpmcError(() => new BrokerCore({ capacity, leaseMs: 1_000, clock: new ManualClock() }), "invalid_argument");
  });

  it.each([0, -5, Number.NaN])("constructor rejects leaseMs %s", (leaseMs) => {
    expectMpmcError(() => new BrokerCore({ capacity: 1, leaseMs, clock: new ManualClock() }), "invalid_argument");
  });

  it("starts empty and open", () => {
    const { core } = setup(5, 1_000);

    expect(core.capacity).toBe(5);
    expect(core.leaseMs).toBe(1_000);
    expect(core.closed).toBe(false);
    expect(core.drained).toBe(false);
    expect(core.queued).toBe(0);
    expect(core.inFlight).toBe(0);
    expect(core.room()).toBe(5);
    expect(core.snapshot()).toEqual({
      created: 0,
      processed: 0,
      inFlight: 0,
      queued: 0,
      capacity: 5,
      closed: false,
      drained: false,
      totalProcessingMs: 0,
      averageProcessingMs: 0,
      queueWait: { p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 },
      redelivered: 0,
      rejectedResults: 0,
      lateResults: 0,
      failedAttempts: 0,
      waitingRetry: 0,
      deadLettered: 0,
      deadLetters: 0,
      duplicatesRefused: 0,
      oldestJobAgeMs: 0,
      lastResultSequence: 0,
      firstKeptResultSequence: 1,
      consumersConnected: 0,
      subscribersConnected: 0,
      consumers: [],
      producers: [],
    } satisfies BrokerSnapshot);
  });
});

describe("BrokerCore.offer", () => {
  it("offer assigns ids, attempt and createdAtMs", () => {
    const { core, clock } = setup();
    const input = makeJob(7, 42n);

    const first = core.offer("p1", [input, makeJob(8), makeJob(9)]);

    expect(first.duplicates).toBe(0);
    expect(first.consumed).toBe(3);
    expect(first.accepted.map((job) => job.id)).toEqual([1, 2, 3]);
    expect(first.accepted.map((job) => job.attempt)).toEqual([1, 1, 1]);
    expect(first.accepted.map((job) => job.createdAtMs)).toEqual([startMs, startMs, startMs]);
    expect(first.accepted[0]).toEqual({
      data: 42n,
      payload: new Uint8Array([1, 2, 3]),
      attributes: { kind: "test" },
      sequence: 7,
      leaseMs: 0,
      id: 1,
      producerId: "p1",
      createdAtMs: startMs,
      attempt: 1,
    } satisfies JobRecord);

    clock.advance(250);
    const second = core.offer("p2", makeJobs(2));

    expect(second.consumed).toBe(2);
    expect(second.accepted.map((job) => job.id)).toEqual([4, 5]);
    expect(second.accepted.map((job) => job.producerId)).toEqual(["p2", "p2"]);
    expect(second.accepted.map((job) => job.createdAtMs)).toEqual([startMs + 250, startMs + 250]);
    expect(core.queued).toBe(5);
  });

  it("offer keeps ids unique across producers", () => {
    const { core } = setup(1_000);
    const ids: number[] = [];

    for (let round = 0; round < 20; round++) {
      for (const producerId of ["a", "b", "c"]) {
        // Each round starts past the previous round's sequence numbers, so no job is a duplicate.
        const result = core.offer(producerId, makeJobs(round % 4, round * 10 + 1));
        expect(result.duplicates).toBe(0);
        ids.push(...result.accepted.map((job) => job.id));
      }
    }

    expect(ids).toHaveLength(90);
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1));
  });

  it("offer accepts at most room() jobs", () => {
    const { core } = setup(3);

    const result = core.offer("p", makeJobs(5));

    expect(result.accepted.map((job) => job.sequence)).toEqual([1, 2, 3]);
    expect(result.consumed).toBe(3);
    expect(result.duplicates).toBe(0);
    expect(core.queued).toBe(3);
    expect(core.room()).toBe(0);
    expect(core.offer("p", makeJobs(1, 4))).toEqual({ accepted: [], duplicates: 0, consumed: 0 } satisfies OfferResult);
    expect(core.queued).toBe(3);
    expect(core.snapshot().created).toBe(3);
    expect(core.producerCursor("p")).toBe(3);
  });

  it("offer with no jobs accepts nothing", () => {
    const { core } = setup(3);

    expect(core.offer("p", [])).toEqual({ accepted: [], duplicates: 0, consumed: 0 } satisfies OfferResult);
    expect(core.snapshot().created).toBe(0);
    expect(core.snapshot().producers).toEqual([]);
  });

  it("offer never fills the queue past capacity", () => {
    const { core } = setup(7);
    const random = mulberry32(99);
    let nextSequence = 1;

    for (let i = 0; i < 200; i++) {
      const count = Math.floor(random() * 5);
      const room = core.room();
      const result = core.offer("p", makeJobs(count, nextSequence));
      expect(result.accepted).toHaveLength(Math.min(count, room));
      expect(result.consumed).toBe(result.accepted.length);
      expect(result.duplicates).toBe(0);
      expect(core.queued).toBeLessThanOrEqual(7);
      // The producer resends the jobs that found no room, under the same sequence numbers.
      nextSequence += result.consumed;
    }
    expect(core.queued).toBe(7);
  });

  it("offer counts room before dispatch", () => {
    const { core } = setup(2);
    const sink = new RecordingConsumerSink();
    core.attach("c", 3, sink);

    const result = core.offer("p", makeJobs(5));

    // Each accepted job is delivered at once, but room() is read before the offer, so only 2 fit.
    expect(result.accepted).toHaveLength(2);
    expect(result.consumed).toBe(2);
    expect(sink.jobIds()).toEqual([1, 2]);
    expect(core.queued).toBe(0);
    expect(core.room()).toBe(2);
  });

  it("offer after close throws failed_precondition", () => {
    const { core } = setup();
    core.close();

    expectMpmcError(() => core.offer("p", makeJobs(1)), "failed_precondition");
    expect(core.snapshot().created).toBe(0);
  });
});

describe("BrokerCore.waitForRoom", () => {
  it("waitForRoom resolves at once when there is room", async () => {
    const { core } = setup(2);
    core.offer("p", makeJobs(1));

    const wait = track(core.waitForRoom());
    await flushMicrotasks();

    expect(wait.state).toBe("resolved");
  });

  it("waitForRoom waits while the queue is full", async () => {
    const { core } = setup(2);
    core.offer("p", makeJobs(2));

    const wait = track(core.waitForRoom());
    await flushMicrotasks();

    expect(wait.state).toBe("pending");
  });

  it("waitForRoom resolves waiters in FIFO order", async () => {
    const { core } = setup(2);
    core.offer("p", makeJobs(2));
    const order: string[] = [];
    for (const name of ["a", "b", "c"]) {
      void core.waitForRoom().then(() => order.push(name));
    }
    await flushMicrotasks();
    expect(order).toEqual([]);

    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    await flushMicrotasks();
    expect(order).toEqual(["a"]);

    // Each woken producer refills the place, so the next job a consumer takes wakes exactly one more.
    core.offer("p", makeJobs(1, 3));
    core.acknowledge(session, [ackOf(sink.latest(1))]);
    await flushMicrotasks();
    expect(order).toEqual(["a", "b"]);

    core.offer("p", makeJobs(1, 4));
    core.acknowledge(session, [ackOf(sink.latest(2))]);
    await flushMicrotasks();
    expect(order).toEqual(["a", "b", "c"]);
  });

  it("waitForRoom wakes one waiter per free place", async () => {
    const { core } = setup(3);
    core.offer("p", makeJobs(3));
    const waits = [track(core.waitForRoom()), track(core.waitForRoom()), track(core.waitForRoom())];

    core.attach("c", 2, new RecordingConsumerSink());
    await flushMicrotasks();

    expect(waits.map((wait) => wait.state)).toEqual(["resolved", "resolved", "pending"]);
  });

  it("waitForRoom rejects on close", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const first = core.waitForRoom();
    const second = core.waitForRoom();

    core.close();

    await expect(first).rejects.toBeInstanceOf(MpmcError);
    await expect(first).rejects.toMatchObject({ code: "failed_precondition" });
    await expect(second).rejects.toMatchObject({ code: "failed_precondition" });
  });

  it("waitForRoom fails after close", async () => {
    const { core } = setup(1);
    core.close();

    // An async wrapper, because callers await the call and the contract is the failure, not its timing.
    const waitAfterClose = async (): Promise<void> => core.waitForRoom();

    await expect(waitAfterClose()).rejects.toMatchObject({ code: "failed_precondition" });
  });

  it("waitForRoom rejects with the abort reason", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const controller = new AbortController();
    const reason = new Error("producer stream cancelled");
    const wait = core.waitForRoom(controller.signal);

    controller.abort(reason);

    await expect(wait).rejects.toBe(reason);
  });

  it("waitForRoom rejects on a default abort", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const controller = new AbortController();
    const wait = core.waitForRoom(controller.signal);

    controller.abort();

    await expect(wait).rejects.toMatchObject({ name: "AbortError" });
  });

  it("waitForRoom maps non-Error reasons to cancelled", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const controller = new AbortController();
    const wait = core.waitForRoom(controller.signal);

    controller.abort("gone");

    await expect(wait).rejects.toBeInstanceOf(MpmcError);
    await expect(wait).rejects.toMatchObject({ code: "cancelled" });
  });

  it("waitForRoom rejects an already aborted signal", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const reason = new Error("already gone");

    await expect(core.waitForRoom(AbortSignal.abort(reason))).rejects.toBe(reason);
  });

  it("waitForRoom skips aborted waiters", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const controller = new AbortController();
    const aborted = track(core.waitForRoom(controller.signal));
    const live = track(core.waitForRoom());
    controller.abort(new Error("cancelled"));

    core.attach("c", 1, new RecordingConsumerSink());
    await flushMicrotasks();

    expect(aborted.state).toBe("rejected");
    expect(core.room()).toBe(1);
    expect(live.state).toBe("resolved");
  });

  it("waitForRoom ignores abort after resolving", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const controller = new AbortController();
    const wait = track(core.waitForRoom(controller.signal));

    core.attach("c", 1, new RecordingConsumerSink());
    controller.abort(new Error("too late"));
    await flushMicrotasks();

    expect(wait.state).toBe("resolved");
  });

  it("close skips aborted waiters", async () => {
    const { core } = setup(1);
    core.offer("p", makeJobs(1));
    const controller = new AbortController();
    const reason = new Error("cancelled first");
    const wait = track(core.waitForRoom(controller.signal));

    controller.abort(reason);
    core.close();
    await flushMicrotasks();

    expect(wait.state).toBe("rejected");
    expect(wait.error).toBe(reason);
  });
});

describe("BrokerCore.close", () => {
  it("close twice returns false then true", () => {
    const { core } = setup();

    expect(core.close()).toBe(false);
    expect(core.closed).toBe(true);
    expect(core.close()).toBe(true);
    expect(core.closed).toBe(true);
  });
});

describe("BrokerCore.attach", () => {
  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, maxCredit + 1])("attach rejects credit %s", (credit) => {
    const { core } = setup();

    expectMpmcError(() => core.attach("c", credit, new RecordingConsumerSink()), "invalid_argument");
    expect(core.snapshot().consumersConnected).toBe(0);
  });

  it("attach accepts credit 1 and maxCredit", () => {
    const { core } = setup();

    expect(() => core.attach("low", 1, new RecordingConsumerSink())).not.toThrow();
    expect(() => core.attach("high", maxCredit, new RecordingConsumerSink())).not.toThrow();
    expect(core.snapshot().consumersConnected).toBe(2);
  });

  it("attach rejects a connected consumerId", () => {
    const { core } = setup();
    core.attach("c", 1, new RecordingConsumerSink());

    expectMpmcError(() => core.attach("c", 1, new RecordingConsumerSink()), "already_exists");
    expect(core.snapshot().consumersConnected).toBe(1);
  });

  it("attach reuses a consumerId after detach", () => {
    const { core } = setup();
    const first = core.attach("c", 1, new RecordingConsumerSink());
    core.detach(first);

    const second = core.attach("c", 1, new RecordingConsumerSink());

    expect(second).not.toBe(first);
    expect(core.snapshot().consumersConnected).toBe(1);
  });
});

describe("BrokerCore dispatch", () => {
  it("attach delivers queued jobs at once", () => {
    const { core, clock } = setup(10, 500);
    core.offer("p", makeJobs(3));
    clock.advance(20);
    const sink = new RecordingConsumerSink();

    const session = core.attach("c", 5, sink);

    expect(sink.batches).toHaveLength(1);
    expect(sink.jobIds()).toEqual([1, 2, 3]);
    for (const delivery of sink.deliveries) {
      expect(delivery.sessionId).toBe(session);
      expect(delivery.attempt).toBe(1);
      expect(delivery.deliveredAtMs).toBe(startMs + 20);
      expect(delivery.deadlineMs).toBe(startMs + 520);
    }
    expect(new Set(sink.deliveries.map((delivery) => delivery.token)).size).toBe(3);
    expect(core.queued).toBe(0);
    expect(core.inFlight).toBe(3);
  });

  it("never delivers more than the credit", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);

    core.offer("p", makeJobs(5));

    expect(sink.jobIds()).toEqual([1, 2]);
    expect(core.inFlight).toBe(2);
    expect(core.queued).toBe(3);

    core.offer("p", makeJobs(1, 6));
    expect(sink.jobIds()).toEqual([1, 2]);

    core.acknowledge(session, [ackOf(sink.latest(1))]);
    expect(sink.jobIds()).toEqual([1, 2, 3]);
    expect(core.inFlight).toBe(2);
    expect(core.queued).toBe(3);
  });

  it("sends a job to the consumer holding the fewest", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    core.attach("a", 3, sinkA);
    core.offer("p", makeJobs(2));
    core.attach("b", 3, sinkB);

    core.offer("p", makeJobs(1, 3));
    expect(sinkA.jobIds()).toEqual([1, 2]);
    expect(sinkB.jobIds()).toEqual([3]);

    core.offer("p", makeJobs(1, 4));
    expect(sinkB.jobIds()).toEqual([3, 4]);

    // Both now hold 2, and a reached that load first.
    core.offer("p", makeJobs(1, 5));
    expect(sinkA.jobIds()).toEqual([1, 2, 5]);
    expect(sinkB.jobIds()).toEqual([3, 4]);
  });

  it("alternates between equally loaded consumers", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    core.attach("a", 2, sinkA);
    core.attach("b", 2, sinkB);

    core.offer("p", makeJobs(5));

    expect(sinkA.batches).toEqual([[expect.objectContaining({ jobId: 1 }), expect.objectContaining({ jobId: 3 })]]);
    expect(sinkB.batches).toEqual([[expect.objectContaining({ jobId: 2 }), expect.objectContaining({ jobId: 4 })]]);
    expect(core.queued).toBe(1);
  });

  it("sends the freed consumer the next job", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    const a = core.attach("a", 1, sinkA);
    core.attach("b", 1, sinkB);
    core.offer("p", makeJobs(3));

    core.acknowledge(a, [ackOf(sinkA.latest(1))]);

    expect(sinkA.jobIds()).toEqual([1, 3]);
    expect(sinkB.jobIds()).toEqual([2]);
  });

  it("gives queued work to a consumer attaching late", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    core.attach("a", 1, sinkA);
    core.offer("p", makeJobs(3));

    core.attach("b", 5, sinkB);

    expect(sinkA.jobIds()).toEqual([1]);
    expect(sinkB.batches).toHaveLength(1);
    expect(sinkB.jobIds()).toEqual([2, 3]);
    expect(core.queued).toBe(0);
  });

  it("setWritable pauses and resumes deliveries", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 5, sink);

    core.setWritable(session, false);
    core.offer("p", makeJobs(2));
    expect(sink.jobIds()).toEqual([]);
    expect(core.queued).toBe(2);

    core.setWritable(session, true);
    expect(sink.jobIds()).toEqual([1, 2]);
    expect(core.queued).toBe(0);
  });

  it("setWritable(false) sends work to other consumers", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    const a = core.attach("a", 5, sinkA);
    core.attach("b", 5, sinkB);

    core.setWritable(a, false);
    core.offer("p", makeJobs(3));

    expect(sinkA.jobIds()).toEqual([]);
    expect(sinkB.jobIds()).toEqual([1, 2, 3]);
  });

  it("setWritable on an unknown session is a no-op", () => {
    const { core } = setup();
    core.offer("p", makeJobs(1));

    expect(() => core.setWritable(999, true)).not.toThrow();
    expect(core.queued).toBe(1);
  });

  it("stopConsuming stops deliveries", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 5, sink);
    core.offer("p", makeJobs(1));

    core.stopConsuming(session);
    core.offer("p", makeJobs(2, 2));
    expect(sink.jobIds()).toEqual([1]);
    expect(core.queued).toBe(2);

    // The session still settles what it holds, but the freed credit brings no new job.
    expect(core.acknowledge(session, [ackOf(sink.latest(1))])).toEqual([]);
    core.setWritable(session, false);
    core.setWritable(session, true);
    expect(sink.jobIds()).toEqual([1]);
    expect(core.snapshot().processed).toBe(1);
    expect(core.queued).toBe(2);
  });

  it("stopConsuming sends work to other consumers", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    const a = core.attach("a", 5, sinkA);
    core.stopConsuming(a);

    core.attach("b", 5, sinkB);
    core.offer("p", makeJobs(2));

    expect(sinkA.jobIds()).toEqual([]);
    expect(sinkB.jobIds()).toEqual([1, 2]);
  });
});

describe("BrokerCore.acknowledge", () => {
  it("acknowledge emits a result record", () => {
    const { core, clock } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    core.offer("p1", [makeJob(1, 7n)]);
    clock.advance(25);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c1", 1, sink);
    clock.advance(40);

    const rejections = core.acknowledge(session, [ackOf(sink.latest(1), 49n, 12)]);

    expect(rejections).toEqual([]);
    expect(results.batches).toEqual([
      [
        {
          sequence: 1,
          jobId: 1,
          consumerId: "c1",
          producerId: "p1",
          data: 7n,
          output: 49n,
          attempt: 1,
          processingMs: 12,
          queueWaitMs: 25,
          completedAtMs: startMs + 65,
        },
      ],
    ] satisfies ResultRecord[][]);
    expect(core.inFlight).toBe(0);
    expect(core.snapshot().processed).toBe(1);
    expect(core.snapshot().totalProcessingMs).toBe(12);
  });

  it("acknowledge numbers results from 1", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 5, sink);
    core.offer("p", makeJobs(3));

    core.acknowledge(session, [ackOf(sink.latest(2)), ackOf(sink.latest(1))]);
    core.acknowledge(session, [ackOf(sink.latest(3))]);

    expect(results.batches.map((batch) => batch.map((record) => record.sequence))).toEqual([[1, 2], [3]]);
    expect(results.records.map((record) => record.jobId)).toEqual([2, 1, 3]);
  });

  it("acknowledge sends results to every subscriber", () => {
    const { core } = setup();
    const first = new RecordingResultSink();
    const second = new RecordingResultSink();
    const third = new RecordingResultSink();
    core.subscribe(first);
    core.subscribe(second);
    const unsubscribe = core.subscribe(third);
    unsubscribe();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 5, sink);
    core.offer("p", makeJobs(1));

    core.acknowledge(session, [ackOf(sink.latest(1), 3n)]);

    expect(first.records.map((record) => record.output)).toEqual([3n]);
    expect(second.records.map((record) => record.output)).toEqual([3n]);
    expect(third.records).toEqual([]);
  });

  it("acknowledge frees credit for the next job", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(2));
    expect(sink.jobIds()).toEqual([1]);

    core.acknowledge(session, [ackOf(sink.latest(1))]);

    expect(sink.jobIds()).toEqual([1, 2]);
    expect(core.queued).toBe(0);
    expect(core.inFlight).toBe(1);
  });

  it("acknowledge rejects an unknown job id", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const session = core.attach("c", 1, new RecordingConsumerSink());

    const rejections = core.acknowledge(session, [{ jobId: 999, token: 1, output: 0n, processingMs: 5 }]);

    expect(rejections).toEqual([{ jobId: 999, token: 1, reason: "job 999 is not in flight" }]);
    const stats = core.snapshot();
    expect(stats.rejectedResults).toBe(1);
    // No token has been issued yet, so the result cannot be a late one.
    expect(stats.lateResults).toBe(0);
    expect(stats.processed).toBe(0);
    expect(stats.totalProcessingMs).toBe(0);
    expect(stats.consumers[0]?.rejectedResults).toBe(1);
    expect(stats.consumers[0]?.processed).toBe(0);
    expect(results.batches).toEqual([]);
  });

  it("acknowledge rejects a wrong lease token", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const wrongToken = sink.latest(1).token + 1_000;

    const rejections = core.acknowledge(session, [{ jobId: 1, token: wrongToken, output: 0n, processingMs: 5 }]);

    expect(rejections).toEqual([
      { jobId: 1, token: wrongToken, reason: `lease_token ${wrongToken} is not the current delivery of job 1` },
    ] satisfies Rejection[]);
    expect(core.snapshot().rejectedResults).toBe(1);
    expect(core.snapshot().lateResults).toBe(0);
    expect(core.snapshot().processed).toBe(0);
    expect(core.inFlight).toBe(1);
    expect(results.batches).toEqual([]);
  });

  it("acknowledge rejects a job leased to another session", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 1, sinkA);
    const b = core.attach("b", 1, new RecordingConsumerSink());
    core.offer("p", makeJobs(1));
    const delivery = sinkA.latest(1);

    const rejections = core.acknowledge(b, [ackOf(delivery)]);

    expect(rejections).toEqual([
      { jobId: 1, token: delivery.token, reason: "job 1 is leased to another consumer" },
    ] satisfies Rejection[]);
    const stats = core.snapshot();
    expect(stats.rejectedResults).toBe(1);
    // The token is the current delivery's, so the result is misdirected, not late.
    expect(stats.lateResults).toBe(0);
    expect(stats.processed).toBe(0);
    expect(stats.consumers.find((consumer) => consumer.consumerId === "b")?.rejectedResults).toBe(1);
    expect(stats.consumers.find((consumer) => consumer.consumerId === "a")?.rejectedResults).toBe(0);

    // The rightful holder can still settle it.
    expect(core.acknowledge(a, [ackOf(delivery)])).toEqual([]);
    expect(core.snapshot().processed).toBe(1);
  });

  it("acknowledge counts a double ack once", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(2));

    expect(core.acknowledge(session, [ackOf(sink.latest(1), 0n, 10)])).toEqual([]);
    const again = core.acknowledge(session, [ackOf(sink.latest(1), 0n, 10)]);

    expect(again).toEqual([{ jobId: 1, token: sink.latest(1).token, reason: "job 1 is not in flight" }]);

    const twiceInOneCall = core.acknowledge(session, [ackOf(sink.latest(2)), ackOf(sink.latest(2))]);

    expect(twiceInOneCall).toHaveLength(1);
    const stats = core.snapshot();
    expect(stats.processed).toBe(2);
    expect(stats.totalProcessingMs).toBe(10);
    expect(stats.rejectedResults).toBe(2);
    expect(stats.lateResults).toBe(2);
    expect(results.records.map((record) => record.jobId)).toEqual([1, 2]);
  });

  it("acknowledge settles valid acks in a mixed batch", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(2));

    const rejections = core.acknowledge(session, [
      ackOf(sink.latest(1)),
      { jobId: 50, token: 1, output: 0n, processingMs: 0 },
      ackOf(sink.latest(2)),
    ]);

    expect(rejections.map((rejection) => rejection.jobId)).toEqual([50]);
    expect(results.batches).toHaveLength(1);
    expect(results.records.map((record) => record.jobId)).toEqual([1, 2]);
    expect(core.snapshot().processed).toBe(2);
    expect(core.snapshot().rejectedResults).toBe(1);
  });

  it("acknowledge from an unknown session is rejected", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));

    const rejections = core.acknowledge(999, [ackOf(sink.latest(1))]);

    expect(rejections).toHaveLength(1);
    expect(rejections[0]?.reason).toBe("job 1 is leased to another consumer");
    expect(core.snapshot().processed).toBe(0);
    expect(core.inFlight).toBe(1);
  });
});

describe("BrokerCore.release", () => {
  it("release requeues at the front with attempt unchanged", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 2, sinkA);
    core.offer("p", makeJobs(4));
    core.setWritable(a, false);

    // Released in reverse, to show the queue takes them back lowest id first.
    const rejections = core.release(a, [
      { jobId: 2, token: sinkA.latest(2).token },
      { jobId: 1, token: sinkA.latest(1).token },
    ]);

    expect(rejections).toEqual([]);
    expect(core.queued).toBe(4);
    expect(core.inFlight).toBe(0);

    const sinkB = new RecordingConsumerSink();
    core.attach("b", 10, sinkB);

    expect(sinkB.jobIds()).toEqual([1, 2, 3, 4]);
    expect(sinkB.deliveries.map((delivery) => delivery.attempt)).toEqual([1, 1, 1, 1]);
    expect(sinkB.latest(1).token).not.toBe(sinkA.latest(1).token);
    expect(core.snapshot().redelivered).toBe(0);
  });

  it("release lets the same consumer take the job again", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(2));
    const first = sink.latest(1);

    core.release(session, [{ jobId: 1, token: first.token }]);

    expect(sink.jobIds()).toEqual([1, 1]);
    expect(sink.latest(1).attempt).toBe(1);
    expect(sink.latest(1).token).not.toBe(first.token);
    expect(core.queued).toBe(1);
  });

  it("release rejects a ref it does not hold", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    core.attach("a", 1, sinkA);
    const b = core.attach("b", 1, new RecordingConsumerSink());
    core.offer("p", makeJobs(1));
    const token = sinkA.latest(1).token;

    const rejections = core.release(b, [
      { jobId: 1, token },
      { jobId: 77, token: 3 },
    ]);

    expect(rejections).toEqual([
      { jobId: 1, token, reason: "job 1 is leased to another consumer" },
      { jobId: 77, token: 3, reason: "job 77 is not in flight" },
    ] satisfies Rejection[]);
    expect(core.inFlight).toBe(1);
    expect(core.queued).toBe(0);
  });
});

describe("BrokerCore.detach", () => {
  it("requeues held jobs when a consumer detaches", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 3, sinkA);
    core.offer("p", makeJobs(5));

    core.detach(a);

    expect(core.inFlight).toBe(0);
    expect(core.queued).toBe(5);
    expect(core.snapshot().redelivered).toBe(3);

    const sinkB = new RecordingConsumerSink();
    core.attach("b", 10, sinkB);

    expect(sinkB.jobIds()).toEqual([1, 2, 3, 4, 5]);
    expect(sinkB.deliveries.map((delivery) => delivery.attempt)).toEqual([2, 2, 2, 1, 1]);
    expect(sinkA.jobIds()).toEqual([1, 2, 3]);
    expect(sinkA.endCalls).toBe(0);
  });

  it("detach hands held jobs to a ready consumer", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    const a = core.attach("a", 2, sinkA);
    core.offer("p", makeJobs(2));
    core.attach("b", 5, sinkB);

    core.detach(a);

    expect(sinkB.jobIds()).toEqual([1, 2]);
    expect(sinkB.deliveries.map((delivery) => delivery.attempt)).toEqual([2, 2]);
    expect(core.inFlight).toBe(2);
  });

  it("detach requeues lowest id first", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 3, sinkA);
    core.offer("p", makeJobs(3));
    // Releasing job 1 while a has free credit hands it straight back, so a's leases are ordered 2, 3, 1.
    core.release(a, [{ jobId: 1, token: sinkA.latest(1).token }]);
    expect(sinkA.jobIds()).toEqual([1, 2, 3, 1]);

    core.detach(a);
    const sinkB = new RecordingConsumerSink();
    core.attach("b", 3, sinkB);

    expect(sinkB.jobIds()).toEqual([1, 2, 3]);
  });

  it("detach leaves settled jobs settled", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(2));
    core.acknowledge(session, [ackOf(sink.latest(1))]);

    core.detach(session);

    expect(core.queued).toBe(1);
    expect(core.snapshot().processed).toBe(1);
    expect(core.snapshot().redelivered).toBe(1);
  });

  it("detach of an unknown session is a no-op", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(3));
    const before = core.snapshot();

    core.detach(999);

    expect(core.snapshot()).toEqual(before);

    core.detach(session);
    const afterFirst = core.snapshot();
    core.detach(session);

    expect(core.snapshot()).toEqual(afterFirst);
    expect(afterFirst.redelivered).toBe(2);
  });

  it("detach makes later acks from the session fail", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.detach(session);

    const rejections = core.acknowledge(session, [ackOf(sink.latest(1))]);

    expect(rejections).toEqual([{ jobId: 1, token: sink.latest(1).token, reason: "job 1 is not in flight" }]);
    expect(core.snapshot().processed).toBe(0);
    expect(core.snapshot().rejectedResults).toBe(1);
    expect(core.snapshot().lateResults).toBe(1);
    expect(core.queued).toBe(1);
  });
});

describe("BrokerCore lease expiry", () => {
  it("lease expiry requeues the job with attempt raised", () => {
    const { core, clock } = setup(10, 1_000);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.setWritable(session, false);

    clock.advance(999);
    expect(core.inFlight).toBe(1);
    expect(core.queued).toBe(0);

    clock.advance(1);
    expect(core.inFlight).toBe(0);
    expect(core.queued).toBe(1);
    expect(core.snapshot().redelivered).toBe(1);

    core.setWritable(session, true);
    expect(sink.jobIds()).toEqual([1, 1]);
    expect(sink.latest(1).attempt).toBe(2);
  });

  it("lease expiry rejects a late ack with the old token", () => {
    const { core, clock } = setup(10, 1_000);
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const first = sink.latest(1);

    clock.advance(1_000);
    const second = sink.latest(1);

    expect(sink.jobIds()).toEqual([1, 1]);
    expect(second.token).not.toBe(first.token);
    expect(second.attempt).toBe(2);
    expect(second.deliveredAtMs).toBe(startMs + 1_000);
    expect(second.deadlineMs).toBe(startMs + 2_000);

    const late = core.acknowledge(session, [ackOf(first, 1n)]);
    expect(late).toEqual([
      { jobId: 1, token: first.token, reason: `lease_token ${first.token} is not the current delivery of job 1` },
    ] satisfies Rejection[]);
    expect(core.snapshot().processed).toBe(0);
    expect(core.snapshot().rejectedResults).toBe(1);
    expect(core.snapshot().lateResults).toBe(1);

    expect(core.acknowledge(session, [ackOf(second, 2n)])).toEqual([]);
    expect(results.records).toEqual([
      expect.objectContaining({ jobId: 1, attempt: 2, output: 2n, queueWaitMs: 1_000 }),
    ]);
  });

  it("lease expiry with no consumer leaves the job queued", () => {
    const { core, clock } = setup(10, 1_000);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.stopConsuming(session);

    clock.advance(1_000);

    expect(core.queued).toBe(1);
    expect(core.acknowledge(session, [ackOf(sink.latest(1))])).toEqual([
      { jobId: 1, token: sink.latest(1).token, reason: "job 1 is not in flight" },
    ] satisfies Rejection[]);
    expect(core.snapshot().consumers[0]?.inFlight).toBe(0);
  });

  it("lease expiry repeats for each lost delivery", () => {
    const { core, clock } = setup(10, 1_000);
    const sink = new RecordingConsumerSink();
    core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));

    clock.advance(1_000);
    clock.advance(1_000);
    clock.advance(1_000);

    expect(sink.deliveries.map((delivery) => delivery.attempt)).toEqual([1, 2, 3, 4]);
    expect(new Set(sink.deliveries.map((delivery) => delivery.token)).size).toBe(4);
    expect(core.snapshot().redelivered).toBe(3);
  });

  it("lease expiry follows each lease's own deadline", () => {
    const { core, clock } = setup(10, 1_000);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 5, sink);
    core.offer("p", makeJobs(1));
    clock.advance(500);
    core.offer("p", makeJobs(1, 2));
    core.setWritable(session, false);

    clock.advance(500);
    expect(core.queued).toBe(1);
    expect(core.inFlight).toBe(1);

    clock.advance(499);
    expect(core.queued).toBe(1);

    clock.advance(1);
    expect(core.queued).toBe(2);
    expect(core.inFlight).toBe(0);
    expect(core.snapshot().redelivered).toBe(2);
  });

  it("lease expiry requeues lowest id first", () => {
    const { core, clock } = setup(10, 1_000);
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 2, sinkA);
    core.offer("p", makeJobs(3));
    core.setWritable(a, false);

    clock.advance(1_000);
    const sinkB = new RecordingConsumerSink();
    core.attach("b", 10, sinkB);

    expect(sinkB.jobIds()).toEqual([1, 2, 3]);
    expect(sinkB.deliveries.map((delivery) => delivery.attempt)).toEqual([2, 2, 1]);
  });

  it("lease expiry skips settled jobs", () => {
    const { core, clock } = setup(10, 1_000);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(2));
    clock.advance(10);
    core.acknowledge(session, [ackOf(sink.latest(1)), ackOf(sink.latest(2))]);

    clock.advance(5_000);

    const stats = core.snapshot();
    expect(stats.processed).toBe(2);
    expect(stats.redelivered).toBe(0);
    expect(stats.queued).toBe(0);
    expect(sink.jobIds()).toEqual([1, 2]);
  });
});

describe("BrokerCore drain", () => {
  it("drains at once when closed empty", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    core.attach("c", 1, sink);
    const results = new RecordingResultSink();
    core.subscribe(results);

    core.close();

    expect(core.drained).toBe(true);
    expect(sink.endCalls).toBe(1);
    expect(results.finishes).toHaveLength(1);
    expect(results.finishes[0]).toMatchObject({ drained: true, closed: true, created: 0, processed: 0 });
  });

  it("ends consumers after the last ack", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 1, sinkA);
    const idle = new RecordingConsumerSink();
    const stopped = core.attach("idle", 1, idle);
    core.stopConsuming(stopped);
    core.offer("p", makeJobs(2));

    expect(core.close()).toBe(false);
    expect(core.drained).toBe(false);
    expect(sinkA.endCalls).toBe(0);
    expect(idle.endCalls).toBe(0);
    expect(results.finishes).toEqual([]);

    // Settling job 1 delivers job 2, whose lease still delays the drain.
    core.acknowledge(a, [ackOf(sinkA.latest(1))]);
    expect(core.queued).toBe(0);
    expect(core.inFlight).toBe(1);
    expect(sinkA.endCalls).toBe(0);
    expect(idle.endCalls).toBe(0);
    expect(results.finishes).toEqual([]);

    core.acknowledge(a, [ackOf(sinkA.latest(2))]);
    expect(core.drained).toBe(true);
    expect(sinkA.endCalls).toBe(1);
    expect(idle.endCalls).toBe(1);
    expect(sinkA.events).toEqual(["deliver", "deliver", "end"]);
  });

  it("finishes subscribers once with final stats", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(2));
    core.close();

    core.acknowledge(session, [ackOf(sink.latest(1), 0n, 4), ackOf(sink.latest(2), 0n, 6)]);
    core.acknowledge(session, [ackOf(sink.latest(1))]);
    core.close();
    core.detach(session);

    expect(results.events).toEqual(["results", "finish"]);
    expect(results.finishes).toHaveLength(1);
    expect(results.finishes[0]).toMatchObject({
      created: 2,
      processed: 2,
      inFlight: 0,
      queued: 0,
      closed: true,
      drained: true,
      totalProcessingMs: 10,
      averageProcessingMs: 5,
    });
    expect(sink.endCalls).toBe(1);
  });

  it("does not finish an unsubscribed sink", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    const unsubscribe = core.subscribe(results);
    unsubscribe();

    core.close();

    expect(core.drained).toBe(true);
    expect(results.finishes).toEqual([]);
  });

  it("waits for queued jobs with no consumer", () => {
    const { core } = setup();
    core.offer("p", makeJobs(1));
    core.close();
    expect(core.drained).toBe(false);

    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    expect(sink.jobIds()).toEqual([1]);
    expect(sink.endCalls).toBe(0);

    core.acknowledge(session, [ackOf(sink.latest(1))]);
    expect(core.drained).toBe(true);
    expect(sink.endCalls).toBe(1);
  });

  it("waits for jobs a detached consumer returned", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 1, sinkA);
    core.offer("p", makeJobs(1));
    core.close();

    core.detach(a);
    expect(core.drained).toBe(false);
    expect(core.queued).toBe(1);
    expect(sinkA.endCalls).toBe(0);

    const sinkB = new RecordingConsumerSink();
    const b = core.attach("b", 1, sinkB);
    core.acknowledge(b, [ackOf(sinkB.latest(1))]);

    expect(core.drained).toBe(true);
    expect(sinkB.endCalls).toBe(1);
    expect(sinkA.endCalls).toBe(0);
  });

  it("waits for jobs whose lease expired", () => {
    const { core, clock } = setup(10, 1_000);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.close();

    clock.advance(1_000);
    expect(core.drained).toBe(false);
    expect(sink.endCalls).toBe(0);

    core.acknowledge(session, [ackOf(sink.latest(1))]);
    expect(core.drained).toBe(true);
    expect(sink.endCalls).toBe(1);
  });

  it("ends a consumer attached after drain", () => {
    const { core } = setup();
    core.close();
    const sink = new RecordingConsumerSink();

    core.attach("late", 3, sink);

    expect(sink.endCalls).toBe(1);
    expect(sink.batches).toEqual([]);
  });

  it("finishes a subscriber added after drain", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.close();
    core.acknowledge(session, [ackOf(sink.latest(1))]);
    const results = new RecordingResultSink();

    const unsubscribe = core.subscribe(results);

    expect(results.finishes).toHaveLength(1);
    expect(results.finishes[0]).toMatchObject({ drained: true, processed: 1, created: 1 });
    expect(results.batches).toEqual([]);
    expect(() => unsubscribe()).not.toThrow();
  });
});

describe("BrokerCore.snapshot", () => {
  it("snapshot reports consumer and producer figures", () => {
    const { core, clock } = setup(10, 1_000);
    core.offer("p1", [makeJob(1), makeJob(2), makeJob(3)]);
    core.offer("p2", [makeJob(10), makeJob(11)]);
    clock.advance(40);
    const sinkA = new RecordingConsumerSink();
    const sinkB = new RecordingConsumerSink();
    const a = core.attach("a", 2, sinkA);
    const b = core.attach("b", 1, sinkB);
    expect(sinkA.jobIds()).toEqual([1, 2]);
    expect(sinkB.jobIds()).toEqual([3]);

    core.acknowledge(a, [ackOf(sinkA.latest(1), 0n, 30)]);
    core.acknowledge(b, [ackOf(sinkB.latest(3), 0n, 50), { jobId: 1, token: 1, output: 0n, processingMs: 9 }]);
    expect(sinkA.jobIds()).toEqual([1, 2, 4]);
    expect(sinkB.jobIds()).toEqual([3, 5]);

    const stats = core.snapshot();
    expect(stats).toMatchObject({
      created: 5,
      processed: 2,
      inFlight: 3,
      queued: 0,
      capacity: 10,
      closed: false,
      drained: false,
      totalProcessingMs: 80,
      averageProcessingMs: 40,
      redelivered: 0,
      rejectedResults: 1,
      // Session b sent job 1's first token after job 1 had settled.
      lateResults: 1,
      failedAttempts: 0,
      waitingRetry: 0,
      deadLettered: 0,
      deadLetters: 0,
      duplicatesRefused: 0,
      oldestJobAgeMs: 0,
      lastResultSequence: 2,
      firstKeptResultSequence: 1,
      consumersConnected: 2,
      subscribersConnected: 0,
    });
    expect(stats.consumers).toEqual([
      consumerSnapshot("a", { connected: true, credit: 2, inFlight: 2, processed: 1, totalProcessingMs: 30 }),
      consumerSnapshot("b", {
        connected: true,
        credit: 1,
        inFlight: 1,
        processed: 1,
        totalProcessingMs: 50,
        rejectedResults: 1,
      }),
    ] satisfies ConsumerSnapshot[]);
    expect(stats.producers).toEqual([
      { producerId: "p1", created: 3, lastSequence: 3 },
      { producerId: "p2", created: 2, lastSequence: 11 },
    ] satisfies ProducerSnapshot[]);
    // Both settled jobs waited 40 ms, and the histogram keeps two significant digits.
    for (const value of Object.values(stats.queueWait)) {
      expect(Math.abs(value - 40)).toBeLessThanOrEqual(0.4);
    }

    core.detach(b);
    const afterDetach = core.snapshot();

    expect(afterDetach.consumers).toEqual([
      consumerSnapshot("a", { connected: true, credit: 2, inFlight: 2, processed: 1, totalProcessingMs: 30 }),
      consumerSnapshot("b", {
        connected: false,
        credit: 0,
        inFlight: 0,
        processed: 1,
        totalProcessingMs: 50,
        rejectedResults: 1,
      }),
    ] satisfies ConsumerSnapshot[]);
    expect(afterDetach.consumersConnected).toBe(1);
    expect(afterDetach.redelivered).toBe(1);
    expect(afterDetach.queued).toBe(1);
    expect(afterDetach.inFlight).toBe(2);
  });

  it("snapshot keeps a consumer's counts across reconnects", () => {
    const { core } = setup();
    const first = new RecordingConsumerSink();
    const session = core.attach("c", 1, first);
    core.offer("p", makeJobs(1));
    core.acknowledge(session, [ackOf(first.latest(1), 0n, 7)]);
    core.detach(session);

    core.attach("c", 4, new RecordingConsumerSink());

    expect(core.snapshot().consumers).toEqual([
      consumerSnapshot("c", { connected: true, credit: 4, processed: 1, totalProcessingMs: 7 }),
    ] satisfies ConsumerSnapshot[]);
  });
});

describe("BrokerCore invariants", () => {
  const maxAttempts = 4;
  const backoff = { minMs: 20, maxMs: 160 };
  const defaultLeaseMs = 100;

  interface LiveSession {
    id: number;
    consumerId: string;
    credit: number;
    sink: RecordingConsumerSink;
    /** Deliveries not yet acked, nacked or released by this test. Some may have expired or moved since. */
    open: Delivery[];
  }

  /** How often each kind of step changed the broker, so the test can fail when a path goes unexercised. */
  interface Coverage {
    nackRetried: number;
    nackDeadLettered: number;
    permanentNacks: number;
    extended: number;
    leasesReleased: number;
    requeued: number;
    purged: number;
    retriesReleased: number;
    leasesExpired: number;
    resends: number;
  }

  /** Maps each job a consumer has in flight to its current lease token. */
  function currentTokens(core: BrokerCore, consumerId: string): Map<number, number> {
    return new Map(core.listLeases({ consumerId }, maxCredit).map((lease) => [lease.jobId, lease.token]));
  }

  function expectConsistent(core: BrokerCore, step: number): BrokerSnapshot {
    const stats = core.snapshot();
    const context = `step ${step}`;
    expect(stats.created, context).toBe(
      stats.queued + stats.waitingRetry + stats.inFlight + stats.processed + stats.deadLettered,
    );
    expect(stats.deadLetters, context).toBeLessThanOrEqual(stats.deadLettered);
    expect(stats.lateResults, context).toBeLessThanOrEqual(stats.rejectedResults);
    expect(core.gauges(), context).toEqual({
      queued: stats.queued,
      inFlight: stats.inFlight,
      waitingRetry: stats.waitingRetry,
      oldestJobAgeMs: stats.oldestJobAgeMs,
      created: stats.created,
      processed: stats.processed,
      deadLettered: stats.deadLettered,
      consumersConnected: stats.consumersConnected,
      closed: stats.closed,
      drained: stats.drained,
    });
    expect(core.listLeases({}, maxCredit), context).toHaveLength(stats.inFlight);
    expect(core.listDeadLetters(0, maxCredit).total, context).toBe(stats.deadLetters);

    // Collected first and asserted once, because thousands of expect() calls per step make the test slow.
    const negative: string[] = [];
    const overCredit: string[] = [];
    const checkFields = (owner: string, record: object): void => {
      for (const [name, value] of Object.entries(record)) {
        if (typeof value === "number" && !(value >= 0)) {
          negative.push(`${owner}.${name} = ${value}`);
        }
      }
    };
    checkFields("stats", stats);
    checkFields("queueWait", stats.queueWait);
    let heldByConnected = 0;
    for (const consumer of stats.consumers) {
      checkFields(consumer.consumerId, consumer);
      if (consumer.inFlight > consumer.credit) {
        overCredit.push(`${consumer.consumerId} holds ${consumer.inFlight} with credit ${consumer.credit}`);
      }
      heldByConnected += consumer.inFlight;
    }
    for (const producer of stats.producers) {
      checkFields(producer.producerId, producer);
    }
    expect(negative, context).toEqual([]);
    expect(overCredit, context).toEqual([]);
    expect(heldByConnected, context).toBe(stats.inFlight);
    expect(stats.consumersConnected, context).toBe(stats.consumers.filter((consumer) => consumer.connected).length);
    return stats;
  }

  function expectMonotonic(previous: BrokerSnapshot, stats: BrokerSnapshot, step: number): void {
    const context = `step ${step}`;
    expect(stats.created, context).toBeGreaterThanOrEqual(previous.created);
    expect(stats.processed, context).toBeGreaterThanOrEqual(previous.processed);
    expect(stats.redelivered, context).toBeGreaterThanOrEqual(previous.redelivered);
    expect(stats.rejectedResults, context).toBeGreaterThanOrEqual(previous.rejectedResults);
    expect(stats.lateResults, context).toBeGreaterThanOrEqual(previous.lateResults);
    expect(stats.failedAttempts, context).toBeGreaterThanOrEqual(previous.failedAttempts);
    expect(stats.duplicatesRefused, context).toBeGreaterThanOrEqual(previous.duplicatesRefused);
    expect(stats.totalProcessingMs, context).toBeGreaterThanOrEqual(previous.totalProcessingMs);
    expect(stats.lastResultSequence, context).toBeGreaterThanOrEqual(previous.lastResultSequence);
  }

  function runRandomSequence(seed: number, steps: number): void {
    const random = mulberry32(seed);
    const capacity = 8;
    const { core, clock } = setup(capacity, defaultLeaseMs, {
      maxAttempts,
      retryBackoff: backoff,
      resultWindow: 64,
      // A second generator, so the jitter draws do not shift the sequence of operations.
      random: mulberry32(seed + 1),
    });
    const results = new RecordingResultSink();
    core.subscribe(results);

    const sessions: LiveSession[] = [];
    let consumerCount = 0;
    const randomInt = (bound: number): number => Math.floor(random() * bound);
    const sessionOf = (): LiveSession | undefined => sessions[randomInt(sessions.length)];
    /** Each job's own lease length, 0 for the broker's default. */
    const leaseMsOf = new Map<number, number>();
    const purgedIds = new Set<number>();

    const coverage: Coverage = {
      nackRetried: 0,
      nackDeadLettered: 0,
      permanentNacks: 0,
      extended: 0,
      leasesReleased: 0,
      requeued: 0,
      purged: 0,
      retriesReleased: 0,
      leasesExpired: 0,
      resends: 0,
    };

    /** How many of each session's delivery batches are already in its open list. */
    const seen = new Map<LiveSession, number>();
    const collect = (session: LiveSession): void => {
      const batches = session.sink.batches;
      session.open.push(...batches.slice(seen.get(session) ?? 0).flat());
      seen.set(session, batches.length);
    };

    let previous = core.snapshot();
    for (let step = 0; step < steps; step++) {
      for (const session of sessions) {
        collect(session);
      }
      const roll = random();

      if (roll < 0.2) {
        const producerId = `p${randomInt(3)}`;
        const cursor = core.producerCursor(producerId);
        const before = core.snapshot();
        if (cursor > 0 && random() < 0.15) {
          // A producer resends jobs after a broken stream, so every sequence at or below the cursor is a duplicate.
          const first = Math.max(1, cursor - randomInt(4));
          const count = cursor - first + 1;
          const result = core.offer(producerId, makeJobs(count, first));
          expect(result).toEqual({ accepted: [], duplicates: count, consumed: count } satisfies OfferResult);
          expect(core.snapshot().duplicatesRefused - before.duplicatesRefused).toBe(count);
          expect(core.producerCursor(producerId)).toBe(cursor);
          coverage.resends++;
        } else {
          const count = randomInt(6);
          const queuedBefore = core.queued;
          const jobs = makeJobs(count, step * 10).map((job) => ({
            ...job,
            leaseMs: random() < 0.3 ? 40 + randomInt(120) : 0,
          }));
          const result = core.offer(producerId, jobs);
          expect(result.accepted.length).toBe(Math.min(count, Math.max(0, capacity - queuedBefore)));
          expect(result.duplicates).toBe(0);
          expect(result.consumed).toBe(result.accepted.length);
          expect(core.queued).toBeLessThanOrEqual(Math.max(capacity, queuedBefore));
          for (const job of result.accepted) {
            leaseMsOf.set(job.id, job.leaseMs);
          }
        }
      } else if (roll < 0.26) {
        if (sessions.length < 4) {
          const sink = new RecordingConsumerSink();
          const consumerId = `c${consumerCount++}`;
          const credit = 1 + randomInt(4);
          const id = core.attach(consumerId, credit, sink);
          sessions.push({ id, consumerId, credit, sink, open: [] });
        }
      } else if (roll < 0.29) {
        const session = sessionOf();
        if (session !== undefined) {
          const inFlight = core.listLeases({ consumerId: session.consumerId }, maxCredit);
          const lastAttempts = inFlight.filter((lease) => lease.attempt >= maxAttempts).length;
          const before = core.snapshot();
          expect(core.detach(session.id)).toBe(inFlight.length);
          sessions.splice(sessions.indexOf(session), 1);
          const after = core.snapshot();
          expect(after.redelivered - before.redelivered).toBe(inFlight.length - lastAttempts);
          expect(after.deadLettered - before.deadLettered).toBe(lastAttempts);
        }
      } else if (roll < 0.47) {
        const session = sessionOf();
        if (session !== undefined && session.open.length > 0) {
          const count = 1 + randomInt(Math.min(3, session.open.length));
          const chosen = session.open.splice(-count, count);
          const tokens = currentTokens(core, session.consumerId);
          const current = chosen.filter((delivery) => tokens.get(delivery.jobId) === delivery.token);
          const acks = chosen.map((delivery) => ackOf(delivery, BigInt(delivery.jobId), randomInt(20)));
          const before = core.snapshot();
          const rejections = core.acknowledge(session.id, acks);
          const after = core.snapshot();
          expect(rejections).toHaveLength(chosen.length - current.length);
          expect(after.processed - before.processed).toBe(current.length);
          expect(after.rejectedResults - before.rejectedResults).toBe(rejections.length);
          // Every token here was issued by the broker, so each rejected result is late.
          expect(after.lateResults - before.lateResults).toBe(rejections.length);
          for (const rejection of rejections) {
            expect(rejection.reason).not.toBe("");
          }
        }
      } else if (roll < 0.5) {
        const session = sessionOf();
        if (session !== undefined) {
          const bogus: AckInput = { jobId: 1 + randomInt(1_000_000), token: -1, output: 0n, processingMs: 1 };
          const before = core.snapshot();
          const rejections = core.acknowledge(session.id, [bogus]);
          const after = core.snapshot();
          expect(rejections).toHaveLength(1);
          expect(after.processed).toBe(before.processed);
          expect(after.rejectedResults - before.rejectedResults).toBe(1);
          expect(after.lateResults).toBe(before.lateResults);
        }
      } else if (roll < 0.55) {
        const session = sessionOf();
        if (session !== undefined && session.open.length > 0) {
          const chosen = session.open.splice(0, 1 + randomInt(session.open.length));
          const before = core.snapshot();
          const rejections = core.release(
            session.id,
            chosen.map((delivery) => ({ jobId: delivery.jobId, token: delivery.token })),
          );
          const after = core.snapshot();
          expect(rejections.length).toBeLessThanOrEqual(chosen.length);
          expect(after.processed).toBe(before.processed);
          expect(after.redelivered).toBe(before.redelivered);
          expect(after.deadLettered).toBe(before.deadLettered);
        }
      } else if (roll < 0.6) {
        const session = sessionOf();
        if (session !== undefined && session.open.length > 0) {
          const count = 1 + randomInt(Math.min(3, session.open.length));
          const chosen = session.open.splice(-count, count);
          const permanent = random() < 0.25;
          const attempts = new Map(
            core.listLeases({ consumerId: session.consumerId }, maxCredit).map((lease) => [lease.token, lease.attempt]),
          );
          const current = chosen.filter((delivery) => attempts.has(delivery.token));
          const toDeadLetters = current.filter(
            (delivery) => permanent || (attempts.get(delivery.token) ?? 0) >= maxAttempts,
          ).length;
          const before = core.snapshot();
          const nacks = chosen.map((delivery) => nackOf(delivery, `failed at step ${step}`, permanent));
          const rejections = core.nack(session.id, nacks);
          const after = core.snapshot();
          expect(rejections).toHaveLength(chosen.length - current.length);
          expect(after.failedAttempts - before.failedAttempts).toBe(current.length);
          expect(after.deadLettered - before.deadLettered).toBe(toDeadLetters);
          expect(after.waitingRetry - before.waitingRetry).toBe(current.length - toDeadLetters);
          expect(after.rejectedResults).toBe(before.rejectedResults);
          expect(after.processed).toBe(before.processed);
          coverage.nackRetried += current.length - toDeadLetters;
          coverage.nackDeadLettered += toDeadLetters;
          coverage.permanentNacks += permanent ? current.length : 0;
        }
      } else if (roll < 0.64) {
        const session = sessionOf();
        if (session !== undefined && session.open.length > 0) {
          const chosen = session.open.slice(0, 1 + randomInt(session.open.length));
          const extensionMs = random() < 0.3 ? undefined : randomInt(200);
          const tokens = currentTokens(core, session.consumerId);
          const current = chosen.filter((delivery) => tokens.get(delivery.jobId) === delivery.token);
          const rejections = core.extend(
            session.id,
            chosen.map((delivery) => ({ jobId: delivery.jobId, token: delivery.token, extensionMs })),
          );
          expect(rejections).toHaveLength(chosen.length - current.length);
          for (const delivery of current) {
            const ownLeaseMs = leaseMsOf.get(delivery.jobId) ?? 0;
            const expectedMs = extensionMs ?? (ownLeaseMs > 0 ? ownLeaseMs : defaultLeaseMs);
            const [lease] = core.listLeases({ jobId: delivery.jobId }, 1);
            expect(lease?.deadlineMs).toBe(clock.now() + expectedMs);
          }
          coverage.extended += current.length;
        }
      } else if (roll < 0.66) {
        const leases = core.listLeases({}, maxCredit);
        const chosen = leases[randomInt(leases.length)];
        if (chosen === undefined) {
          expectMpmcError(() => core.releaseLease(1 + randomInt(core.snapshot().created + 1)), "not_found");
        } else {
          const owner = sessions.find((session) => session.consumerId === chosen.consumerId);
          const before = core.snapshot();
          expect(core.releaseLease(chosen.jobId)).toEqual(chosen);
          const after = core.snapshot();
          const lastAttempt = chosen.attempt >= maxAttempts;
          expect(after.redelivered - before.redelivered).toBe(lastAttempt ? 0 : 1);
          expect(after.deadLettered - before.deadLettered).toBe(lastAttempt ? 1 : 0);
          expect(after.consumersConnected).toBe(before.consumersConnected);
          expect(owner?.sink.endCalls).toBe(0);
          expect(core.listLeases({ jobId: chosen.jobId }, 1).map((lease) => lease.token)).not.toContain(chosen.token);
          coverage.leasesReleased++;
        }
      } else if (roll < 0.68) {
        const { entries, total } = core.listDeadLetters(0, maxCredit);
        expect(entries).toHaveLength(total);
        const all = random() < 0.3;
        const chosen = all ? entries : entries.filter(() => random() < 0.5);
        const before = core.snapshot();
        // Job 1_000_000 is not a dead letter, so the requeue skips it.
        const requeued = core.requeueDeadLetters(all ? "all" : [...chosen.map((entry) => entry.job.id), 1_000_000]);
        const after = core.snapshot();
        expect(requeued).toBe(chosen.length);
        expect(before.deadLetters - after.deadLetters).toBe(requeued);
        expect(before.deadLettered - after.deadLettered).toBe(requeued);
        expect(after.queued + after.inFlight - (before.queued + before.inFlight)).toBe(requeued);
        for (const entry of chosen) {
          expect(entry.job.attempt).toBe(1);
        }
        coverage.requeued += requeued;
      } else if (roll < 0.69) {
        const { entries } = core.listDeadLetters(0, maxCredit);
        const all = random() < 0.3;
        const chosen = all ? entries : entries.filter(() => random() < 0.5);
        const before = core.snapshot();
        const purged = core.purgeDeadLetters(all ? "all" : chosen.map((entry) => entry.job.id));
        const after = core.snapshot();
        expect(purged).toBe(chosen.length);
        expect(before.deadLetters - after.deadLetters).toBe(purged);
        expect(after.deadLettered).toBe(before.deadLettered);
        for (const entry of chosen) {
          purgedIds.add(entry.job.id);
        }
        coverage.purged += purged;
      } else if (roll < 0.74) {
        const session = sessionOf();
        if (session !== undefined) {
          core.setWritable(session.id, random() < 0.6);
        }
      } else if (roll < 0.75) {
        const session = sessionOf();
        if (session !== undefined) {
          core.stopConsuming(session.id);
        }
      } else {
        const before = core.snapshot();
        // Mostly short steps, sometimes one past the longest backoff and lease.
        clock.advance(random() < 0.85 ? randomInt(60) : randomInt(300));
        const after = core.snapshot();
        for (const lease of core.listLeases({}, maxCredit)) {
          expect(lease.deadlineMs, `step ${step}: lease of job ${lease.jobId}`).toBeGreaterThan(clock.now());
        }
        coverage.leasesExpired += after.redelivered - before.redelivered;
        coverage.retriesReleased += Math.max(0, before.waitingRetry - after.waitingRetry);
      }

      const stats = expectConsistent(core, step);
      expectMonotonic(previous, stats, step);
      previous = stats;
    }

    // Guards against a seed or weight change that leaves some path unexercised.
    expect(previous.processed).toBeGreaterThan(100);
    expect(previous.redelivered).toBeGreaterThan(0);
    expect(previous.rejectedResults).toBeGreaterThan(0);
    expect(previous.lateResults).toBeGreaterThan(0);
    expect(previous.failedAttempts).toBeGreaterThan(0);
    expect(previous.duplicatesRefused).toBeGreaterThan(0);
    for (const [name, count] of Object.entries(coverage)) {
      expect(count, name).toBeGreaterThan(0);
    }

    // Every settled job is settled once, and result sequences have no gaps.
    const records = results.records;
    expect(records.map((record) => record.sequence)).toEqual(records.map((_, i) => i + 1));
    expect(new Set(records.map((record) => record.jobId)).size).toBe(records.length);
    for (const record of records) {
      expect(record.output).toBe(BigInt(record.jobId));
      expect(record.attempt).toBeGreaterThanOrEqual(1);
      expect(record.attempt).toBeLessThanOrEqual(maxAttempts);
      expect(record.queueWaitMs).toBeGreaterThanOrEqual(0);
    }
    // The window keeps the newest 64 results, exactly as the subscriber received them.
    const last = core.lastResultSequence;
    expect(core.resultsAfter(last - 64, 64)).toEqual(records.slice(-64));
    expect(core.resultsAfter(last - 65, 64)).toBeUndefined();

    // Fail every queued job once more before closing, so the drain has to wait for their retries.
    for (const session of [...sessions]) {
      core.detach(session.id);
    }
    core.offer("p0", makeJobs(3, steps * 10));
    const failing = new RecordingConsumerSink();
    const failingId = core.attach("failing", maxCredit, failing);
    const failures = failing.deliveries.map((delivery) => nackOf(delivery, "failed before close", false));
    expect(core.nack(failingId, failures)).toEqual([]);
    expect(core.snapshot().waitingRetry).toBeGreaterThan(0);
    core.detach(failingId);

    // Closing and settling everything drains the queue exactly once.
    core.close();
    expect(core.drained).toBe(false);
    const finisher = new RecordingConsumerSink();
    const finisherId = core.attach("finisher", maxCredit, finisher);
    expect(core.queued).toBe(0);
    let settledDeliveries = 0;
    // Steps of 1 ms, each shorter than any lease, release the retries while no delivery to the finisher expires.
    for (let ms = 0; !core.drained && ms <= 10 * backoff.maxMs; ms++) {
      const fresh = finisher.deliveries.slice(settledDeliveries);
      settledDeliveries += fresh.length;
      const rejections = core.acknowledge(
        finisherId,
        fresh.map((delivery) => ackOf(delivery, BigInt(delivery.jobId))),
      );
      expect(rejections).toEqual([]);
      if (!core.drained) {
        clock.advance(1);
      }
      expectConsistent(core, steps + ms);
    }
    const final = expectConsistent(core, steps);
    expect(core.drained).toBe(true);
    expect(final.queued).toBe(0);
    expect(final.inFlight).toBe(0);
    expect(final.waitingRetry).toBe(0);
    expect(final.processed + final.deadLettered).toBe(final.created);
    expect(finisher.endCalls).toBe(1);
    expect(results.finishes).toHaveLength(1);
    expectMpmcError(() => core.requeueDeadLetters("all"), "failed_precondition");

    // Every job ended exactly once: processed, in the dead letters, or purged from them.
    const processedIds = results.records.map((record) => record.jobId);
    const deadLetterIds = core.listDeadLetters(0, maxCredit).entries.map((entry) => entry.job.id);
    const endings = [...processedIds, ...deadLetterIds, ...purgedIds].sort((a, b) => a - b);
    expect(endings).toEqual(Array.from({ length: final.created }, (_, i) => i + 1));
    expect(deadLetterIds.length + purgedIds.size).toBe(final.deadLettered);
  }

  it.each([1, 42, 20240601])("invariant holds over random operations (seed %i)", (seed) => {
    runRandomSequence(seed, 3_000);
  });
});
