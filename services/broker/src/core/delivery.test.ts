import { MpmcError, type ErrorCode } from "@mpmc/common";
import { describe, expect, it } from "vitest";
import { BrokerCore, type BrokerCoreOptions } from "./broker-core.js";
import { ManualClock } from "./clock.js";
import type {
  AckInput,
  BrokerSnapshot,
  ConsumerSink,
  JobInput,
  Lease,
  LeaseInfo,
  NackInput,
  OfferResult,
  QueueGauges,
  ResultRecord,
  ResultSink,
} from "./types.js";

const startMs = 1_000_000;

/** A delivered lease, copied when delivered because the core raises job.attempt in place. */
interface Delivery {
  jobId: number;
  token: number;
  attempt: number;
  deliveredAtMs: number;
  deadlineMs: number;
}

class RecordingConsumerSink implements ConsumerSink {
  readonly deliveries: Delivery[] = [];
  endCalls = 0;

  deliver(leases: readonly Lease[]): void {
    for (const lease of leases) {
      this.deliveries.push({
        jobId: lease.job.id,
        token: lease.token,
        attempt: lease.job.attempt,
        deliveredAtMs: lease.deliveredAtMs,
        deadlineMs: lease.deadlineMs,
      });
    }
  }

  end(): void {
    this.endCalls++;
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
  readonly records: ResultRecord[] = [];
  readonly finishes: BrokerSnapshot[] = [];

  results(batch: readonly ResultRecord[]): void {
    this.records.push(...batch);
  }

  finish(stats: BrokerSnapshot): void {
    this.finishes.push(stats);
  }
}

function setup(options: Partial<BrokerCoreOptions> = {}): { core: BrokerCore; clock: ManualClock } {
  const clock = new ManualClock(startMs);
  return { core: new BrokerCore({ capacity: 100, leaseMs: 1_000, clock, ...options }), clock };
}

function makeJob(sequence = 0, leaseMs = 0): JobInput {
  return { data: BigInt(sequence), payload: new Uint8Array([9]), attributes: {}, sequence, leaseMs };
}

function makeJobs(count: number, firstSequence = 1): JobInput[] {
  return Array.from({ length: count }, (_, i) => makeJob(firstSequence + i));
}

function ackOf(delivery: Delivery, output = 0n): AckInput {
  return { jobId: delivery.jobId, token: delivery.token, output, processingMs: 1 };
}

function nackOf(delivery: Delivery, error: string, permanent = false): NackInput {
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

/** Creates one job and fails it for good, so it sits in the dead letters. */
function deadLetterOne(core: BrokerCore, sessionId: number, sink: RecordingConsumerSink, sequence: number): number {
  const [job] = core.offer("p", [makeJob(sequence)]).accepted;
  if (job === undefined) {
    throw new Error(`job with sequence ${sequence} was not accepted`);
  }
  expect(core.nack(sessionId, [nackOf(sink.latest(job.id), "bad input", true)])).toEqual([]);
  return job.id;
}

describe("BrokerCore duplicates", () => {
  it("offer skips sequences at or below the cursor", () => {
    const { core } = setup();

    const first = core.offer("p", makeJobs(3));
    expect(first.accepted.map((job) => job.id)).toEqual([1, 2, 3]);
    expect(first.duplicates).toBe(0);
    expect(first.consumed).toBe(3);
    expect(core.producerCursor("p")).toBe(3);

    const second = core.offer("p", makeJobs(4, 2));

    expect(second.accepted.map((job) => job.id)).toEqual([4, 5]);
    expect(second.accepted.map((job) => job.sequence)).toEqual([4, 5]);
    expect(second.duplicates).toBe(2);
    expect(second.consumed).toBe(4);
    expect(core.producerCursor("p")).toBe(5);
    const stats = core.snapshot();
    expect(stats.created).toBe(5);
    expect(stats.queued).toBe(5);
    expect(stats.duplicatesRefused).toBe(2);
    expect(stats.producers).toEqual([{ producerId: "p", created: 5, lastSequence: 5 }]);
  });

  it("offer counts a repeat within one batch", () => {
    const { core } = setup();

    const result = core.offer("p", [makeJob(1), makeJob(1), makeJob(2)]);

    expect(result.accepted.map((job) => job.sequence)).toEqual([1, 2]);
    expect(result.duplicates).toBe(1);
    expect(result.consumed).toBe(3);
    expect(core.snapshot().duplicatesRefused).toBe(1);
  });

  it("offer skips a lower sequence after a higher one", () => {
    const { core } = setup();

    const result = core.offer("p", [makeJob(5), makeJob(4)]);

    expect(result.accepted.map((job) => job.sequence)).toEqual([5]);
    expect(result.duplicates).toBe(1);
    expect(result.consumed).toBe(2);
    expect(core.producerCursor("p")).toBe(5);
  });

  it("offer keeps one cursor per producer", () => {
    const { core } = setup();
    core.offer("p", makeJobs(2));

    const other = core.offer("q", makeJobs(1));

    expect(other.accepted).toHaveLength(1);
    expect(other.duplicates).toBe(0);
    expect(core.producerCursor("p")).toBe(2);
    expect(core.producerCursor("q")).toBe(1);
    expect(core.producerCursor("unknown")).toBe(0);
  });

  it("offer accepts unnumbered jobs again", () => {
    const { core } = setup();
    core.offer("p", [makeJob(3)]);

    const result = core.offer("p", [makeJob(0), makeJob(0)]);

    expect(result).toEqual({ accepted: result.accepted, duplicates: 0, consumed: 2 } satisfies OfferResult);
    expect(result.accepted.map((job) => job.id)).toEqual([2, 3]);
    expect(core.producerCursor("p")).toBe(3);
    expect(core.snapshot().duplicatesRefused).toBe(0);
  });

  it("offer consumes duplicates while full", () => {
    const { core } = setup({ capacity: 2 });
    const first = core.offer("p", makeJobs(3));
    expect(first.consumed).toBe(2);

    // The resent batch starts with a duplicate, which needs no room, then stops at job 3.
    const resent = core.offer("p", makeJobs(2, 2));

    expect(resent).toEqual({ accepted: [], duplicates: 1, consumed: 1 } satisfies OfferResult);
    expect(core.producerCursor("p")).toBe(2);
    expect(core.snapshot().duplicatesRefused).toBe(1);

    core.attach("c", 1, new RecordingConsumerSink());
    const last = core.offer("p", makeJobs(1, 3));

    expect(last.accepted.map((job) => job.sequence)).toEqual([3]);
    expect(last.duplicates).toBe(0);
  });
});

describe("BrokerCore per-job lease", () => {
  it("lease uses the job's own length", () => {
    const { core, clock } = setup({ leaseMs: 1_000 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);

    core.offer("p", [makeJob(1, 300), makeJob(2, 0)]);

    expect(sink.latest(1).deadlineMs).toBe(startMs + 300);
    expect(sink.latest(2).deadlineMs).toBe(startMs + 1_000);
    expect(core.listLeases({}, 10).map((lease) => lease.deadlineMs)).toEqual([startMs + 300, startMs + 1_000]);
    core.setWritable(session, false);

    clock.advance(299);
    expect(core.inFlight).toBe(2);

    clock.advance(1);
    expect(core.inFlight).toBe(1);
    expect(core.queued).toBe(1);
    expect(core.snapshot().redelivered).toBe(1);
    expect(core.listLeases({}, 10).map((lease) => lease.jobId)).toEqual([2]);

    clock.advance(699);
    expect(core.inFlight).toBe(1);

    clock.advance(1);
    expect(core.inFlight).toBe(0);
    expect(core.queued).toBe(2);

    // A redelivery gets the job's own length again.
    core.setWritable(session, true);
    expect(sink.latest(1).deadlineMs).toBe(startMs + 1_300);
    expect(sink.latest(2).deadlineMs).toBe(startMs + 2_000);
  });
});

describe("BrokerCore.extend", () => {
  it("extend keeps a job past its deadline", () => {
    const { core, clock } = setup({ leaseMs: 1_000 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const first = sink.latest(1);
    expect(first.deadlineMs).toBe(startMs + 1_000);

    clock.advance(800);
    const rejections = core.extend(session, [{ jobId: 1, token: first.token, extensionMs: 1_000 }]);

    expect(rejections).toEqual([]);
    expect(core.listLeases({ jobId: 1 }, 1)[0]?.deadlineMs).toBe(startMs + 1_800);

    clock.advance(200);
    expect(core.inFlight).toBe(1);
    expect(core.snapshot().redelivered).toBe(0);
    expect(sink.deliveries).toHaveLength(1);

    clock.advance(799);
    expect(sink.deliveries).toHaveLength(1);

    // The extended lease still runs out, and the job is delivered again.
    clock.advance(1);
    expect(core.snapshot().redelivered).toBe(1);
    expect(sink.deliveries).toHaveLength(2);
    expect(sink.latest(1).attempt).toBe(2);
    expect(sink.latest(1).deliveredAtMs).toBe(startMs + 1_800);
  });

  it("extend without a length uses the job's lease", () => {
    const { core, clock } = setup({ leaseMs: 1_000 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", [makeJob(1, 500), makeJob(2, 0)]);
    clock.advance(400);

    const rejections = core.extend(session, [
      { jobId: 1, token: sink.latest(1).token, extensionMs: undefined },
      { jobId: 2, token: sink.latest(2).token, extensionMs: undefined },
    ]);

    expect(rejections).toEqual([]);
    expect(core.listLeases({}, 10).map((lease) => lease.deadlineMs)).toEqual([startMs + 900, startMs + 1_400]);
  });

  it("extend rejects leases the session does not hold", () => {
    const { core, clock } = setup({ leaseMs: 1_000 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const first = sink.latest(1);
    clock.advance(1_000);
    const second = sink.latest(1);
    const other = core.attach("other", 1, new RecordingConsumerSink());

    const rejections = core.extend(session, [
      { jobId: 1, token: first.token, extensionMs: 5_000 },
      { jobId: 9, token: first.token, extensionMs: 5_000 },
    ]);
    const fromOther = core.extend(other, [{ jobId: 1, token: second.token, extensionMs: 5_000 }]);

    expect(rejections).toEqual([
      { jobId: 1, token: first.token, reason: `lease_token ${first.token} is not the current delivery of job 1` },
      { jobId: 9, token: first.token, reason: "job 9 is not in flight" },
    ]);
    expect(fromOther).toEqual([{ jobId: 1, token: second.token, reason: "job 1 is leased to another consumer" }]);
    expect(core.listLeases({ jobId: 1 }, 1)[0]?.deadlineMs).toBe(startMs + 2_000);
  });
});

describe("BrokerCore late results", () => {
  it("late ack after expiry is rejected", () => {
    const { core, clock } = setup({ leaseMs: 1_000 });
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const first = sink.latest(1);

    clock.advance(1_000);
    const second = sink.latest(1);
    expect(second.token).not.toBe(first.token);

    const late = core.acknowledge(session, [ackOf(first, 1n)]);

    expect(late).toEqual([
      { jobId: 1, token: first.token, reason: `lease_token ${first.token} is not the current delivery of job 1` },
    ]);
    const stats = core.snapshot();
    expect(stats.lateResults).toBe(1);
    expect(stats.rejectedResults).toBe(1);
    expect(stats.processed).toBe(0);
    expect(stats.consumers[0]?.rejectedResults).toBe(1);
    expect(results.records).toEqual([]);

    // The new delivery still settles the job.
    expect(core.acknowledge(session, [ackOf(second, 2n)])).toEqual([]);
    const after = core.snapshot();
    expect(after.processed).toBe(1);
    expect(after.lateResults).toBe(1);
    expect(results.records).toEqual([expect.objectContaining({ jobId: 1, attempt: 2, output: 2n })]);
  });

  it("late nack after expiry is rejected", () => {
    const { core, clock } = setup({ leaseMs: 1_000 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const first = sink.latest(1);
    clock.advance(1_000);

    const rejections = core.nack(session, [nackOf(first, "too late")]);

    expect(rejections).toEqual([
      { jobId: 1, token: first.token, reason: `lease_token ${first.token} is not the current delivery of job 1` },
    ]);
    const stats = core.snapshot();
    expect(stats.failedAttempts).toBe(0);
    expect(stats.waitingRetry).toBe(0);
    expect(stats.inFlight).toBe(1);
  });
});

describe("BrokerCore.nack", () => {
  it("nack backoff doubles from minMs/2 with zero jitter", () => {
    const { core, clock } = setup({
      leaseMs: 60_000,
      maxAttempts: 10,
      retryBackoff: { minMs: 100, maxMs: 1_000 },
      random: () => 0,
    });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const delays = [50, 100, 200, 400, 500, 500, 500];

    for (const [index, delayMs] of delays.entries()) {
      const attempt = index + 1;
      const delivery = sink.latest(1);
      expect(delivery.attempt).toBe(attempt);

      expect(core.nack(session, [nackOf(delivery, `failure ${attempt}`)])).toEqual([]);
      expect(core.gauges().waitingRetry).toBe(1);
      expect(core.inFlight).toBe(0);
      expect(core.queued).toBe(0);

      clock.advance(delayMs - 1);
      expect(sink.deliveries, `attempt ${attempt}`).toHaveLength(attempt);
      expect(core.gauges().waitingRetry).toBe(1);

      clock.advance(1);
      expect(sink.deliveries, `attempt ${attempt}`).toHaveLength(attempt + 1);
      expect(core.gauges().waitingRetry).toBe(0);
      expect(sink.latest(1).attempt).toBe(attempt + 1);
    }
    const stats = core.snapshot();
    expect(stats.failedAttempts).toBe(7);
    expect(stats.consumers[0]?.failedAttempts).toBe(7);
    expect(stats.deadLettered).toBe(0);
  });

  it("nack backoff nears the full delay with top jitter", () => {
    const { core, clock } = setup({
      leaseMs: 60_000,
      maxAttempts: 10,
      retryBackoff: { minMs: 100, maxMs: 1_000 },
      random: () => 0.999_999,
    });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const delays = [100, 200, 400, 800, 1_000, 1_000];

    for (const [index, delayMs] of delays.entries()) {
      const attempt = index + 1;
      core.nack(session, [nackOf(sink.latest(1), `failure ${attempt}`)]);

      clock.advance(delayMs - 1);
      expect(sink.deliveries, `attempt ${attempt}`).toHaveLength(attempt);

      clock.advance(1);
      expect(sink.deliveries, `attempt ${attempt}`).toHaveLength(attempt + 1);
    }
  });

  it("nack retry goes to the back of the queue", () => {
    const { core, clock } = setup({ retryBackoff: { minMs: 100, maxMs: 1_000 }, random: () => 0 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(3));

    core.nack(session, [nackOf(sink.latest(1), "flaky")]);
    expect(sink.jobIds()).toEqual([1, 2]);
    expect(core.snapshot()).toMatchObject({ queued: 1, waitingRetry: 1, inFlight: 1 });

    clock.advance(50);
    expect(core.snapshot()).toMatchObject({ queued: 2, waitingRetry: 0, inFlight: 1 });

    core.acknowledge(session, [ackOf(sink.latest(2))]);
    core.acknowledge(session, [ackOf(sink.latest(3))]);

    expect(sink.jobIds()).toEqual([1, 2, 3, 1]);
    expect(sink.latest(1).attempt).toBe(2);
  });

  it("nack rejects a lease the session does not hold", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    core.attach("c", 1, sink);
    const other = core.attach("other", 1, new RecordingConsumerSink());
    core.offer("p", makeJobs(1));
    const delivery = sink.latest(1);

    const rejections = core.nack(other, [nackOf(delivery, "not mine"), { ...nackOf(delivery, "gone"), jobId: 7 }]);

    expect(rejections).toEqual([
      { jobId: 1, token: delivery.token, reason: "job 1 is leased to another consumer" },
      { jobId: 7, token: delivery.token, reason: "job 7 is not in flight" },
    ]);
    const stats = core.snapshot();
    expect(stats.failedAttempts).toBe(0);
    expect(stats.waitingRetry).toBe(0);
    expect(stats.inFlight).toBe(1);
  });
});

describe("BrokerCore dead letters", () => {
  it("poison job lands in the dead letters", () => {
    const { core, clock } = setup({
      maxAttempts: 3,
      retryBackoff: { minMs: 10, maxMs: 100 },
      random: () => 0,
    });
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));

    for (let attempt = 1; attempt <= 3; attempt++) {
      expect(core.nack(session, [nackOf(sink.latest(1), `error ${attempt}`)])).toEqual([]);
      clock.advance(100);
    }

    expect(sink.deliveries.map((delivery) => delivery.attempt)).toEqual([1, 2, 3]);
    const { entries, total } = core.listDeadLetters(0, 10);
    expect(total).toBe(1);
    expect(entries).toEqual([
      {
        job: expect.objectContaining({ id: 1, attempt: 3, producerId: "p", sequence: 1 }),
        error: "failed 3 of 3 attempts: error 3",
        consumerId: "c",
        deadLetteredAtMs: startMs + 200,
      },
    ]);
    expect(core.snapshot()).toMatchObject({
      created: 1,
      queued: 0,
      inFlight: 0,
      waitingRetry: 0,
      processed: 0,
      deadLettered: 1,
      deadLetters: 1,
      failedAttempts: 3,
    });

    // Requeued, the job starts over at attempt 1 and can now succeed.
    expect(core.requeueDeadLetters([1])).toBe(1);
    expect(sink.deliveries).toHaveLength(4);
    expect(sink.latest(1).attempt).toBe(1);
    expect(core.snapshot()).toMatchObject({ deadLettered: 0, deadLetters: 0, inFlight: 1 });

    expect(core.acknowledge(session, [ackOf(sink.latest(1), 5n)])).toEqual([]);
    expect(results.records).toEqual([expect.objectContaining({ jobId: 1, attempt: 1, output: 5n })]);
    expect(core.snapshot()).toMatchObject({ created: 1, processed: 1, deadLettered: 0 });
  });

  it("permanent nack dead-letters at once", () => {
    const { core, clock } = setup({ maxAttempts: 5 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));

    expect(core.nack(session, [nackOf(sink.latest(1), "bad input", true)])).toEqual([]);

    expect(core.listDeadLetters(0, 10).entries).toEqual([
      {
        job: expect.objectContaining({ id: 1, attempt: 1 }),
        error: "rejected as not retryable: bad input",
        consumerId: "c",
        deadLetteredAtMs: startMs,
      },
    ]);
    expect(core.snapshot()).toMatchObject({ waitingRetry: 0, failedAttempts: 1, deadLettered: 1, deadLetters: 1 });

    clock.advance(60_000);
    expect(sink.deliveries).toHaveLength(1);
  });

  it("detach at the last attempt dead-letters", () => {
    const { core } = setup({ maxAttempts: 2 });
    const a = core.attach("a", 1, new RecordingConsumerSink());
    core.offer("p", makeJobs(1));

    expect(core.detach(a)).toBe(1);
    expect(core.queued).toBe(1);

    const sinkB = new RecordingConsumerSink();
    const b = core.attach("b", 1, sinkB);
    expect(sinkB.latest(1).attempt).toBe(2);

    expect(core.detach(b)).toBe(1);

    expect(core.queued).toBe(0);
    expect(core.listDeadLetters(0, 10).entries).toEqual([
      expect.objectContaining({ error: "consumer disconnected on attempt 2 of 2", consumerId: "b" }),
    ]);
    expect(core.snapshot()).toMatchObject({ redelivered: 1, deadLettered: 1, failedAttempts: 0 });
  });

  it("lease expiry at the last attempt dead-letters", () => {
    const { core, clock } = setup({ maxAttempts: 1, leaseMs: 1_000 });
    const sink = new RecordingConsumerSink();
    core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));

    clock.advance(1_000);

    expect(sink.deliveries).toHaveLength(1);
    expect(core.listDeadLetters(0, 10).entries).toEqual([
      expect.objectContaining({
        error: "lease expired on attempt 1 of 1",
        consumerId: "c",
        deadLetteredAtMs: startMs + 1_000,
      }),
    ]);
    expect(core.snapshot()).toMatchObject({ redelivered: 0, deadLettered: 1, queued: 0, inFlight: 0 });
  });

  it("purge keeps purged jobs counted", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    for (const sequence of [1, 2, 3]) {
      deadLetterOne(core, session, sink, sequence);
    }

    expect(core.purgeDeadLetters([1, 99])).toBe(1);

    expect(core.listDeadLetters(0, 10).entries.map((entry) => entry.job.id)).toEqual([2, 3]);
    expect(core.snapshot()).toMatchObject({ created: 3, deadLetters: 2, deadLettered: 3 });

    expect(core.purgeDeadLetters("all")).toBe(2);

    expect(core.listDeadLetters(0, 10)).toEqual({ entries: [], total: 0 });
    expect(core.snapshot()).toMatchObject({ created: 3, deadLetters: 0, deadLettered: 3 });
    expect(core.requeueDeadLetters("all")).toBe(0);
  });

  it("listDeadLetters pages by job id", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 5, sink);
    core.offer("p", makeJobs(5));
    // Failed out of order, to show the listing sorts by job id.
    for (const jobId of [3, 1, 5, 2, 4]) {
      core.nack(session, [nackOf(sink.latest(jobId), `job ${jobId}`, true)]);
    }

    const pages = [0, 2, 4, 5].map((after) => core.listDeadLetters(after, 2));

    expect(pages.map((page) => page.entries.map((entry) => entry.job.id))).toEqual([[1, 2], [3, 4], [5], []]);
    expect(pages.map((page) => page.total)).toEqual([5, 5, 5, 5]);
    expect(pages[0]?.entries[0]?.error).toBe("rejected as not retryable: job 1");
  });

  it("requeue puts jobs at the back with attempt 1", () => {
    const { core } = setup({ maxAttempts: 2 });
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 2, sinkA);
    core.offer("p", makeJobs(3));
    core.setWritable(a, false);
    core.nack(a, [nackOf(sinkA.latest(1), "bad", true), nackOf(sinkA.latest(2), "bad", true)]);
    expect(core.queued).toBe(1);

    expect(core.requeueDeadLetters("all")).toBe(2);

    expect(core.snapshot()).toMatchObject({ queued: 3, deadLetters: 0, deadLettered: 0 });
    const sinkB = new RecordingConsumerSink();
    core.attach("b", 10, sinkB);
    expect(sinkB.jobIds()).toEqual([3, 1, 2]);
    expect(sinkB.deliveries.map((delivery) => delivery.attempt)).toEqual([1, 1, 1]);
  });

  it("requeue before the drain delays it", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(2));
    core.nack(session, [nackOf(sink.latest(1), "bad", true)]);
    core.close();

    expect(core.requeueDeadLetters([1])).toBe(1);
    expect(sink.jobIds()).toEqual([1, 2, 1]);

    core.acknowledge(session, [ackOf(sink.latest(2))]);
    expect(core.drained).toBe(false);

    core.acknowledge(session, [ackOf(sink.latest(1))]);
    expect(core.drained).toBe(true);
    expect(core.snapshot()).toMatchObject({ created: 2, processed: 2, deadLettered: 0 });
  });

  it("requeue after the drain fails", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    deadLetterOne(core, session, sink, 1);

    core.close();

    expect(core.drained).toBe(true);
    expectMpmcError(() => core.requeueDeadLetters("all"), "failed_precondition");
    expectMpmcError(() => core.requeueDeadLetters([1]), "failed_precondition");
    expect(core.listDeadLetters(0, 10).total).toBe(1);

    expect(core.purgeDeadLetters("all")).toBe(1);
    expect(core.snapshot()).toMatchObject({ deadLetters: 0, deadLettered: 1 });
  });
});

