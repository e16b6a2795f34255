import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { exitOf, killAndWait, logLineOf } from "./support/process-exit.js";
import { startCli, type CliProcess } from "./support/processes.js";
import { expectOneResultPerJob, ResultSubscription } from "./support/results.js";
import { consumerIn, expectJobsAccountedFor, statsOf } from "./support/stats.js";
import { waitFor } from "./support/wait.js";

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
    await killAndWait(proc);
  }
  await broker?.stop();
  broker = undefined;
  if (tempDir !== undefined) {
    await rm(tempDir, { recursive: true, force: true });
    tempDir = undefined;
  }
});

/**
 * A handler that returns data * 2 once the file named by GATE_FILE exists, so
 * the test decides when the running job finishes. It gives up after 30 s.
 */
const gateHandlerSource = `
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

export default async function handler(job, signal) {
  for (let i = 0; i < 1500; i++) {
    if (existsSync(process.env.GATE_FILE)) {
      return job.data * 2n;
    }
    await sleep(20, undefined, { signal });
  }
  throw new Error("GATE_FILE did not appear within 30 s");
}
`;

async function submitJobs(client: BrokerClient, data: bigint[]): Promise<bigint[]> {
  const ids: bigint[] = [];
  for (const value of data) {
    const { job } = await client.submit({ producerId: "producer-1", job: { data: value } });
    if (job === undefined) {
      throw new Error(`Submit of data ${value} returned no job`);
    }
    ids.push(job.id);
  }
  return ids;
}

describe("handback", () => {
  it("hands back unstarted jobs on SIGTERM", async () => {
    broker = await startTestBroker();
    const { client, address } = broker;
    tempDir = await mkdtemp(join(tmpdir(), "mpmc-handback-"));
    const handlerPath = join(tempDir, "gate-handler.mjs");
    const gatePath = join(tempDir, "gate");
    await writeFile(handlerPath, gateHandlerSource);
    const subscription = new ResultSubscription(client, "handback");
    subscriptions.push(subscription);

    const stopping = startCli(
      [
        "consumer", "--broker", address, "--id", "stopping", "--credit", "5", "--concurrency", "1",
        "--handler", handlerPath, "--log-level", "info",
      ],
      { GATE_FILE: gatePath },
    );
    processes.push(stopping);
    await waitFor("the first consumer to connect", async () => (await statsOf(client)).consumersConnected === 1);
    const jobIds = await submitJobs(client, [1n, 2n, 3n, 4n, 5n]);
    await waitFor("the first consumer to hold 5 jobs", async () => {
      const stats = await statsOf(client);
      return stats.consumers.find((c) => c.consumerId === "stopping")?.inFlight === 5n;
    });

    // The second consumer has free credit but nothing to take while the first has every job.
    const taker = new ScriptedConsumer(client, "taker", 5);
    scriptedConsumers.push(taker);
    await waitFor("the second consumer to connect", async () => (await statsOf(client)).consumersConnected === 2);
    expect(taker.deliveries).toHaveLength(0);

    stopping.child.kill("SIGTERM");
    await waitFor("the 4 unstarted jobs at the second consumer", () => taker.deliveries.length >= 4);

    // The gate is still closed, so they arrived while the first consumer still runs its job.
    expect(taker.deliveries.map((d) => d.job?.id)).toEqual(jobIds.slice(1));
    expect(taker.deliveries.map((d) => d.job?.attempt)).toEqual([1, 1, 1, 1]);
    let stats = await statsOf(client);
    expect(stats.redelivered).toBe(0n);
    expect(stats.processed).toBe(0n);
    expect(consumerIn(stats, "stopping").connected).toBe(true);
    expect(consumerIn(stats, "stopping").inFlight).toBe(1n);
    const { leases } = await client.listLeases({ consumerId: "stopping" });
    expect(leases.map((lease) => lease.jobId)).toEqual(jobIds.slice(0, 1));
    expect(stopping.child.exitCode).toBeNull();

    await taker.ack(taker.deliveries);
    await waitFor("the 4 handed back jobs to be processed", async () => (await statsOf(client)).processed === 4n);
    // The stopping consumer takes no new job even with a free credit.
    jobIds.push(...(await submitJobs(client, [6n])));
    await waitFor("the new job at the second consumer", () => taker.deliveries.length === 5);
    expect(taker.deliveries[4]?.job?.id).toBe(jobIds[5]);
    await taker.ack(taker.deliveries.slice(4));

    // Letting the running job finish lets the first consumer exit.
    await writeFile(gatePath, "");
    expect(await exitOf(stopping, "the stopping consumer")).toBe(0);
    const report = logLineOf(stopping, "consumer stream ended");
    expect(report?.["processed"]).toBe(1);
    expect(report?.["released"]).toBe(4);
    expect(report?.["rejected"]).toBe(0);

    await client.closeQueue({});
    await waitFor("the second consumer's stream to end", () => taker.ended);
    expect(taker.ended).toBe("ok");
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    const byJob = expectOneResultPerJob(subscription.results, jobIds);
    for (const id of jobIds) {
      expect(byJob.get(id)?.attempt, `attempt of job ${id}`).toBe(1);
    }
    expect(byJob.get(jobIds[0] ?? 0n)?.consumerId).toBe("stopping");
    // The running job's result comes after every handed back job's result.
    const runningSequence = byJob.get(jobIds[0] ?? 0n)?.resultSequence ?? 0n;
    for (const id of jobIds.slice(1)) {
      expect(byJob.get(id)?.consumerId, `consumer of job ${id}`).toBe("taker");
      expect(byJob.get(id)?.resultSequence, `result_sequence of job ${id}`).toBeLessThan(runningSequence);
    }

    stats = await statsOf(client);
    expect(stats.created).toBe(6n);
    expect(stats.processed).toBe(6n);
    expect(stats.redelivered).toBe(0n);
    expect(stats.rejectedResults).toBe(0n);
    expect(stats.failedAttempts).toBe(0n);
    expect(consumerIn(stats, "stopping").processed).toBe(1n);
    expect(consumerIn(stats, "taker").processed).toBe(5n);
    expectJobsAccountedFor(stats);
  });
});
