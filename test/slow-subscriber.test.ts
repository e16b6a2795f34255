import { Code, ConnectError } from "@connectrpc/connect";
import { BrokerService, connectTo, type Result, type SubscribeResultsResponse } from "@mpmc/common";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { exitOf } from "./support/process-exit.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { expectOneResultPerJob, idRange, ResultSubscription } from "./support/results.js";
import { consumerIn, expectJobsAccountedFor, statsOf } from "./support/stats.js";
import { waitFor } from "./support/wait.js";

type BrokerClient = TestBroker["client"];

let broker: TestBroker | undefined;
const processes: CliProcess[] = [];
const scriptedConsumers: ScriptedConsumer[] = [];
const subscriptions: ResultSubscription[] = [];
const aborts: AbortController[] = [];

afterEach(async () => {
  for (const abort of aborts.splice(0)) {
    abort.abort();
  }
  for (const consumer of scriptedConsumers.splice(0)) {
    consumer.close();
  }
  for (const subscription of subscriptions.splice(0)) {
    subscription.cancel();
  }
  for (const proc of processes.splice(0)) {
    killIfRunning(proc);
    await proc.exited;
  }
  await broker?.stop();
  broker = undefined;
});

function subscribe(client: BrokerClient, subscriberId: string, after: bigint | "now" = 0n): ResultSubscription {
  const subscription = new ResultSubscription(client, subscriberId, after);
  subscriptions.push(subscription);
  return subscription;
}

function startProcess(args: string[]): CliProcess {
  const proc = startCli(args);
  processes.push(proc);
  return proc;
}

/** Ids of the maximum length, 128 characters, so that each result is large and fills flow-control windows sooner. */
function longId(prefix: string): string {
  return prefix.padEnd(128, "x");
}

/** Publishes jobs with data 1..count on one stream, in batches of 500. */
async function publishJobs(client: BrokerClient, producerId: string, count: number): Promise<void> {
  async function* requests() {
    for (let first = 1; first <= count; first += 500) {
      const last = Math.min(count, first + 499);
      yield { producerId, jobs: idRange(first, last).map((data) => ({ data })) };
    }
  }
  const response = await client.publish(requests());
  expect(response.accepted).toBe(BigInt(count));
}

/**
 * Reads a stream to its end, with a bound on each read. Returns the results
 * it carried and the error it ended with, or undefined when it ended with OK.
 */
async function drainStream(
  iterator: AsyncIterator<SubscribeResultsResponse>,
  maxMessages: number,
): Promise<{ results: Result[]; error: ConnectError | undefined }> {
  const results: Result[] = [];
  for (let i = 0; i < maxMessages; i++) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), 10_000);
    });
    let next: IteratorResult<SubscribeResultsResponse> | "timeout";
    try {
      next = await Promise.race([iterator.next(), timeout]);
    } catch (err) {
      return { results, error: ConnectError.from(err) };
    } finally {
      clearTimeout(timer);
    }
    if (next === "timeout") {
      throw new Error(`the stream sent no message and did not end within 10 s, after ${results.length} results`);
    }
    if (next.done === true) {
      return { results, error: undefined };
    }
    if (next.value.kind.case === "results") {
      results.push(...next.value.kind.value.results);
    }
  }
  throw new Error(`the stream sent more than ${maxMessages} messages`);
}