describe("BrokerCore.releaseLease", () => {
  it("releaseLease returns the job with attempt raised", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 2, sink);
    core.offer("p", makeJobs(2));
    const first = sink.latest(1);

    const info = core.releaseLease(1);

    expect(info).toEqual({
      jobId: 1,
      consumerId: "c",
      token: first.token,
      attempt: 1,
      deliveredAtMs: startMs,
      deadlineMs: startMs + 1_000,
    } satisfies LeaseInfo);
    // The consumer keeps its session and, with credit free, takes the job again.
    const second = sink.latest(1);
    expect(second.attempt).toBe(2);
    expect(second.token).not.toBe(first.token);
    expect(sink.endCalls).toBe(0);
    expect(core.snapshot()).toMatchObject({ consumersConnected: 1, redelivered: 1, inFlight: 2 });

    const late = core.acknowledge(session, [ackOf(first)]);
    expect(late).toHaveLength(1);
    expect(core.snapshot().lateResults).toBe(1);

    expect(core.acknowledge(session, [ackOf(second)])).toEqual([]);
    expect(core.snapshot().processed).toBe(1);
  });

  it("releaseLease puts the job at the front", () => {
    const { core } = setup();
    const sinkA = new RecordingConsumerSink();
    const a = core.attach("a", 1, sinkA);
    core.offer("p", makeJobs(3));
    core.setWritable(a, false);

    core.releaseLease(1);

    expect(core.queued).toBe(3);
    const sinkB = new RecordingConsumerSink();
    core.attach("b", 1, sinkB);
    expect(sinkB.jobIds()).toEqual([1]);
    expect(sinkB.latest(1).attempt).toBe(2);
  });

  it("releaseLease of a job not in flight fails", () => {
    const { core } = setup();
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(2));

    expectMpmcError(() => core.releaseLease(99), "not_found");
    // Job 2 is queued, not in flight.
    expectMpmcError(() => core.releaseLease(2), "not_found");

    core.acknowledge(session, [ackOf(sink.latest(1))]);
    expectMpmcError(() => core.releaseLease(1), "not_found");
    expect(core.snapshot().redelivered).toBe(0);
  });

  it("releaseLease at the last attempt dead-letters", () => {
    const { core } = setup({ maxAttempts: 1 });
    const sink = new RecordingConsumerSink();
    core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));

    core.releaseLease(1);

    expect(sink.deliveries).toHaveLength(1);
    expect(core.listDeadLetters(0, 10).entries).toEqual([
      expect.objectContaining({ error: "lease released by an operator on attempt 1 of 1", consumerId: "c" }),
    ]);
    expect(core.snapshot()).toMatchObject({ redelivered: 0, deadLettered: 1, inFlight: 0, queued: 0 });
  });

  it("releaseLease of the last job drains", () => {
    const { core } = setup({ maxAttempts: 1 });
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.close();

    core.releaseLease(1);

    expect(core.drained).toBe(true);
    expect(sink.endCalls).toBe(1);
    expect(results.finishes).toHaveLength(1);
    expect(results.finishes[0]).toMatchObject({ drained: true, deadLettered: 1, processed: 0 });
  });
});

