import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { msOfTimestamp, type BrokerStats } from "@mpmc/common";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { exitOf, killAndWait } from "./support/process-exit.js";
import { startCli, type CliProcess } from "./support/processes.js";
import { expectOneResultPerJob, ResultSubscription } from "./support/results.js";
import { accountedJobs, consumerIn, expectJobsAccountedFor, statsOf } from "./support/stats.js";
import { waitFor } from "./support/wait.js";

type BrokerClient = TestBroker["client"];

let broker: TestBroker | undefined;
let tempDir: string | undefined;
const processes: CliProcess[] = [];
const subscriptions: ResultSubscription[] = [];

afterEach(async () => {
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
 * A handler that fails job data 7 while the file named by POISON_FILE exists,
 * fails job data 13 as not retryable, and returns data * 2 for the rest.
 */
const handlerSource = `
import { existsSync } from "node:fs";

export default async function handler(job) {
  if (job.data === 7n && existsSync(process.env.POISON_FILE)) {
    throw new Error(\`poisoned input in job \${job.id}, attempt \${job.attempt}\`);
  }
  if (job.data === 13n) {
    throw Object.assign(new Error(\`job \${job.id} can never succeed\`), { permanent: true });
  }
  return job.data * 2n;
}
`;

interface HandlerFiles {
  handlerPath: string;
  poisonPath: string;
}

async function writeHandler(): Promise<HandlerFiles> {
  tempDir = await mkdtemp(join(tmpdir(), "mpmc-dead-letters-"));
  const handlerPath = join(tempDir, "poison-handler.mjs");
  await writeFile(handlerPath, handlerSource);
  return { handlerPath, poisonPath: join(tempDir, "poison") };
}

function subscribe(client: BrokerClient, subscriberId: string): ResultSubscription {
  const subscription = new ResultSubscription(client, subscriberId);
  subscriptions.push(subscription);
  return subscription;
}

function startProcess(args: string[], env: Record<string, string> = {}): CliProcess {
  const proc = startCli(args, env);
  processes.push(proc);
  return proc;
}

async function submitJobs(client: BrokerClient, data: bigint[]): Promise<Map<bigint, bigint>> {
  const idsByData = new Map<bigint, bigint>();
  for (const value of data) {
    const { job } = await client.submit({ producerId: "producer-1", job: { data: value } });
    if (job === undefined) {
      throw new Error(`Submit of data ${value} returned no job`);
    }
    idsByData.set(value, job.id);
  }
  return idsByData;
}

/**
 * Polls the stats until check() passes, and asserts at every snapshot on the
 * way that the counters account for every created job.
 */
async function waitForStats(client: BrokerClient, description: string, check: (stats: BrokerStats) => boolean): Promise<BrokerStats> {
  const unbalanced: string[] = [];
  const stats = await waitFor(description, async () => {
    const current = await statsOf(client);
    if (accountedJobs(current) !== current.created) {
      unbalanced.push(`created ${current.created}, accounted for ${accountedJobs(current)}`);
    }
    return check(current) ? current : undefined;
  });
  expect(unbalanced, "snapshots whose counters do not add up to created").toEqual([]);
  return stats;
}

describe("dead letters", () => {
  it("dead-letters and requeues a poison job", async () => {
    broker = await startTestBroker({ maxAttempts: 3, retryBackoff: { minMs: 50, maxMs: 200 } });
    const { client, address } = broker;
    const { handlerPath, poisonPath } = await writeHandler();
    await writeFile(poisonPath, "");
    const subscription = subscribe(client, "dead-letters");
    const idsByData = await submitJobs(client, [1n, 7n, 2n, 3n]);
    const poisonId = idsByData.get(7n) ?? 0n;

    const consumer = startProcess(
      ["consumer", "--broker", address, "--id", "worker", "--credit", "2", "--handler", handlerPath, "--log-level", "info"],
      { POISON_FILE: poisonPath },
    );
    let stats = await waitForStats(client, "the poison job to be dead-lettered", (s) => s.deadLetters === 1n && s.processed === 3n);
    expect(stats.created).toBe(4n);
    expect(stats.failedAttempts).toBe(3n);
    expect(stats.deadLettered).toBe(1n);
    expect(stats.waitingRetry).toBe(0n);
    expect(stats.queued).toBe(0n);
    expect(stats.inFlight).toBe(0n);
    expect(stats.redelivered).toBe(0n);
    expect(consumerIn(stats, "worker").failedAttempts).toBe(3n);
    expectJobsAccountedFor(stats);

    // The dead letter keeps the job at its last attempt, with the last error.
    const listed = await client.listDeadLetters({});
    expect(listed.total).toBe(1n);
    expect(listed.deadLetters).toHaveLength(1);
    const entry = listed.deadLetters[0];
    expect(entry?.job?.id).toBe(poisonId);
    expect(entry?.job?.data).toBe(7n);
    expect(entry?.job?.attempt).toBe(3);
    expect(entry?.consumerId).toBe("worker");
    expect(entry?.error).toBe(`failed 3 of 3 attempts: poisoned input in job ${poisonId}, attempt 3`);
    expect(msOfTimestamp(entry?.deadLetteredAt)).toBeGreaterThan(0);

    const list = startProcess(["dead-letters", "list", "--broker", address]);
    expect(await exitOf(list, "dead-letters list")).toBe(0);
    expect(list.stdout()).toBe(
      `job ${poisonId} from producer-1 after attempt 3 on worker: failed 3 of 3 attempts: poisoned input in job ${poisonId}, attempt 3\n` +
        "1 shown, 1 held\n",
    );

    // Once the cause is gone, a requeued dead letter starts again at attempt 1 and succeeds.
    await rm(poisonPath);
    const requeue = startProcess(["dead-letters", "requeue", String(poisonId), "--broker", address]);
    expect(await exitOf(requeue, "dead-letters requeue")).toBe(0);
    expect(requeue.stdout()).toBe("1 dead letters requeued\n");
    stats = await waitForStats(client, "the requeued job to be processed", (s) => s.processed === 4n);
    expect(stats.deadLetters).toBe(0n);
    // dead_lettered counts jobs held in the dead letters or purged from them,
    // so a requeued job no longer counts, and created still adds up.
    expect(stats.deadLettered).toBe(0n);
    expect(stats.failedAttempts).toBe(3n);
    expectJobsAccountedFor(stats);
    expect((await client.listDeadLetters({})).total).toBe(0n);

    await client.closeQueue({});
    expect(await exitOf(consumer, "the consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    const byJob = expectOneResultPerJob(subscription.results, [...idsByData.values()]);
    expect(byJob.get(poisonId)?.attempt).toBe(1);
    expect(byJob.get(poisonId)?.output).toBe(14n);

    stats = await statsOf(client);
    expect(stats.created).toBe(4n);
    expect(stats.processed).toBe(4n);
    expect(stats.drained).toBe(true);
    expect(consumerIn(stats, "worker").processed).toBe(4n);
    expectJobsAccountedFor(stats);
  });

  it("dead-letters and purges a permanent failure", async () => {
    broker = await startTestBroker({ maxAttempts: 3, retryBackoff: { minMs: 50, maxMs: 200 } });
    const { client, address } = broker;
    const { handlerPath, poisonPath } = await writeHandler();
    const subscription = subscribe(client, "permanent");
    const idsByData = await submitJobs(client, [1n, 13n, 2n]);
    const permanentId = idsByData.get(13n) ?? 0n;

    const consumer = startProcess(
      ["consumer", "--broker", address, "--id", "worker", "--credit", "2", "--handler", handlerPath, "--log-level", "info"],
      { POISON_FILE: poisonPath },
    );
    let stats = await waitForStats(client, "the failing job to be dead-lettered", (s) => s.deadLetters === 1n && s.processed === 2n);
    expect(stats.failedAttempts).toBe(1n);
    expect(stats.deadLettered).toBe(1n);
    expect(stats.waitingRetry).toBe(0n);
    expectJobsAccountedFor(stats);

    const { deadLetters } = await client.listDeadLetters({});
    expect(deadLetters.map((d) => d.job?.id)).toEqual([permanentId]);
    expect(deadLetters[0]?.job?.attempt).toBe(1);
    expect(deadLetters[0]?.error).toBe(`rejected as not retryable: job ${permanentId} can never succeed`);

    const purge = startProcess(["dead-letters", "purge", String(permanentId), "--broker", address]);
    expect(await exitOf(purge, "dead-letters purge")).toBe(0);
    expect(purge.stdout()).toBe("1 dead letters purged\n");
    stats = await statsOf(client);
    expect(stats.deadLetters).toBe(0n);
    // A purged job stays counted as dead-lettered, so created still adds up.
    expect(stats.deadLettered).toBe(1n);
    expectJobsAccountedFor(stats);
    expect((await client.listDeadLetters({})).total).toBe(0n);

    // A purged job is gone for good, so requeueing it finds nothing.
    expect((await client.requeueDeadLetters({ jobIds: [permanentId] })).requeued).toBe(0n);

    await client.closeQueue({});
    expect(await exitOf(consumer, "the consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    expectOneResultPerJob(subscription.results, [idsByData.get(1n) ?? 0n, idsByData.get(2n) ?? 0n]);
    expect(subscription.finalStats?.deadLettered).toBe(1n);
    expect(subscription.finalStats?.processed).toBe(2n);

    stats = await statsOf(client);
    expect(stats.created).toBe(3n);
    expect(stats.processed).toBe(2n);
    expect(stats.failedAttempts).toBe(1n);
    expect(stats.drained).toBe(true);
    expectJobsAccountedFor(stats);
  });
});
