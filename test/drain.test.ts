import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { PublishRequestSchema } from "@mpmc/common";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";
import { ResultSubscription } from "./support/results.js";
import { exitOf, finalReportOf } from "./support/process-exit.js";
import { consumerIn, statsOf } from "./support/stats.js";

type BrokerClient = TestBroker["client"];

let broker: TestBroker | undefined;
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

/** Returns the ConnectError a call failed with, and fails the test when the call succeeds. */
async function errorOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail, but it succeeded");
}

async function submitJobs(client: BrokerClient, data: bigint[]): Promise<bigint[]> {
  const ids: bigint[] = [];
  for (const value of data) {
    const { job } = await client.submit({ producerId: "producer-1", job: { data: value } });
    ids.push(job?.id ?? 0n);
  }
  return ids;
}

async function* publishRequests(
  requests: MessageInitShape<typeof PublishRequestSchema>[],
): AsyncGenerator<MessageInitShape<typeof PublishRequestSchema>> {
  yield* requests;
}

describe("close and drain", () => {
  it("rejects new jobs once closed", async () => {
    broker = await startTestBroker();
    const { client } = broker;
    await submitJobs(client, [1n, 2n, 3n]);

    const first = await client.closeQueue({});
    expect(first.alreadyClosed).toBe(false);
    expect(first.stats?.closed).toBe(true);
    expect(first.stats?.drained).toBe(false);
    expect(first.stats?.queued).toBe(3n);

    const submitError = await errorOf(client.submit({ producerId: "producer-1", job: { data: 4n } }));
    expect(submitError.code).toBe(Code.FailedPrecondition);
    expect(submitError.rawMessage).toContain("the queue is closed");

    const publishError = await errorOf(client.publish(publishRequests([{ producerId: "producer-1", jobs: [{ data: 5n }] }])));
    expect(publishError.code).toBe(Code.FailedPrecondition);
    expect(publishError.rawMessage).toContain("the queue is closed");

    const second = await client.closeQueue({});
    expect(second.alreadyClosed).toBe(true);
    expect(second.stats?.closed).toBe(true);

    const stats = await statsOf(client);
    expect(stats.created).toBe(3n);
    expect(stats.queued).toBe(3n);
    expect(stats.producers.find((p) => p.producerId === "producer-1")?.created).toBe(3n);
  });

  it("ends streams only after the last result", async () => {
    broker = await startTestBroker();
    const { client } = broker;
    const subscription = subscribe(client, "drain-test");
    const jobIds = await submitJobs(client, [1n, 2n, 3n, 4n]);

    const busy = attachScripted(client, "busy", 2);
    await waitFor("2 deliveries to the busy consumer", () => busy.deliveries.length === 2);
    const idle = attachScripted(client, "idle", 1);
    await waitFor("1 delivery to the idle consumer", () => idle.deliveries.length === 1);
    const close = await client.closeQueue({});
    expect(close.alreadyClosed).toBe(false);
    expect(close.stats?.queued).toBe(1n);
    expect(close.stats?.inFlight).toBe(3n);

    // The closed queue still delivers what is left.
    await busy.ack(busy.deliveries.slice(0, 1));
    await waitFor("the last queued job to reach the busy consumer", () => busy.deliveries.length >= 3);
    await idle.ack(idle.deliveries);
    await waitFor("2 results", async () => (await statsOf(client)).processed === 2n);

    // Two jobs are still in flight, so no stream may end yet, not even the idle consumer's.
    let stats = await statsOf(client);
    expect(stats.drained).toBe(false);
    expect(stats.inFlight).toBe(2n);
    expect(stats.consumersConnected).toBe(2);
    expect(busy.ended).toBeUndefined();
    expect(idle.ended).toBeUndefined();
    expect(subscription.ended).toBeUndefined();
    expect(subscription.finalStats).toBeUndefined();

    await busy.ack(busy.deliveries.slice(1, 2));
    await waitFor("3 results", async () => (await statsOf(client)).processed === 3n);
    stats = await statsOf(client);
    expect(stats.drained).toBe(false);
    expect(stats.consumersConnected).toBe(2);
    expect(busy.ended).toBeUndefined();
    expect(idle.ended).toBeUndefined();

    await busy.ack(busy.deliveries.slice(2));
    await waitFor("both consumer streams to end", () => busy.ended !== undefined && idle.ended !== undefined);
    expect(busy.ended).toBe("ok");
    expect(idle.ended).toBe("ok");
    expect(busy.deliveries.map((d) => d.job?.id)).toEqual([jobIds[0], jobIds[1], jobIds[3]]);
    expect(idle.deliveries.map((d) => d.job?.id)).toEqual([jobIds[2]]);

    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    expect(subscription.results.map((r) => r.jobId).sort((a, b) => Number(a - b))).toEqual(jobIds);
    expect(subscription.kinds.at(-1)).toBe("finalStats");
    expect(subscription.kinds.filter((kind) => kind === "finalStats")).toHaveLength(1);
    expect(subscription.finalStats?.drained).toBe(true);
    expect(subscription.finalStats?.created).toBe(4n);
    expect(subscription.finalStats?.processed).toBe(4n);
    expect(subscription.finalStats?.inFlight).toBe(0n);
    expect(subscription.finalStats?.queued).toBe(0n);
  });

  it("ends a consumer at once when already drained", async () => {
    broker = await startTestBroker();
    const { client, address } = broker;
    await submitJobs(client, [1n, 2n]);
    const early = attachScripted(client, "early", 2);
    await waitFor("2 deliveries to the early consumer", () => early.deliveries.length === 2);
    await client.closeQueue({});
    await early.ack(early.deliveries);
    await waitFor("the early consumer's stream to end", () => early.ended);
    expect(early.ended).toBe("ok");
    expect((await statsOf(client)).drained).toBe(true);

    const late = startProcess(["consumer", "--broker", address, "--id", "late", "--credit", "1", "--work-ms", "5-10", "--log-level", "info"]);
    expect(await exitOf(late, "the late consumer")).toBe(0);
    const report = await finalReportOf(late, "the late consumer");
    expect(report["processed"]).toBe(0);
    expect(report["released"]).toBe(0);

    // A subscriber that comes after the drain receives only the final stats.
    const subscription = subscribe(client, "after-drain");
    await waitFor("the late result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    expect(subscription.kinds).toEqual(["finalStats"]);
    expect(subscription.finalStats?.processed).toBe(2n);

    const stats = await statsOf(client);
    expect(stats.created).toBe(2n);
    expect(stats.processed).toBe(2n);
    expect(consumerIn(stats, "late").processed).toBe(0n);
  });

  it("disconnects a consumer that came after the drain", async () => {
    broker = await startTestBroker();
    const { client, address } = broker;
    const close = await client.closeQueue({});
    expect(close.stats?.drained).toBe(true);
    const lateArgs = ["consumer", "--broker", address, "--id", "late", "--credit", "1", "--work-ms", "5-10", "--log-level", "info"];

    const first = startProcess(lateArgs);
    expect(await exitOf(first, "the first late consumer")).toBe(0);
    const stats = await statsOf(client);
    expect(stats.consumersConnected).toBe(0);
    expect(consumerIn(stats, "late").connected).toBe(false);

    // The ended stream frees its consumer id, so a restarted consumer may use it again.
    const second = startProcess(lateArgs);
    expect(await exitOf(second, "the restarted late consumer"), second.stderr()).toBe(0);
  });

  it("finishes running jobs on SIGTERM", async () => {
    broker = await startTestBroker();
    const { client, address } = broker;
    const subscription = subscribe(client, "sigterm-test");
    const jobIds = await submitJobs(client, [1n, 2n, 3n, 4n, 5n]);

    // Each job runs for at least 1500 ms, so the signal arrives while all 3 run.
    // The consumer's "stopping" log line checks that.
    const stopping = startProcess([
      "consumer", "--broker", address, "--id", "stopping", "--credit", "3", "--work-ms", "1500-1800", "--log-level", "info",
    ]);
    await waitFor("the consumer to hold 3 jobs", async () => {
      const stats = await statsOf(client);
      return stats.consumers.find((c) => c.consumerId === "stopping")?.inFlight === 3n;
    });
    stopping.child.kill("SIGTERM");
    expect(await exitOf(stopping, "the stopped consumer")).toBe(0);

    const stoppingLog = stopping.logs().find((line) => line["msg"] === "stopping: taking no more jobs");
    expect(stoppingLog?.["running"]).toBe(3);
    const report = await finalReportOf(stopping, "the stopped consumer");
    expect(report["processed"]).toBe(3);
    expect(report["released"]).toBe(0);

    let stats = await statsOf(client);
    expect(stats.processed).toBe(3n);
    expect(stats.inFlight).toBe(0n);
    expect(stats.queued).toBe(2n);
    expect(stats.redelivered).toBe(0n);
    expect(consumerIn(stats, "stopping").processed).toBe(3n);
    expect(consumerIn(stats, "stopping").connected).toBe(false);
    await waitFor("3 results", () => subscription.results.length >= 3);
    const settled = [...subscription.results].sort((a, b) => Number(a.jobId - b.jobId));
    expect(settled.map((r) => [r.jobId, r.output, r.attempt, r.consumerId])).toEqual([
      [jobIds[0], 2n, 1, "stopping"],
      [jobIds[1], 4n, 1, "stopping"],
      [jobIds[2], 6n, 1, "stopping"],
    ]);

    // The 2 jobs that were never delivered are still queued for the next consumer, so nothing was lost.
    await client.closeQueue({});
    const finisher = startProcess(["consumer", "--broker", address, "--id", "finisher", "--credit", "2", "--work-ms", "5-10", "--log-level", "info"]);
    expect(await exitOf(finisher, "the finishing consumer")).toBe(0);
    await waitFor("the result stream to end", () => subscription.ended);
    expect(subscription.ended).toBe("ok");
    expect(subscription.results.map((r) => r.jobId).sort((a, b) => Number(a - b))).toEqual(jobIds);
    expect(subscription.finalStats?.created).toBe(5n);
    expect(subscription.finalStats?.processed).toBe(5n);

    stats = await statsOf(client);
    expect(stats.drained).toBe(true);
    expect(consumerIn(stats, "finisher").processed).toBe(2n);
  });

  it("stops a producer process at a closed queue", async () => {
    broker = await startTestBroker();
    await broker.client.closeQueue({});
    const producer = startCli(["producer", "--broker", broker.address, "--id", "late", "--count", "5"]);
    processes.push(producer);
    // Sending again cannot help, so the producer ends with an error instead of retrying.
    expect(await producer.exited).toBe(1);
    expect(producer.stderr()).toContain("the queue is closed and accepts no new jobs");
    const stats = (await broker.client.getStats({})).stats;
    expect(stats?.created).toBe(0n);
  });
});
