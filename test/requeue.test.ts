import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";
import { ResultSubscription } from "./support/results.js";
import { exitOf } from "./support/process-exit.js";
import { consumerIn, statsOf } from "./support/stats.js";

type BrokerClient = TestBroker["client"];

let broker: TestBroker | undefined;
let tempDir: string | undefined;
const processes: CliProcess[] = [];
const scriptedConsumers: ScriptedConsumer[] = [];
const subscriptions: ResultSubscription[] = [];

afterEach(async () => {
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
  if (tempDir !== undefined) {
    await rm(tempDir, { recursive: true, force: true });
    tempDir = undefined;
  }
});

function subscribe(client: BrokerClient, subscriberId: string): ResultSubscription {
  const subscription = new ResultSubscription(client, subscriberId, "now");
  subscriptions.push(subscription);
  return subscription;
}

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

describe("requeue", () => {
  it("requeues held jobs when a consumer is killed", async () => {
    broker = await startTestBroker();
    const { client, address } = broker;
    tempDir = await mkdtemp(join(tmpdir(), "mpmc-requeue-"));
    const handlerPath = join(tempDir, "never-finishes.mjs");
    await writeFile(handlerPath, "export default async () => new Promise(() => {});\n");

    // Subscribed before any job exists, so it receives every result.
    const subscription = subscribe(client, "requeue-test");
    const dataById = new Map<bigint, bigint>();
    for (let data = 11; data <= 16; data++) {
      const { job } = await client.submit({ producerId: "producer-1", job: { data: BigInt(data) } });
      dataById.set(job?.id ?? 0n, BigInt(data));
    }
    const jobIds = [...dataById.keys()];

    const stuck = startProcess([
      "consumer", "--broker", address, "--id", "stuck", "--credit", "4", "--handler", handlerPath, "--log-level", "info",
    ]);
    await waitFor("the stuck consumer to hold 4 jobs", async () => {
      const stats = await statsOf(client);
      return stats.consumers.find((c) => c.consumerId === "stuck")?.inFlight === 4n;
    });
    stuck.child.kill("SIGKILL");
    expect(await exitOf(stuck, "the stuck consumer")).toBe("SIGKILL");

    await waitFor("the killed consumer's jobs to return", async () => (await statsOf(client)).redelivered === 4n);
    let stats = await statsOf(client);
    expect(stats.inFlight).toBe(0n);
    expect(stats.queued).toBe(6n);
    expect(stats.processed).toBe(0n);
    expect(stats.consumersConnected).toBe(0);
    expect(consumerIn(stats, "stuck").connected).toBe(false);
    expect(consumerIn(stats, "stuck").inFlight).toBe(0n);
    expect(consumerIn(stats, "stuck").processed).toBe(0n);

    await client.closeQueue({});
    const worker = startProcess([
      "consumer", "--broker", address, "--id", "worker", "--credit", "2", "--work-ms", "5-10", "--log-level", "info",
    ]);
    expect(await exitOf(worker, "the worker consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");

    // Every job has exactly one result, with the output of the default handler.
    expect(subscription.results.map((r) => r.jobId).sort((a, b) => Number(a - b))).toEqual(jobIds);
    for (const result of subscription.results) {
      expect(result.output, `output of job ${result.jobId}`).toBe(2n * (dataById.get(result.jobId) ?? 0n));
      expect(result.consumerId, `consumer of job ${result.jobId}`).toBe("worker");
    }
    // The killed consumer held the 4 oldest jobs, and they came back with the attempt raised.
    const attempts = subscription.results.map((r) => [r.jobId, r.attempt]).sort((a, b) => Number((a[0] as bigint) - (b[0] as bigint)));
    expect(attempts).toEqual(jobIds.map((id, i) => [id, i < 4 ? 2 : 1]));

    expect(subscription.finalStats?.drained).toBe(true);
    expect(subscription.finalStats?.created).toBe(6n);
    expect(subscription.finalStats?.processed).toBe(6n);

    stats = await statsOf(client);
    expect(stats.created).toBe(6n);
    expect(stats.processed).toBe(6n);
    expect(stats.redelivered).toBe(4n);
    expect(stats.rejectedResults).toBe(0n);
    expect(consumerIn(stats, "worker").processed).toBe(6n);
    expect(consumerIn(stats, "stuck").processed).toBe(0n);
  });

  it("rejects results for jobs the consumer does not hold", async () => {
    broker = await startTestBroker();
    const { client } = broker;
    for (const data of [1n, 2n]) {
      await client.submit({ producerId: "producer-1", job: { data } });
    }
    const holder = attachScripted(client, "holder", 2);
    await waitFor("2 deliveries to the holder", () => holder.deliveries.length === 2);
    const other = attachScripted(client, "other", 1);
    await waitFor("the other consumer to connect", async () => (await statsOf(client)).consumersConnected === 2);

    const [firstDelivery, secondDelivery] = holder.deliveries;
    const firstJob = firstDelivery?.job;
    const secondJob = secondDelivery?.job;
    if (firstDelivery === undefined || secondDelivery === undefined || firstJob === undefined || secondJob === undefined) {
      throw new Error("the holder received deliveries without jobs");
    }

    const unknownJobId = 999n;
    await holder.send({
      case: "acks",
      value: { acks: [{ jobId: unknownJobId, leaseToken: firstDelivery.leaseToken, output: 0n }] },
    });
    const wrongToken = firstDelivery.leaseToken + 100n;
    await holder.send({
      case: "acks",
      value: { acks: [{ jobId: firstJob.id, leaseToken: wrongToken, output: 2n * firstJob.data }] },
    });
    // The right token, sent by a consumer that does not hold the job.
    await other.send({
      case: "acks",
      value: { acks: [{ jobId: secondJob.id, leaseToken: secondDelivery.leaseToken, output: 2n * secondJob.data }] },
    });
    await waitFor("2 rejections to the holder", () => holder.rejections.length >= 2);
    await waitFor("1 rejection to the other consumer", () => other.rejections.length >= 1);

    expect(holder.rejections).toHaveLength(2);
    expect(holder.rejections[0]?.jobId).toBe(unknownJobId);
    expect(holder.rejections[0]?.reason).toBe(`job ${unknownJobId} is not in flight`);
    expect(holder.rejections[1]?.jobId).toBe(firstJob.id);
    expect(holder.rejections[1]?.leaseToken).toBe(wrongToken);
    expect(holder.rejections[1]?.reason).toBe(`lease_token ${wrongToken} is not the current delivery of job ${firstJob.id}`);
    expect(other.rejections).toHaveLength(1);
    expect(other.rejections[0]?.jobId).toBe(secondJob.id);
    expect(other.rejections[0]?.reason).toBe(`job ${secondJob.id} is leased to another consumer`);

    let stats = await statsOf(client);
    expect(stats.rejectedResults).toBe(3n);
    expect(consumerIn(stats, "holder").rejectedResults).toBe(2n);
    expect(consumerIn(stats, "other").rejectedResults).toBe(1n);
    expect(stats.processed).toBe(0n);
    expect(stats.inFlight).toBe(2n);
    expect(consumerIn(stats, "holder").inFlight).toBe(2n);

    // The rejected results left the leases intact, so the holder can still settle both jobs.
    await holder.ack([firstDelivery, secondDelivery]);
    await waitFor("both jobs to be processed", async () => (await statsOf(client)).processed === 2n);
    stats = await statsOf(client);
    expect(stats.inFlight).toBe(0n);
    expect(stats.rejectedResults).toBe(3n);
    expect(consumerIn(stats, "holder").processed).toBe(2n);
    expect(consumerIn(stats, "other").processed).toBe(0n);
    expect(holder.rejections).toHaveLength(2);
  });
});
