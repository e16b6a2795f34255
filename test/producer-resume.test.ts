import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { exitOf, killAndWait, logLineOf } from "./support/process-exit.js";
import { startCli, type CliProcess } from "./support/processes.js";
import { expectOneResultPerJob, idRange, ResultSubscription } from "./support/results.js";
import { consumerIn, expectJobsAccountedFor, producerIn, statsOf } from "./support/stats.js";
import { startTcpProxy, type TcpProxy } from "./support/tcp-proxy.js";
import { waitFor } from "./support/wait.js";

let broker: TestBroker | undefined;
let proxy: TcpProxy | undefined;
const processes: CliProcess[] = [];
const subscriptions: ResultSubscription[] = [];

afterEach(async () => {
  for (const subscription of subscriptions.splice(0)) {
    subscription.cancel();
  }
  for (const proc of processes.splice(0)) {
    await killAndWait(proc);
  }
  await proxy?.close();
  proxy = undefined;
  await broker?.stop();
  broker = undefined;
});

function startProcess(args: string[]): CliProcess {
  const proc = startCli(args);
  processes.push(proc);
  return proc;
}

function startProducer(address: string, count: number): CliProcess {
  return startProcess([
    "producer", "--broker", address, "--id", "resuming", "--count", String(count), "--batch-size", "50", "--log-level", "info",
  ]);
}

describe("producer resume", () => {
  it("resumes a cut stream without loss", async () => {
    const jobCount = 3_000;
    broker = await startTestBroker({ capacity: 100 });
    const { client, address } = broker;
    proxy = await startTcpProxy(broker.broker.port);
    const subscription = new ResultSubscription(client, "producer-resume");
    subscriptions.push(subscription);

    // The consumer connects directly, so only the producer's connection is cut.
    const consumer = startProcess([
      "consumer", "--broker", address, "--id", "drainer", "--credit", "10", "--work-ms", "5-15", "--log-level", "info",
    ]);
    await waitFor("the consumer to connect", async () => (await statsOf(client)).consumersConnected === 1);

    // The queue's capacity is 100 jobs, so the broker takes each batch of 50 a few jobs
    // at a time as room frees up, and a cut almost always falls inside a batch.
    const producer = startProducer(proxy.address, jobCount);
    let cuts = 0;
    for (const threshold of [600n, 1_400n, 2_200n]) {
      await waitFor(`${threshold} jobs created`, async () => (await statsOf(client)).created >= threshold);
      cuts += proxy.cutAll() > 0 ? 1 : 0;
    }
    expect(cuts).toBe(3);
    expect(await exitOf(producer, "the producer", 40_000)).toBe(0);

    let stats = await statsOf(client);
    expect(stats.created).toBe(BigInt(jobCount));
    expect(producerIn(stats, "resuming").created).toBe(BigInt(jobCount));
    expect(producerIn(stats, "resuming").lastSequence).toBe(BigInt(jobCount));
    expect((await client.getProducerCursor({ producerId: "resuming" })).lastSequence).toBe(BigInt(jobCount));
    expectJobsAccountedFor(stats);

    // The producer's last log line counts the same jobs as the broker.
    const report = logLineOf(producer, "producer finished");
    expect(report?.["created"]).toBe(jobCount);
    expect(report?.["firstSequence"]).toBe(1);
    expect(report?.["lastSequence"]).toBe(jobCount);
    expect(report?.["duplicates"]).toBe(Number(stats.duplicatesRefused));
    expect(report?.["reconnects"]).toBeGreaterThanOrEqual(cuts);
    expect(proxy.accepted()).toBeGreaterThan(cuts);

    // The same producer id started again goes on after the broker's cursor.
    const again = startProducer(proxy.address, 10);
    expect(await exitOf(again, "the restarted producer")).toBe(0);
    const againReport = logLineOf(again, "producer finished");
    expect(againReport?.["created"]).toBe(10);
    expect(againReport?.["firstSequence"]).toBe(jobCount + 1);
    expect(againReport?.["lastSequence"]).toBe(jobCount + 10);
    stats = await statsOf(client);
    expect(stats.created).toBe(BigInt(jobCount + 10));
    expect(producerIn(stats, "resuming").lastSequence).toBe(BigInt(jobCount + 10));
    expect(producerIn(stats, "resuming").created).toBe(BigInt(jobCount + 10));

    await client.closeQueue({});
    expect(await exitOf(consumer, "the consumer", 40_000)).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    expectOneResultPerJob(subscription.results, idRange(1, jobCount + 10));

    stats = await statsOf(client);
    expect(stats.processed).toBe(BigInt(jobCount + 10));
    expect(stats.redelivered).toBe(0n);
    expect(stats.rejectedResults).toBe(0n);
    expect(consumerIn(stats, "drainer").processed).toBe(BigInt(jobCount + 10));
    expectJobsAccountedFor(stats);
  });
});
