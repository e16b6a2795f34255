import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { maxCredit } from "@mpmc/broker";
import {
  ConsumeRequestSchema,
  type BrokerService,
  type BrokerStats,
  type ConsumeRequest,
  type ConsumeResponse,
  type Delivery,
  type PublishRequestSchema,
  type Rejection,
} from "@mpmc/common";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { waitFor } from "./support/wait.js";

type BrokerClient = Client<typeof BrokerService>;
type ConsumeKind = MessageInitShape<typeof ConsumeRequestSchema>["kind"];
type PublishInit = MessageInitShape<typeof PublishRequestSchema>;

/** Bounds every wait on a stream in this file. */
const streamTimeoutMs = 10_000;

const brokers: TestBroker[] = [];
const openStreams: { close(): void }[] = [];

afterEach(async () => {
  for (const stream of openStreams.splice(0)) {
    stream.close();
  }
  await Promise.all(brokers.splice(0).map((broker) => broker.stop()));
});

async function startBroker(overrides: Parameters<typeof startTestBroker>[0] = {}): Promise<BrokerClient> {
  const broker = await startTestBroker(overrides);
  brokers.push(broker);
  return broker.client;
}

/** Awaits a call that must fail and returns its error. */
async function failureOf(call: Promise<unknown>): Promise<ConnectError> {
  const outcome = await call.then(
    () => "succeeded" as const,
    (err: unknown) => err,
  );
  if (outcome === "succeeded") {
    throw new Error("expected the call to fail, but it succeeded");
  }
  expect(outcome).toBeInstanceOf(ConnectError);
  return outcome as ConnectError;
}

/** Returns the broker's stats after checking that GetStats works and created == queued + in_flight + processed. */
async function balancedStats(client: BrokerClient): Promise<BrokerStats> {
  const { stats } = await client.getStats({});
  if (stats === undefined) {
    throw new Error("GetStats returned no stats");
  }
  expect(stats.created).toBe(stats.queued + stats.inFlight + stats.processed);
  return stats;
}

async function* streamOf<T>(items: readonly T[]): AsyncGenerator<T> {
  for (const item of items) {
    yield item;
  }
}

function hello(consumerId: string, credit: number): ConsumeKind {
  return { case: "hello", value: { consumerId, credit } };
}

function jobsOf(count: number, firstData = 1): { data: bigint }[] {
  return Array.from({ length: count }, (_, i) => ({ data: BigInt(firstData + i) }));
}

/**
 * A Consume stream that sends exactly the requests the test gives it, hello
 * included, and records the responses and the status code that ends the stream.
 */
class ConsumeProbe {
  readonly deliveries: Delivery[] = [];
  readonly rejections: Rejection[] = [];
  /** The error that ended the stream, undefined while it runs or when it ended with OK. */
  error: ConnectError | undefined;
  finished = false;
  private readonly requests = createWritableIterable<ConsumeRequest>();

  constructor(client: BrokerClient) {
    openStreams.push(this);
    void this.read(client.consume(this.requests));
  }

  private async read(responses: AsyncIterable<ConsumeResponse>): Promise<void> {
    try {
      for await (const response of responses) {
        if (response.kind.case === "deliveries") {
          this.deliveries.push(...response.kind.value.deliveries);
        } else if (response.kind.case === "rejections") {
          this.rejections.push(...response.kind.value.rejections);
        }
      }
    } catch (err) {
      this.error = ConnectError.from(err);
    }
    this.finished = true;
  }

  /** Sends one request without waiting, because the broker may end the stream before it reads the next one. */
  send(kind: ConsumeKind): void {
    this.requests.write(create(ConsumeRequestSchema, { kind })).catch(() => {
      // The stream has ended, which the test checks through error and finished.
    });
  }

  /** Waits until the broker ends the stream and returns its error, undefined for OK. */
  async ended(): Promise<ConnectError | undefined> {
    await waitFor("the Consume stream to end", () => this.finished, streamTimeoutMs);
    return this.error;
  }

  close(): void {
    this.requests.close();
  }
}

function scriptedConsumer(client: BrokerClient, consumerId: string, credit: number): ScriptedConsumer {
  const consumer = new ScriptedConsumer(client, consumerId, credit);
  openStreams.push(consumer);
  return consumer;
}