describe("slow subscriber", () => {
  it("ends a subscriber that falls behind", async () => {
    const jobCount = 2000;
    const window = 50;
    broker = await startTestBroker({ resultWindow: window, capacity: jobCount });
    const { client, address } = broker;

    const normal = subscribe(client, "normal");
    // The slow subscriber has its own connection, so its unread stream cannot
    // use up a connection flow-control window that the other calls share.
    const slowClient = connectTo(BrokerService, address);
    const slowAbort = new AbortController();
    aborts.push(slowAbort);
    const slow = slowClient
      .subscribeResults({ subscriberId: "slow", afterSequence: 0n }, { signal: slowAbort.signal })
      [Symbol.asyncIterator]();
    await waitFor("both subscribers to connect", async () => (await statsOf(client)).subscribersConnected === 2);

    const producerId = longId("producer-");
    await publishJobs(client, producerId, jobCount);
    const consumerId = longId("consumer-");
    const consumer = startProcess([
      "consumer", "--broker", address, "--id", consumerId, "--credit", "4", "--work-ms", "2-4", "--log-level", "info",
    ]);

    await waitFor("every job to be processed", async () => (await statsOf(client)).processed === BigInt(jobCount), 40_000);
    let stats = await statsOf(client);
    expect(stats.created).toBe(BigInt(jobCount));
    expect(stats.inFlight).toBe(0n);
    expect(stats.redelivered).toBe(0n);
    expect(stats.lastResultSequence).toBe(BigInt(jobCount));
    expect(stats.firstKeptResultSequence).toBe(BigInt(jobCount - window + 1));
    expect(consumerIn(stats, consumerId).processed).toBe(BigInt(jobCount));
    expectJobsAccountedFor(stats);

    // The normal subscriber kept up and received every result in order.
    await waitFor("every result at the normal subscriber", () => normal.results.length >= jobCount || normal.ended !== undefined);
    expect(normal.ended).toBeUndefined();
    expectOneResultPerJob(normal.results, idRange(1, jobCount));
    expect(normal.results.map((r) => r.resultSequence)).toEqual(idRange(1, jobCount));

    // Reading the slow stream now yields what the buffers held, then the error.
    const { results: slowResults, error } = await drainStream(slow, jobCount + 10);
    expect(error?.code).toBe(Code.ResourceExhausted);
    expect(error?.rawMessage).toContain("result-window");
    expect(slowResults.length).toBeLessThan(jobCount);
    // What it did receive has no gaps, because the broker ended it instead of skipping results.
    expect(slowResults.map((r) => r.resultSequence)).toEqual(idRange(1, slowResults.length));

    await client.closeQueue({});
    expect(await exitOf(consumer, "the consumer")).toBe(0);
    await waitFor("the normal result stream to end", () => normal.ended);
    expect(normal.ended).toBe("ok");
    expect(normal.finalStats?.processed).toBe(BigInt(jobCount));
    stats = await statsOf(client);
    expect(stats.subscribersConnected).toBe(0);
  });

  it("resumes after a kept sequence", async () => {
    const window = 50;
    broker = await startTestBroker({ resultWindow: window, capacity: 200 });
    const { client } = broker;
    const consumer = new ScriptedConsumer(client, "consumer-1", 100);
    scriptedConsumers.push(consumer);
    await publishJobs(client, "producer-1", 100);
    await waitFor("100 deliveries", () => consumer.deliveries.length === 100);

    // 80 results, so the window keeps sequences 31 to 80.
    await consumer.ack(consumer.deliveries.slice(0, 80));
    await waitFor("80 jobs to be processed", async () => (await statsOf(client)).processed === 80n);
    const stats = await statsOf(client);
    expect(stats.lastResultSequence).toBe(80n);
    expect(stats.firstKeptResultSequence).toBe(31n);

    const fromMiddle = subscribe(client, "from-60", 60n);
    const fromOldest = subscribe(client, "from-30", 30n);
    const tooOld = subscribe(client, "from-29", 29n);
    const fromNow = subscribe(client, "from-now", "now");
    await waitFor("the kept results after 60", () => fromMiddle.results.length >= 20);
    await waitFor("the kept results after 30", () => fromOldest.results.length >= 50);
    await waitFor("the too old subscription to fail", () => tooOld.ended);
    expect(tooOld.error?.code).toBe(Code.OutOfRange);
    expect(tooOld.error?.rawMessage).toBe("after_sequence 29 is too old: the oldest result kept is 31; subscribe without after_sequence");
    expect(tooOld.results).toHaveLength(0);
    await waitFor("3 subscribers to connect", async () => (await statsOf(client)).subscribersConnected === 3);
    expect(fromNow.results).toHaveLength(0);

    // The resumed streams go on with the results settled after they subscribed.
    await consumer.ack(consumer.deliveries.slice(80));
    await client.closeQueue({});
    await waitFor("the result streams to end", () => fromMiddle.ended && fromOldest.ended && fromNow.ended);
    expect(fromMiddle.ended).toBe("ok");
    expect(fromOldest.ended).toBe("ok");
    expect(fromNow.ended).toBe("ok");
    expect(fromMiddle.results.map((r) => r.resultSequence)).toEqual(idRange(61, 100));
    expect(fromOldest.results.map((r) => r.resultSequence)).toEqual(idRange(31, 100));
    expect(fromNow.results.map((r) => r.resultSequence)).toEqual(idRange(81, 100));
    expectOneResultPerJob(fromOldest.results, consumer.deliveries.slice(30).map((d) => d.job?.id ?? 0n));
    expect(fromMiddle.finalStats?.processed).toBe(100n);
    expect(fromMiddle.finalStats?.drained).toBe(true);
  });
});
