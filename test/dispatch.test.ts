import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";
import { exitOf, finalReportOf } from "./support/process-exit.js";
import { consumerIn, statsOf } from "./support/stats.js";

type BrokerClient = TestBroker["client"];

let broker: TestBroker | undefined;
const processes: CliProcess[] = [];
const scriptedConsumers: ScriptedConsumer[] = [];

afterEach(async () => {
  for (const consumer of scriptedConsumers.splice(0)) {
    consumer.close();
  }
  for (const proc of processes.splice(0)) {
    killIfRunning(proc);
    await proc.exited;
  }
  await broker?.stop();
  broker = undefined;
});

function startProcess(args: string[]): CliProcess {
  const proc = startCli(args);
  processes.push(proc);
  return proc;
}

function attachScripted(client: BrokerClient, consumerId: string, credit: number): ScriptedConsumer {
  const consumer = new ScriptedConsumer(client, consumerId, credit);
  scriptedConsumers.push(consumer);
  return consumer;
}

function consumerArgs(address: string, id: string, credit: number, workMs: string): string[] {
  return ["consumer", "--broker", address, "--id", id, "--credit", String(credit), "--work-ms", workMs, "--log-level", "info"];
}

describe("dispatch", () => {
  it("gives more jobs to a faster consumer", async () => {
    const jobCount = 60;
    broker = await startTestBroker({ capacity: 100 });
    const { client, address } = broker;
    const fast = startProcess(consumerArgs(address, "fast", 1, "5-10"));
    const slow = startProcess(consumerArgs(address, "slow", 1, "200-250"));

    // Both consumers are idle when the jobs arrive, so neither gets a head start.
    await waitFor("both consumers to connect", async () => (await statsOf(client)).consumersConnected === 2);

    // One Publish request with every job, so the whole batch is queued at once.
    const producer = startProcess([
      "producer", "--broker", address, "--id", "producer-1",
      "--count", String(jobCount), "--batch-size", String(jobCount), "--log-level", "info",
    ]);
    expect(await exitOf(producer, "the producer")).toBe(0);
    const close = await client.closeQueue({});
    expect(close.alreadyClosed).toBe(false);
    expect(close.stats?.created).toBe(BigInt(jobCount));

    expect(await exitOf(fast, "the fast consumer")).toBe(0);
    expect(await exitOf(slow, "the slow consumer")).toBe(0);

    const stats = await statsOf(client);
    expect(stats.created).toBe(BigInt(jobCount));
    expect(stats.processed).toBe(BigInt(jobCount));
    expect(stats.inFlight).toBe(0n);
    expect(stats.queued).toBe(0n);
    expect(stats.drained).toBe(true);
    expect(stats.redelivered).toBe(0n);
    expect(stats.rejectedResults).toBe(0n);
    expect(stats.failedAttempts).toBe(0n);
    expect(stats.producers.find((p) => p.producerId === "producer-1")?.created).toBe(BigInt(jobCount));

    const fastProcessed = consumerIn(stats, "fast").processed;
    const slowProcessed = consumerIn(stats, "slow").processed;
    expect(fastProcessed + slowProcessed).toBe(BigInt(jobCount));
    // The slow consumer is not starved, because it was idle when the batch arrived.
    expect(slowProcessed).toBeGreaterThanOrEqual(1n);
    // One slow job takes at least 200 ms, so the fast consumer runs many jobs in that time.
    expect(fastProcessed).toBeGreaterThan(3n * slowProcessed);

    // Each process counted the same jobs as the broker.
    expect((await finalReportOf(fast, "the fast consumer"))["processed"]).toBe(Number(fastProcessed));
    expect((await finalReportOf(slow, "the slow consumer"))["processed"]).toBe(Number(slowProcessed));
  });

  it("delivers queued jobs to a late consumer up to its credit", async () => {
    broker = await startTestBroker();
    const { client } = broker;
    const jobIds: bigint[] = [];
    for (let data = 1; data <= 10; data++) {
      const { job } = await client.submit({ producerId: "producer-1", job: { data: BigInt(data) } });
      jobIds.push(job?.id ?? 0n);
    }

    // The first consumer fills its credit and settles nothing yet.
    const first = attachScripted(client, "first", 2);
    await waitFor("2 deliveries to the first consumer", () => first.deliveries.length === 2);

    const late = attachScripted(client, "late", 3);
    await waitFor("3 deliveries to the late consumer", () => late.deliveries.length >= 3);
    let stats = await statsOf(client);
    expect(stats.queued).toBe(5n);
    expect(stats.inFlight).toBe(5n);
    expect(consumerIn(stats, "first").inFlight).toBe(2n);
    expect(consumerIn(stats, "late").inFlight).toBe(3n);
    expect(consumerIn(stats, "late").credit).toBe(3);
    expect(late.deliveries.map((d) => d.job?.id)).toEqual(jobIds.slice(2, 5));

    // Each result frees one credit, and the broker fills exactly that credit again.
    await late.ack(late.deliveries.slice(0, 3));
    await waitFor("the late consumer's second deliveries", async () => (await statsOf(client)).processed === 3n);
    await waitFor("6 deliveries to the late consumer", () => late.deliveries.length >= 6);
    stats = await statsOf(client);
    expect(stats.queued).toBe(2n);
    expect(stats.inFlight).toBe(5n);
    expect(consumerIn(stats, "late").inFlight).toBe(3n);
    expect(consumerIn(stats, "late").processed).toBe(3n);
    expect(late.deliveries.map((d) => d.job?.id)).toEqual(jobIds.slice(2, 8));
    expect(first.deliveries.map((d) => d.job?.id)).toEqual(jobIds.slice(0, 2));

    // The first consumer's credit was full, so it received nothing until it settled its jobs.
    await first.ack(first.deliveries.slice(0, 2));
    await waitFor("4 deliveries to the first consumer", () => first.deliveries.length >= 4);
    expect(first.deliveries.map((d) => d.job?.id)).toEqual([...jobIds.slice(0, 2), ...jobIds.slice(8, 10)]);

    await first.ack(first.deliveries.slice(2));
    await late.ack(late.deliveries.slice(3));
    await client.closeQueue({});
    await waitFor("both streams to end", () => first.ended !== undefined && late.ended !== undefined);
    expect(first.ended).toBe("ok");
    expect(late.ended).toBe("ok");

    stats = await statsOf(client);
    expect(stats.processed).toBe(10n);
    expect(stats.drained).toBe(true);
    expect(first.deliveries).toHaveLength(4);
    expect(late.deliveries).toHaveLength(6);
    expect(first.rejections).toHaveLength(0);
    expect(late.rejections).toHaveLength(0);
  });
});