async function deliveriesOf(consumer: { deliveries: Delivery[] }, count: number): Promise<Delivery[]> {
  await waitFor(`${count} deliveries`, () => consumer.deliveries.length >= count, streamTimeoutMs);
  return consumer.deliveries.slice(0, count);
}

describe("Submit", () => {
  it("rejects missing producer_id", async () => {
    const client = await startBroker();

    const err = await failureOf(client.submit({ job: { data: 1n } }));

    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("producer_id is required");
    expect((await balancedStats(client)).created).toBe(0n);
  });

  it.each([
    { name: "invalid characters", producerId: "bad id!" },
    { name: "slash", producerId: "a/b" },
    { name: "129 characters", producerId: "p".repeat(129) },
  ])("rejects producer_id with $name", async ({ producerId }) => {
    const client = await startBroker();

    const err = await failureOf(client.submit({ producerId, job: { data: 1n } }));

    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("producer_id must be 1 to 128 characters");
    expect((await balancedStats(client)).created).toBe(0n);
  });

  it("accepts 128-character producer_id", async () => {
    const client = await startBroker();

    const { job } = await client.submit({ producerId: "p".repeat(128), job: { data: 1n } });

    expect(job?.id).toBe(1n);
  });

  it("rejects missing job", async () => {
    const client = await startBroker();

    const err = await failureOf(client.submit({ producerId: "p1" }));

    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("job is required");
    expect((await balancedStats(client)).created).toBe(0n);
  });

  it("rejects payload over max-payload-bytes", async () => {
    const client = await startBroker({ maxPayloadBytes: 16 });

    const err = await failureOf(client.submit({ producerId: "p1", job: { data: 1n, payload: new Uint8Array(17) } }));
    const { job } = await client.submit({ producerId: "p1", job: { data: 2n, payload: new Uint8Array(16) } });

    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("job.payload is 17 bytes");
    expect(err.rawMessage).toContain("limit of 16 bytes (max-payload-bytes)");
    expect(job?.payload.length).toBe(16);
    expect((await balancedStats(client)).created).toBe(1n);
  });

  it("rejects too many attributes", async () => {
    const client = await startBroker({ maxAttributes: 2 });
    const attributes = { a: "1", b: "2", c: "3" };

    const err = await failureOf(client.submit({ producerId: "p1", job: { data: 1n, attributes } }));

    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("job.attributes has 3 entries");
    expect(err.rawMessage).toContain("limit of 2 (max-attributes)");
    expect((await balancedStats(client)).created).toBe(0n);
  });

  it("fails at once when full with no_wait", async () => {
    const client = await startBroker({ capacity: 2 });
    await client.submit({ producerId: "p1", job: { data: 1n } });
    await client.submit({ producerId: "p1", job: { data: 2n } });

    // The call has no deadline, so a broker that ignored no_wait would wait until the bound below.
    const call = client.submit({ producerId: "p1", job: { data: 3n }, noWait: true });
    const outcome = await Promise.race([failureOf(call), sleep(streamTimeoutMs, "still waiting" as const)]);

    expect(outcome).toBeInstanceOf(ConnectError);
    const err = outcome as ConnectError;
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("the queue is full (capacity 2)");
    const stats = await balancedStats(client);
    expect(stats.created).toBe(2n);
    expect(stats.queued).toBe(2n);
  });

  it("fails at the deadline when full", async () => {
    const client = await startBroker({ capacity: 2 });
    await client.submit({ producerId: "p1", job: { data: 1n } });
    await client.submit({ producerId: "p1", job: { data: 2n } });

    const err = await failureOf(client.submit({ producerId: "p1", job: { data: 3n } }, { timeoutMs: 300 }));

    // The broker fails the call 20 ms before the deadline, but on a slow machine the client's deadline may expire first.
    expect([Code.ResourceExhausted, Code.DeadlineExceeded]).toContain(err.code);
    if (err.code === Code.ResourceExhausted) {
      expect(err.rawMessage).toContain("stayed full (capacity 2)");
    }
    const stats = await balancedStats(client);
    expect(stats.created).toBe(2n);
    expect(stats.queued).toBe(2n);

    // The abandoned wait must not take the room that a delivery frees.
    const consumer = scriptedConsumer(client, "c1", 1);
    await deliveriesOf(consumer, 1);
    const { job } = await client.submit({ producerId: "p1", job: { data: 4n }, noWait: true });
    expect(job?.id).toBe(3n);
  });

  it("rejects after CloseQueue", async () => {
    const client = await startBroker();
    await client.closeQueue({});

    const err = await failureOf(client.submit({ producerId: "p1", job: { data: 1n } }));

    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain("the queue is closed");
    expect((await balancedStats(client)).created).toBe(0n);
  });

  it("rejects waiting submit on close", async () => {
    const client = await startBroker({ capacity: 1 });
    await client.submit({ producerId: "p1", job: { data: 1n } });

    const call = failureOf(client.submit({ producerId: "p1", job: { data: 2n } }, { timeoutMs: streamTimeoutMs }));
    await sleep(100);
    await client.closeQueue({});
    const err = await call;

    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain("the queue is closed");
    expect((await balancedStats(client)).created).toBe(1n);
  });
});