describe("BrokerCore.listLeases", () => {
  it("listLeases filters by consumer and job", () => {
    const { core } = setup();
    core.attach("a", 2, new RecordingConsumerSink());
    core.attach("b", 2, new RecordingConsumerSink());
    core.offer("p", makeJobs(4));

    const ids = (leases: LeaseInfo[]): number[] => leases.map((lease) => lease.jobId);

    expect(ids(core.listLeases({}, 10))).toEqual([1, 2, 3, 4]);
    expect(ids(core.listLeases({}, 2))).toEqual([1, 2]);
    expect(ids(core.listLeases({ consumerId: "a" }, 10))).toEqual([1, 3]);
    expect(ids(core.listLeases({ consumerId: "b" }, 1))).toEqual([2]);
    expect(core.listLeases({ jobId: 2 }, 10)).toEqual([expect.objectContaining({ jobId: 2, consumerId: "b" })]);
    expect(core.listLeases({ jobId: 2, consumerId: "a" }, 10)).toEqual([]);
    expect(core.listLeases({ jobId: 99 }, 10)).toEqual([]);
    expect(core.listLeases({ consumerId: "nobody" }, 10)).toEqual([]);
  });
});

describe("BrokerCore result window", () => {
  function processJobs(core: BrokerCore, count: number, firstSequence: number): void {
    const sink = new RecordingConsumerSink();
    const session = core.attach(`c${firstSequence}`, count, sink);
    core.offer("p", makeJobs(count, firstSequence));
    for (const delivery of sink.deliveries) {
      expect(core.acknowledge(session, [ackOf(delivery, BigInt(delivery.jobId))])).toEqual([]);
    }
    core.detach(session);
  }

  it("resultsAfter is empty before any result", () => {
    const { core } = setup({ resultWindow: 3 });

    expect(core.resultsAfter(0, 10)).toEqual([]);
    expect(core.lastResultSequence).toBe(0);
    expect(core.firstKeptResultSequence).toBe(1);
  });

  it("resultsAfter keeps only the newest results", () => {
    const { core } = setup({ resultWindow: 3 });

    processJobs(core, 5, 1);

    expect(core.lastResultSequence).toBe(5);
    expect(core.firstKeptResultSequence).toBe(3);
    expect(core.snapshot()).toMatchObject({ lastResultSequence: 5, firstKeptResultSequence: 3 });
    expect(core.resultsAfter(0, 10)).toBeUndefined();
    expect(core.resultsAfter(1, 10)).toBeUndefined();
    expect(core.resultsAfter(2, 10)?.map((record) => record.sequence)).toEqual([3, 4, 5]);
    expect(core.resultsAfter(3, 1)?.map((record) => record.sequence)).toEqual([4]);
    expect(core.resultsAfter(5, 10)).toEqual([]);
  });

  it("resultsAfter resumes exactly the missed results", () => {
    const { core } = setup({ resultWindow: 10 });
    const steady = new RecordingResultSink();
    core.subscribe(steady);
    const resuming = new RecordingResultSink();
    const unsubscribe = core.subscribe(resuming);
    processJobs(core, 3, 1);
    unsubscribe();

    processJobs(core, 4, 4);

    const lastSeen = resuming.records.at(-1)?.sequence ?? 0;
    expect(lastSeen).toBe(3);
    const missed = core.resultsAfter(lastSeen, 100);
    expect(missed).toEqual(steady.records.slice(3));
    expect([...resuming.records, ...(missed ?? [])]).toEqual(steady.records);
    expect(steady.records.map((record) => record.sequence)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });
});

describe("BrokerCore.onChange", () => {
  function recordGauges(core: BrokerCore): QueueGauges[] {
    const seen: QueueGauges[] = [];
    core.onChange(() => seen.push(core.gauges()));
    return seen;
  }

  it("onChange fires after offer, ack and close", () => {
    const { core } = setup();
    const seen = recordGauges(core);

    core.offer("p", makeJobs(1));
    expect(seen).toHaveLength(1);
    expect(seen.at(-1)).toMatchObject({ queued: 1, created: 1 });

    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    expect(seen).toHaveLength(2);
    expect(seen.at(-1)).toMatchObject({ queued: 0, inFlight: 1, consumersConnected: 1 });

    core.acknowledge(session, [ackOf(sink.latest(1))]);
    expect(seen).toHaveLength(3);
    expect(seen.at(-1)).toMatchObject({ inFlight: 0, processed: 1 });

    core.close();
    expect(seen).toHaveLength(4);
    expect(seen.at(-1)).toMatchObject({ closed: true, drained: true });
  });

  it("onChange fires on nack and timers", () => {
    const { core, clock } = setup({ leaseMs: 1_000, retryBackoff: { minMs: 100, maxMs: 1_000 }, random: () => 0 });
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    const seen = recordGauges(core);

    core.nack(session, [nackOf(sink.latest(1), "flaky")]);
    expect(seen.at(-1)).toMatchObject({ waitingRetry: 1, inFlight: 0 });
    const afterNack = seen.length;

    clock.advance(50);
    expect(seen.length).toBeGreaterThan(afterNack);
    expect(seen.at(-1)).toMatchObject({ waitingRetry: 0, inFlight: 1 });
    const afterRetry = seen.length;

    core.setWritable(session, false);
    clock.advance(1_000);
    expect(seen.length).toBeGreaterThan(afterRetry);
    expect(seen.at(-1)).toMatchObject({ queued: 1, inFlight: 0 });
  });

  it("onChange stops after removal", () => {
    const { core } = setup();
    let calls = 0;
    const remove = core.onChange(() => calls++);
    core.offer("p", makeJobs(1));
    expect(calls).toBe(1);

    remove();
    core.offer("p", makeJobs(1, 2));
    core.close();

    expect(calls).toBe(1);
  });
});

describe("BrokerCore.gauges", () => {
  it("gauges report the oldest queued job's age", () => {
    const { core, clock } = setup();
    expect(core.gauges().oldestJobAgeMs).toBe(0);

    core.offer("p", makeJobs(1));
    clock.advance(250);
    core.offer("p", makeJobs(1, 2));
    clock.advance(100);

    expect(core.gauges()).toEqual({
      queued: 2,
      inFlight: 0,
      waitingRetry: 0,
      oldestJobAgeMs: 350,
      created: 2,
      processed: 0,
      deadLettered: 0,
      consumersConnected: 0,
      closed: false,
      drained: false,
    } satisfies QueueGauges);
    expect(core.snapshot().oldestJobAgeMs).toBe(350);

    // Once job 1 is taken, job 2 is the oldest one waiting.
    core.attach("c", 1, new RecordingConsumerSink());
    expect(core.gauges().oldestJobAgeMs).toBe(100);

    core.attach("d", 1, new RecordingConsumerSink());
    expect(core.gauges().oldestJobAgeMs).toBe(0);
  });
});

describe("BrokerCore drain with retries", () => {
  it("drain waits for jobs waiting to retry", () => {
    const { core, clock } = setup({ retryBackoff: { minMs: 100, maxMs: 1_000 }, random: () => 0 });
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.close();

    core.nack(session, [nackOf(sink.latest(1), "flaky")]);

    expect(core.drained).toBe(false);
    expect(core.gauges()).toMatchObject({ queued: 0, inFlight: 0, waitingRetry: 1 });
    expect(sink.endCalls).toBe(0);
    expect(results.finishes).toEqual([]);

    clock.advance(49);
    expect(core.drained).toBe(false);

    clock.advance(1);
    expect(core.drained).toBe(false);
    expect(sink.latest(1).attempt).toBe(2);

    core.acknowledge(session, [ackOf(sink.latest(1))]);
    expect(core.drained).toBe(true);
    expect(sink.endCalls).toBe(1);
    expect(results.finishes).toHaveLength(1);
    expect(results.finishes[0]).toMatchObject({ waitingRetry: 0, processed: 1, failedAttempts: 1 });
  });

  it("drain counts dead letters as settled", () => {
    const { core } = setup();
    const results = new RecordingResultSink();
    core.subscribe(results);
    const sink = new RecordingConsumerSink();
    const session = core.attach("c", 1, sink);
    core.offer("p", makeJobs(1));
    core.close();

    core.nack(session, [nackOf(sink.latest(1), "bad input", true)]);

    expect(core.drained).toBe(true);
    expect(sink.endCalls).toBe(1);
    expect(results.finishes[0]).toMatchObject({ created: 1, processed: 0, deadLettered: 1, deadLetters: 1 });
  });
});
