import { setTimeout as sleep } from "node:timers/promises";
import { msOfTimestamp } from "@mpmc/common";
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
const processes: CliProcess[] = [];
const subscriptions: ResultSubscription[] = [];
const scriptedConsumers: ScriptedConsumer[] = [];

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
});

function subscribe(client: BrokerClient, subscriberId: string): ResultSubscription {
  const subscription = new ResultSubscription(client, subscriberId);
  subscriptions.push(subscription);
  return subscription;
}

function startConsumer(address: string, id: string, credit: number, workMs: string): CliProcess {
  const proc = startCli(["consumer", "--broker", address, "--id", id, "--credit", String(credit), "--work-ms", workMs, "--log-level", "info"]);
  processes.push(proc);
  return proc;
}

async function submit(client: BrokerClient, data: bigint): Promise<bigint> {
  const { job } = await client.submit({ producerId: "producer-1", job: { data } });
  if (job === undefined) {
    throw new Error(`Submit of data ${data} returned no job`);
  }
  return job.id;
}

async function inFlightOf(client: BrokerClient, consumerId: string): Promise<bigint | undefined> {
  return (await statsOf(client)).consumers.find((c) => c.consumerId === consumerId)?.inFlight;
}

describe("lease expiry", () => {
  it("rejects a stopped consumer's late results", async () => {
    broker = await startTestBroker({ leaseTimeout: 1_000 });
    const { client, address } = broker;
    const subscription = subscribe(client, "lease-expiry");

    // The handler runs far longer than the lease, so the stalled consumer is
    // still running both jobs when it is stopped.
    const stalled = startConsumer(address, "stalled", 2, "3000-3100");
    await waitFor("the stalled consumer to connect", async () => (await statsOf(client)).consumersConnected === 1);

    // The deliveries are 250 ms apart, half the consumer's extension period, so
    // the two leases run out about 250 ms apart whichever extensions were sent
    // before the stop. When both ran out together, the broker would give one of
    // them straight back to the stalled consumer, which has the fewest jobs then.
    const firstId = await submit(client, 21n);
    await waitFor("the first delivery", async () => (await inFlightOf(client, "stalled")) === 1n);
    await sleep(250);
    const secondId = await submit(client, 22n);
    await waitFor("the second delivery", async () => (await inFlightOf(client, "stalled")) === 2n);

    // The stalled consumer's credit is full, so the fast one receives nothing until a lease runs out.
    const fast = startConsumer(address, "fast", 2, "5-10");
    await waitFor("the fast consumer to connect", async () => (await statsOf(client)).consumersConnected === 2);
    let stats = await statsOf(client);
    expect(consumerIn(stats, "stalled").inFlight).toBe(2n);
    expect(consumerIn(stats, "stalled").processed).toBe(0n);
    expect(consumerIn(stats, "fast").inFlight).toBe(0n);

    stalled.child.kill("SIGSTOP");
    await waitFor("both jobs to be processed by the fast consumer", async () => {
      const current = await statsOf(client);
      return current.consumers.find((c) => c.consumerId === "fast")?.processed === 2n;
    });
    stats = await statsOf(client);
    expect(stats.redelivered).toBe(2n);
    expect(stats.lateResults).toBe(0n);
    expect(stats.rejectedResults).toBe(0n);
    expect(consumerIn(stats, "stalled").inFlight).toBe(0n);
    // Its stream is still open, because only its leases ran out.
    expect(consumerIn(stats, "stalled").connected).toBe(true);

    stalled.child.kill("SIGCONT");
    await waitFor("the stalled consumer's 2 results to be rejected", async () => (await statsOf(client)).lateResults >= 2n);
    stats = await statsOf(client);
    expect(stats.lateResults).toBe(2n);
    expect(stats.rejectedResults).toBe(2n);
    expect(stats.processed).toBe(2n);
    expect(stats.redelivered).toBe(2n);
    expect(consumerIn(stats, "stalled").processed).toBe(0n);
    expect(consumerIn(stats, "stalled").rejectedResults).toBe(2n);
    expect(consumerIn(stats, "fast").processed).toBe(2n);
    expect(consumerIn(stats, "fast").rejectedResults).toBe(0n);
    expectJobsAccountedFor(stats);

    await client.closeQueue({});
    expect(await exitOf(stalled, "the stalled consumer")).toBe(0);
    expect(await exitOf(fast, "the fast consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");

    const byJob = expectOneResultPerJob(subscription.results, [firstId, secondId]);
    for (const id of [firstId, secondId]) {
      expect(byJob.get(id)?.consumerId, `consumer of job ${id}`).toBe("fast");
      expect(byJob.get(id)?.attempt, `attempt of job ${id}`).toBe(2);
    }
    // The stalled consumer counts both results as sent, although the broker rejected them.
    expect(logLineOf(stalled, "consumer stream ended")?.["processed"]).toBe(2);

    stats = await statsOf(client);
    expect(stats.created).toBe(2n);
    expect(stats.processed).toBe(2n);
    expect(stats.drained).toBe(true);
    expect(stats.lateResults).toBe(2n);
    expect(stats.rejectedResults).toBe(2n);
    expect(stats.redelivered).toBe(2n);
    expectJobsAccountedFor(stats);
  });

  it("keeps a healthy slow consumer's jobs", async () => {
    const leaseMs = 600;
    broker = await startTestBroker({ leaseTimeout: leaseMs });
    const { client, address } = broker;
    const subscription = subscribe(client, "lease-extension");
    const jobIds: bigint[] = [];
    for (const data of [31n, 32n, 33n]) {
      jobIds.push(await submit(client, data));
    }

    const slow = startConsumer(address, "slow", 3, "1500");
    await waitFor("3 deliveries", async () => (await inFlightOf(client, "slow")) === 3n);
    const first = await client.listLeases({ consumerId: "slow" });
    expect(first.leases.map((lease) => lease.jobId)).toEqual(jobIds);

    // Past the first lease's end the consumer still holds every job under the
    // same lease token, with its deadline moved forward.
    const firstDeadlineMs = Math.max(...first.leases.map((lease) => msOfTimestamp(lease.leaseDeadline)));
    await waitFor("the first lease deadline to pass", () => Date.now() > firstDeadlineMs + 200);
    const later = await client.listLeases({ consumerId: "slow" });
    expect(later.leases.map((lease) => lease.jobId)).toEqual(jobIds);
    for (const [i, lease] of later.leases.entries()) {
      const before = first.leases[i];
      expect(lease.leaseToken, `lease token of job ${lease.jobId}`).toBe(before?.leaseToken);
      expect(lease.attempt, `attempt of job ${lease.jobId}`).toBe(1);
      expect(msOfTimestamp(lease.leaseDeadline), `lease deadline of job ${lease.jobId}`).toBeGreaterThan(firstDeadlineMs);
    }

    await client.closeQueue({});
    expect(await exitOf(slow, "the slow consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    const byJob = expectOneResultPerJob(subscription.results, jobIds);
    for (const id of jobIds) {
      expect(byJob.get(id)?.attempt, `attempt of job ${id}`).toBe(1);
      expect(byJob.get(id)?.consumerId, `consumer of job ${id}`).toBe("slow");
    }

    const stats = await statsOf(client);
    expect(stats.created).toBe(3n);
    expect(stats.processed).toBe(3n);
    expect(stats.redelivered).toBe(0n);
    expect(stats.lateResults).toBe(0n);
    expect(stats.rejectedResults).toBe(0n);
    expect(consumerIn(stats, "slow").processed).toBe(3n);
    expectJobsAccountedFor(stats);
  });

  it("consumer report counts rejected results", async () => {
    broker = await startTestBroker({ leaseTimeout: 1_000 });
    const { client, address } = broker;
    const subscription = subscribe(client, "consumer-report");
    const runner = startConsumer(address, "runner", 1, "1600");
    await waitFor("the runner to connect", async () => (await statsOf(client)).consumersConnected === 1);
    const jobId = await submit(client, 61n);
    await waitFor("the delivery to the runner", async () => (await inFlightOf(client, "runner")) === 1n);

    // The taker connected before the release, so the released job goes to it,
    // while the runner's handler goes on and requests lease extensions.
    const taker = new ScriptedConsumer(client, "taker", 1);
    scriptedConsumers.push(taker);
    await waitFor("the taker to connect", async () => (await statsOf(client)).consumersConnected === 2);
    await client.releaseLease({ jobId });
    await waitFor("the delivery to the taker", () => taker.deliveries.length === 1);
    await taker.ack(taker.deliveries);
    await waitFor("the runner's late result", async () => (await statsOf(client)).lateResults === 1n);

    await client.closeQueue({});
    expect(await exitOf(runner, "the runner")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    const byJob = expectOneResultPerJob(subscription.results, [jobId]);
    expect(byJob.get(jobId)?.consumerId).toBe("taker");

    const stats = await statsOf(client);
    expect(stats.rejectedResults).toBe(1n);
    expect(consumerIn(stats, "runner").rejectedResults).toBe(1n);
    // ConsumerReport.rejected counts results the broker rejected, so the
    // runner's report agrees with the broker's count for it.
    const report = logLineOf(runner, "consumer stream ended");
    expect(report?.["processed"]).toBe(1);
    expect(report?.["rejected"]).toBe(1);
  });
});