describe("Publish", () => {
  it("rejects empty jobs list", async () => {
    const client = await startBroker();

    const err = await failureOf(client.publish(streamOf<PublishInit>([{ producerId: "p1", jobs: [] }])));

    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("jobs must contain at least one job");
    expect(err.rawMessage).toContain("0 jobs of this stream were accepted");
    expect((await balancedStats(client)).created).toBe(0n);
  });

  it("rejects missing producer_id", async () => {
    const client = await startBroker();

    const err = await failureOf(client.publish(streamOf<PublishInit>([{ jobs: jobsOf(1) }])));

    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("producer_id is required");
    expect((await balancedStats(client)).created).toBe(0n);
  });

  it("rejects producer_id change mid-stream", async () => {
    const client = await startBroker();
    const requests: PublishInit[] = [
      { producerId: "p1", jobs: jobsOf(2) },
      { producerId: "p2", jobs: jobsOf(1, 3) },
    ];

    const err = await failureOf(client.publish(streamOf(requests)));

    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain(`producer_id must be the same on every request of a stream, got "p2" after "p1"`);
    expect(err.rawMessage).toContain("2 jobs of this stream were accepted, ids 1 to 2");
    const stats = await balancedStats(client);
    expect(stats.created).toBe(2n);
    expect(stats.producers.map((p) => p.producerId)).toEqual(["p1"]);
  });

  it("rejects batch over max-batch-jobs", async () => {
    const client = await startBroker({ maxBatchJobs: 3 });

    const err = await failureOf(client.publish(streamOf<PublishInit>([{ producerId: "p1", jobs: jobsOf(4) }])));
    const response = await client.publish(streamOf<PublishInit>([{ producerId: "p1", jobs: jobsOf(3) }]));

    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("jobs has 4 entries, over the limit of 3 per request (max-batch-jobs)");
    // The whole batch is checked before any of its jobs is accepted.
    expect(err.rawMessage).toContain("0 jobs of this stream were accepted");
    expect(response.accepted).toBe(3n);
    expect((await balancedStats(client)).created).toBe(3n);
  });

  it("keeps jobs accepted before invalid request", async () => {
    const client = await startBroker({ maxPayloadBytes: 8 });
    const requests: PublishInit[] = [
      { producerId: "p1", jobs: jobsOf(2, 1) },
      { producerId: "p1", jobs: jobsOf(3, 3) },
      { producerId: "p1", jobs: [{ data: 6n }, { data: 7n, payload: new Uint8Array(9) }] },
    ];

    const err = await failureOf(client.publish(streamOf(requests)));

    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("jobs[1].payload is 9 bytes");
    expect(err.rawMessage).toContain("(max-payload-bytes)");
    expect(err.rawMessage).toContain("5 jobs of this stream were accepted, ids 1 to 5");
    const stats = await balancedStats(client);
    expect(stats.created).toBe(5n);
    expect(stats.queued).toBe(5n);
    expect(stats.producers).toHaveLength(1);
    expect(stats.producers[0]?.created).toBe(5n);
  });

  it("rejects after CloseQueue", async () => {
    const client = await startBroker();
    await client.closeQueue({});

    const err = await failureOf(client.publish(streamOf<PublishInit>([{ producerId: "p1", jobs: jobsOf(1) }])));

    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain("the queue is closed");
    expect((await balancedStats(client)).created).toBe(0n);
  });
});

