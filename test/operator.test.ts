import { Code, ConnectError } from "@connectrpc/connect";
import { durationOfMs, msOfDuration, msOfTimestamp, type QueueGauges } from "@mpmc/common";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { exitOf, killAndWait, logLineOf } from "./support/process-exit.js";
import { startCli, type CliProcess } from "./support/processes.js";
import { expectOneResultPerJob, idRange, ResultSubscription } from "./support/results.js";
import { consumerIn, expectJobsAccountedFor, producerIn, statsOf } from "./support/stats.js";
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

async function submitJobs(client: BrokerClient, producerId: string, data: bigint[]): Promise<bigint[]> {
  const ids: bigint[] = [];
  for (const value of data) {
    const { job } = await client.submit({ producerId, job: { data: value } });
    if (job === undefined) {
      throw new Error(`Submit of data ${value} returned no job`);
    }
    ids.push(job.id);
  }
  return ids;
}

/** Returns the ConnectError a call failed with, and fails the test when the call succeeds. */
async function errorOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail, but it succeeded");
}

describe("operator", () => {
  it("lists and releases leases", async () => {
    const leaseMs = 30_000;
    broker = await startTestBroker({ leaseTimeout: leaseMs });
    const { client, address } = broker;
    const subscription = subscribe(client, "operator");
    const jobIds = await submitJobs(client, "producer-1", [41n, 42n]);
    const [firstId, secondId] = jobIds as [bigint, bigint];

    const before = Date.now();
    const holder = attachScripted(client, "holder", 2);
    await waitFor("2 deliveries", () => holder.deliveries.length === 2);
    const after = Date.now();

    const { leases } = await client.listLeases({});
    expect(leases.map((lease) => lease.jobId)).toEqual(jobIds);
    for (const lease of leases) {
      const deliveredAtMs = msOfTimestamp(lease.deliveredAt);
      expect(lease.consumerId, `consumer of job ${lease.jobId}`).toBe("holder");
      expect(lease.attempt, `attempt of job ${lease.jobId}`).toBe(1);
      expect(deliveredAtMs, `delivered_at of job ${lease.jobId}`).toBeGreaterThanOrEqual(before);
      expect(deliveredAtMs, `delivered_at of job ${lease.jobId}`).toBeLessThanOrEqual(after);
      expect(msOfTimestamp(lease.leaseDeadline) - deliveredAtMs, `lease length of job ${lease.jobId}`).toBe(leaseMs);
    }
    expect(leases.map((lease) => lease.leaseToken)).toEqual(holder.deliveries.map((d) => d.leaseToken));
    expect((await client.listLeases({ jobId: secondId })).leases.map((lease) => lease.jobId)).toEqual([secondId]);
    expect((await client.listLeases({ consumerId: "nobody" })).leases).toHaveLength(0);
    expect((await client.listLeases({ pageSize: 1 })).leases.map((lease) => lease.jobId)).toEqual([firstId]);

    // The CLI prints the same leases as protobuf JSON, one per line.
    const list = startProcess(["leases", "list", "--broker", address, "--consumer", "holder", "--json"]);
    expect(await exitOf(list, "leases list")).toBe(0);
    const listed = list.stdout().trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(listed.map((lease) => lease["jobId"])).toEqual(jobIds.map(String));
    expect(listed.map((lease) => lease["consumerId"])).toEqual(["holder", "holder"]);

    const firstDelivery = holder.deliveries[0];
    if (firstDelivery === undefined) {
      throw new Error("the holder has no first delivery");
    }
    const release = startProcess(["leases", "release", String(firstId), "--broker", address]);
    expect(await exitOf(release, "leases release")).toBe(0);
    expect(release.stdout()).toBe(`job ${firstId} taken back from holder\n`);

    // The holder's stream stays open, and it has free credit, so the job comes straight back to it.
    await waitFor("the released job's second delivery", () => holder.deliveries.length === 3);
    const again = holder.deliveries[2];
    expect(again?.job?.id).toBe(firstId);
    expect(again?.job?.attempt).toBe(2);
    expect(again?.leaseToken).not.toBe(firstDelivery.leaseToken);
    let stats = await statsOf(client);
    expect(stats.consumersConnected).toBe(1);
    expect(consumerIn(stats, "holder").connected).toBe(true);
    expect(consumerIn(stats, "holder").inFlight).toBe(2n);
    expect(stats.redelivered).toBe(1n);
    expect(holder.ended).toBeUndefined();

    // A result under the released lease token is late.
    await holder.ack([firstDelivery]);
    await waitFor("the late result's rejection", () => holder.rejections.length === 1);
    expect(holder.rejections[0]?.reason).toBe(`lease_token ${firstDelivery.leaseToken} is not the current delivery of job ${firstId}`);

    // Releasing a job that is not in flight fails with NOT_FOUND, from the CLI too.
    const notFound = await errorOf(client.releaseLease({ jobId: 999n }));
    expect(notFound.code).toBe(Code.NotFound);
    expect(notFound.rawMessage).toBe("job 999 is not in flight");
    const failedRelease = startProcess(["leases", "release", "999", "--broker", address]);
    expect(await exitOf(failedRelease, "leases release of an unknown job")).toBe(1);
    expect(failedRelease.stderr()).toContain("job 999 is not in flight");

    await holder.ack(holder.deliveries.slice(1));
    await client.closeQueue({});
    await waitFor("the holder's stream to end", () => holder.ended);
    expect(holder.ended).toBe("ok");
    await waitFor("the result stream to end", () => subscription.ended);
    const byJob = expectOneResultPerJob(subscription.results, jobIds);
    expect(byJob.get(firstId)?.attempt).toBe(2);
    expect(byJob.get(secondId)?.attempt).toBe(1);

    stats = await statsOf(client);
    expect(stats.created).toBe(2n);
    expect(stats.processed).toBe(2n);
    expect(stats.redelivered).toBe(1n);
    expect(stats.lateResults).toBe(1n);
    expect(stats.rejectedResults).toBe(1n);
    expect(consumerIn(stats, "holder").processed).toBe(2n);
    expectJobsAccountedFor(stats);
  });

  it("releases a running job", async () => {
    const leaseMs = 1_000;
    broker = await startTestBroker({ leaseTimeout: leaseMs });
    const { client, address } = broker;
    const subscription = subscribe(client, "release-running");
    // The handler outlasts the lease, so the consumer extends the lease every half lease while it runs.
    const consumer = startProcess([
      "consumer", "--broker", address, "--id", "runner", "--credit", "2", "--work-ms", "2500", "--log-level", "info",
    ]);
    await waitFor("the consumer to connect", async () => (await statsOf(client)).consumersConnected === 1);
    const [jobId] = await submitJobs(client, "producer-1", [51n]);
    if (jobId === undefined) {
      throw new Error("no job was submitted");
    }
    const delivered = await waitFor("the delivery", async () => (await client.listLeases({})).leases[0]);

    // Released past the first half of the run, the job comes back to the same
    // consumer while the first run goes on. That run's result is rejected as late.
    await waitFor("1300 ms of the first run", () => Date.now() >= msOfTimestamp(delivered.deliveredAt) + 1_300);
    const { released } = await client.releaseLease({ jobId });
    expect(released?.consumerId).toBe("runner");
    expect(released?.leaseToken).toBe(delivered.leaseToken);
    await waitFor("the second delivery", async () => (await client.listLeases({})).leases[0]?.attempt === 2);

    await waitFor("the job to be processed or dead-lettered", async () => {
      const current = await statsOf(client);
      return current.processed + current.deadLettered > 0n;
    });
    await client.closeQueue({});
    expect(await exitOf(consumer, "the consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);

    // A job released once from a healthy consumer is redelivered once, and the
    // first run's result is rejected as late.
    const stats = await statsOf(client);
    expect(stats.deadLettered, "dead_lettered").toBe(0n);
    expect(stats.redelivered, "redelivered").toBe(1n);
    expect(stats.lateResults, "late_results").toBe(1n);
    expect(stats.rejectedResults).toBe(1n);
    expect(stats.processed).toBe(1n);
    expect(consumerIn(stats, "runner").processed).toBe(1n);
    expectJobsAccountedFor(stats);
    const byJob = expectOneResultPerJob(subscription.results, [jobId]);
    expect(byJob.get(jobId)?.attempt).toBe(2);
  });

  it("returns the producer cursor", async () => {
    broker = await startTestBroker();
    const { client, address } = broker;
    const subscription = subscribe(client, "cursor");
    expect((await client.getProducerCursor({ producerId: "numbered" })).lastSequence).toBe(0n);

    const jobIds: bigint[] = [];
    for (let sequence = 1n; sequence <= 5n; sequence++) {
      const response = await client.submit({ producerId: "numbered", job: { data: sequence, sequence } });
      expect(response.duplicate).toBe(false);
      jobIds.push(response.job?.id ?? 0n);
    }
    expect((await client.getProducerCursor({ producerId: "numbered" })).lastSequence).toBe(5n);

    // A sequence number at or below the cursor is acknowledged as a duplicate and not queued.
    const repeated = await client.submit({ producerId: "numbered", job: { data: 3n, sequence: 3n } });
    expect(repeated.duplicate).toBe(true);
    expect(repeated.job).toBeUndefined();
    expect((await client.getProducerCursor({ producerId: "numbered" })).lastSequence).toBe(5n);
    // Jobs without a sequence number leave the cursor alone.
    jobIds.push(...(await submitJobs(client, "numbered", [6n])));
    expect((await client.getProducerCursor({ producerId: "numbered" })).lastSequence).toBe(5n);
    expect((await client.getProducerCursor({ producerId: "someone-else" })).lastSequence).toBe(0n);
    const invalid = await errorOf(client.getProducerCursor({ producerId: "" }));
    expect(invalid.code).toBe(Code.InvalidArgument);

    let stats = await statsOf(client);
    expect(stats.created).toBe(6n);
    expect(stats.duplicatesRefused).toBe(1n);
    expect(producerIn(stats, "numbered").lastSequence).toBe(5n);
    expect(producerIn(stats, "numbered").created).toBe(6n);

    await client.closeQueue({});
    const consumer = startProcess(["consumer", "--broker", address, "--id", "drainer", "--credit", "3", "--work-ms", "1-5", "--log-level", "info"]);
    expect(await exitOf(consumer, "the consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expectOneResultPerJob(subscription.results, jobIds);
    stats = await statsOf(client);
    expect(stats.processed).toBe(6n);
    expectJobsAccountedFor(stats);
  });

  it("watches gauges until drained", async () => {
    const jobCount = 40;
    const intervalMs = 200;
    broker = await startTestBroker({ capacity: 50 });
    const { client, address } = broker;
    const subscription = subscribe(client, "watch");

    const gauges: QueueGauges[] = [];
    const abort = new AbortController();
    aborts.push(abort);
    const started = Date.now();
    let watchEnded: string | undefined;
    void (async () => {
      try {
        for await (const message of client.watchStats({ minInterval: durationOfMs(intervalMs) }, { signal: abort.signal })) {
          if (message.gauges !== undefined) {
            gauges.push(message.gauges);
          }
        }
        watchEnded = "ok";
      } catch (err) {
        watchEnded = err instanceof Error ? err.message : String(err);
      }
    })();
    const watchCli = startProcess(["watch", "--broker", address, "--interval", `${intervalMs}ms`]);
    await waitFor("the first gauges", () => gauges.length >= 1);
    expect(gauges[0]?.queued).toBe(0n);

    // The queue fills with no consumer, then drains once one connects.
    async function* requests() {
      yield { producerId: "producer-1", jobs: idRange(1, jobCount).map((data) => ({ data })) };
    }
    expect((await client.publish(requests())).accepted).toBe(BigInt(jobCount));
    await waitFor("gauges with a full queue", () => gauges.some((g) => g.queued === BigInt(jobCount)));
    const consumer = startProcess(["consumer", "--broker", address, "--id", "drainer", "--credit", "2", "--work-ms", "20-30", "--log-level", "info"]);
    await waitFor("every job to be processed", async () => (await statsOf(client)).processed === BigInt(jobCount));
    await client.closeQueue({});
    await waitFor("the watch stream to end", () => watchEnded);
    const elapsedMs = Date.now() - started;
    expect(watchEnded).toBe("ok");
    expect(await exitOf(consumer, "the consumer")).toBe(0);
    expect(await exitOf(watchCli, "mpmc watch")).toBe(0);

    const queued = gauges.map((g) => g.queued);
    const peak = queued.indexOf(BigInt(jobCount));
    expect(gauges.length).toBeGreaterThanOrEqual(4);
    expect(peak).toBeGreaterThan(0);
    // Queued only rises until the consumer connects, and only falls after.
    expect(queued.slice(0, peak + 1)).toEqual([...queued.slice(0, peak + 1)].sort((a, b) => Number(a - b)));
    expect(queued.slice(peak)).toEqual([...queued.slice(peak)].sort((a, b) => Number(b - a)));
    const last = gauges[gauges.length - 1];
    expect(last?.queued).toBe(0n);
    expect(last?.inFlight).toBe(0n);
    expect(last?.created).toBe(BigInt(jobCount));
    expect(last?.processed).toBe(BigInt(jobCount));
    expect(last?.closed).toBe(true);
    expect(last?.drained).toBe(true);
    expect(msOfDuration(last?.oldestJobAge)).toBe(0);
    expect(gauges.filter((g) => g.drained)).toHaveLength(1);
    // At most one message per interval, plus the first, which goes out at once.
    expect(gauges.length).toBeLessThanOrEqual(Math.floor(elapsedMs / intervalMs) + 1);

    // The CLI printed one line per message and ended with the drained queue.
    const lines = watchCli.stdout().trim().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines[lines.length - 1]).toContain(`created ${jobCount}, processed ${jobCount}`);
    expect(lines[lines.length - 1]).toMatch(/, drained$/);

    await waitFor("the result stream to end", () => subscription.ended);
    expectOneResultPerJob(subscription.results, idRange(1, jobCount));
    const stats = await statsOf(client);
    expect(stats.processed).toBe(BigInt(jobCount));
    expectJobsAccountedFor(stats);
  });
});