describe("max-message-bytes", () => {
  it("rejects oversized Submit", async () => {
    const client = await startBroker({ maxMessageBytes: 4096 });

    const err = await failureOf(client.submit({ producerId: "p1", job: { data: 1n, payload: new Uint8Array(10_240) } }));

    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("larger than max");
    expect(err.rawMessage).toContain("4096");
    const { job } = await client.submit({ producerId: "p1", job: { data: 2n, payload: new Uint8Array(1_024) } });
    expect(job?.id).toBe(1n);
    expect((await balancedStats(client)).created).toBe(1n);
  });

  it("rejects oversized Publish request", async () => {
    const client = await startBroker({ maxMessageBytes: 4096 });
    const requests: PublishInit[] = [
      { producerId: "p1", jobs: jobsOf(1) },
      { producerId: "p1", jobs: [{ data: 2n, payload: new Uint8Array(10_240) }] },
    ];

    const err = await failureOf(client.publish(streamOf(requests)));

    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("4096");
    const stats = await balancedStats(client);
    expect(stats.created).toBeLessThanOrEqual(1n);
    const response = await client.publish(streamOf<PublishInit>([{ producerId: "p1", jobs: jobsOf(2, 3) }]));
    expect(response.accepted).toBe(2n);
  });
});

describe("Consume", () => {
  it.each([
    {
      name: "acks before hello",
      requests: [{ case: "acks", value: { acks: [{ jobId: 1n, leaseToken: 1n }] } }] as ConsumeKind[],
      mentions: "acks sent before hello",
    },
    { name: "credit 0", requests: [hello("c1", 0)], mentions: "hello.credit must be at least 1" },
    { name: "credit over max", requests: [hello("c1", maxCredit + 1)], mentions: `credit must be an integer from 1 to ${maxCredit}` },
    { name: "empty consumer_id", requests: [hello("", 1)], mentions: "hello.consumer_id is required" },
    { name: "invalid consumer_id", requests: [hello("c 1", 1)], mentions: "hello.consumer_id must be 1 to 128 characters" },
    { name: "second hello", requests: [hello("c1", 1), hello("c1", 1)], mentions: "hello must be sent once" },
    { name: "request without kind", requests: [hello("c1", 1), { case: undefined }], mentions: "request has no kind" },
    {
      name: "ack with job_id 0",
      requests: [hello("c1", 1), { case: "acks", value: { acks: [{ jobId: 0n, leaseToken: 1n }] } }] as ConsumeKind[],
      mentions: "acks.acks[0].job_id must be from 1",
    },
  ])("rejects $name", async ({ requests, mentions }) => {
    const client = await startBroker();
    const probe = new ConsumeProbe(client);

    for (const request of requests) {
      probe.send(request);
    }
    const err = await probe.ended();

    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toContain(mentions);
    const stats = await balancedStats(client);
    expect(stats.consumersConnected).toBe(0);
    // The broker still serves a well-behaved consumer.
    const consumer = scriptedConsumer(client, "c1", 1);
    await client.submit({ producerId: "p1", job: { data: 1n } });
    expect((await deliveriesOf(consumer, 1))[0]?.job?.id).toBe(1n);
  });

  it("rejects duplicate consumer_id", async () => {
    const client = await startBroker();
    const first = scriptedConsumer(client, "worker-1", 1);
    await waitFor("worker-1 to connect", async () => (await balancedStats(client)).consumersConnected === 1, streamTimeoutMs);

    const duplicate = new ConsumeProbe(client);
    duplicate.send(hello("worker-1", 1));
    const err = await duplicate.ended();

    expect(err?.code).toBe(Code.AlreadyExists);
    expect(err?.rawMessage).toContain(`consumer_id "worker-1" is already connected`);
    // The first stream keeps its session and its deliveries.
    const stats = await balancedStats(client);
    expect(stats.consumersConnected).toBe(1);
    await client.submit({ producerId: "p1", job: { data: 1n } });
    expect((await deliveriesOf(first, 1))[0]?.job?.id).toBe(1n);
    expect(first.ended).toBeUndefined();
  });

  it("rejects acks for jobs not held", async () => {
    const client = await startBroker();
    const holder = scriptedConsumer(client, "holder", 1);
    const other = scriptedConsumer(client, "other", 1);
    await waitFor("both consumers to connect", async () => (await balancedStats(client)).consumersConnected === 2, streamTimeoutMs);
    await client.submit({ producerId: "p1", job: { data: 21n } });
    const delivery = await waitFor(
      "the job to be delivered",
      () => holder.deliveries[0] ?? other.deliveries[0],
      streamTimeoutMs,
    );
    const [owner, stranger] = holder.deliveries.length > 0 ? [holder, other] : [other, holder];
    const jobId = delivery.job?.id ?? 0n;

    await stranger.send({ case: "acks", value: { acks: [{ jobId, leaseToken: delivery.leaseToken, output: 42n }] } });
    await stranger.send({ case: "acks", value: { acks: [{ jobId: 999n, leaseToken: 1n, output: 1n }] } });
    await owner.send({ case: "acks", value: { acks: [{ jobId, leaseToken: delivery.leaseToken + 1n, output: 42n }] } });
    await waitFor("3 rejections", () => stranger.rejections.length === 2 && owner.rejections.length === 1, streamTimeoutMs);

    expect(stranger.rejections[0]?.reason).toContain("leased to another consumer");
    expect(stranger.rejections[1]?.reason).toContain("job 999 is not in flight");
    expect(owner.rejections[0]?.reason).toContain("is not the current delivery");
    expect(stranger.ended).toBeUndefined();
    expect(owner.ended).toBeUndefined();
    const rejectedStats = await balancedStats(client);
    expect(rejectedStats.rejectedResults).toBe(3n);
    expect(rejectedStats.processed).toBe(0n);
    expect(rejectedStats.inFlight).toBe(1n);

    // The owner still settles the job once, with its own token.
    await owner.ack([delivery]);
    await waitFor("the job to be processed", async () => (await balancedStats(client)).processed === 1n, streamTimeoutMs);
    const stats = await balancedStats(client);
    expect(stats.processed).toBe(1n);
    expect(stats.inFlight).toBe(0n);
    const ownerStats = stats.consumers.find((c) => c.consumerId === (owner === holder ? "holder" : "other"));
    const strangerStats = stats.consumers.find((c) => c.consumerId === (stranger === holder ? "holder" : "other"));
    expect(ownerStats?.processed).toBe(1n);
    expect(ownerStats?.rejectedResults).toBe(1n);
    expect(strangerStats?.processed).toBe(0n);
    expect(strangerStats?.rejectedResults).toBe(2n);
  });

  it("requeues held jobs on stream error", async () => {
    const client = await startBroker();
    await client.submit({ producerId: "p1", job: { data: 1n } });
    await client.submit({ producerId: "p1", job: { data: 2n } });
    const failing = new ConsumeProbe(client);
    failing.send(hello("failing", 2));
    await deliveriesOf(failing, 2);

    failing.send({ case: "acks", value: { acks: [{ jobId: 0n, leaseToken: 1n }] } });
    const err = await failing.ended();

    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toContain("job_id");
    const requeued = await balancedStats(client);
    expect(requeued.queued).toBe(2n);
    expect(requeued.inFlight).toBe(0n);
    expect(requeued.redelivered).toBe(2n);
    expect(requeued.consumersConnected).toBe(0);

    const next = scriptedConsumer(client, "next", 2);
    const deliveries = await deliveriesOf(next, 2);
    expect(deliveries.map((d) => d.job?.id)).toEqual([1n, 2n]);
    expect(deliveries.map((d) => d.job?.attempt)).toEqual([2, 2]);
    await next.ack(deliveries);
    await waitFor("both jobs to be processed", async () => (await balancedStats(client)).processed === 2n, streamTimeoutMs);
  });

  it("leaves no session after drain", async () => {
    const client = await startBroker();
    await client.closeQueue({});
    expect((await balancedStats(client)).drained).toBe(true);

    const late = new ConsumeProbe(client);
    late.send(hello("late", 1));
    const err = await late.ended();

    // A drained queue ends the stream with OK at once.
    expect(err).toBeUndefined();
    const stats = await balancedStats(client);
    expect(stats.consumersConnected).toBe(0);
    expect(stats.consumers.find((c) => c.consumerId === "late")?.connected).toBe(false);
    const again = new ConsumeProbe(client);
    again.send(hello("late", 1));
    expect(await again.ended()).toBeUndefined();
  });
});
