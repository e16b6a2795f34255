import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";

describe("hostile and careless clients", () => {
  let broker: TestBroker | undefined;
  let consumer: CliProcess | undefined;
  let dir: string | undefined;

  afterEach(async () => {
    killIfRunning(consumer);
    await broker?.stop();
    if (dir !== undefined) {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rejects an absurd processing duration and keeps stats readable", async () => {
    broker = await startTestBroker();
    await broker.client.submit({ producerId: "p1", job: { data: 1n } });
    const scripted = new ScriptedConsumer(broker.client, "c1", 1);
    await waitFor("a delivery", () => scripted.deliveries.length === 1);
    const delivery = scripted.deliveries[0]!;
    await scripted.send({
      case: "acks",
      value: {
        acks: [
          {
            jobId: delivery.job?.id ?? 0n,
            leaseToken: delivery.leaseToken,
            output: 2n,
            processingDuration: { seconds: 9_223_372_036_854_775_807n, nanos: 0 },
          },
        ],
      },
    });
    await waitFor("the stream to end", () => scripted.ended !== undefined);
    expect(scripted.ended).toContain("processing_duration must be from 0 to 365 days");
    const stats = (await broker.client.getStats({})).stats;
    expect(stats?.processed).toBe(0n);
    expect(stats?.queued).toBe(1n);
  });

  it("refuses to resume after a result the broker never had", async () => {
    broker = await startTestBroker();
    const stream = broker.client.subscribeResults({ subscriberId: "s1", afterSequence: 7n });
    const error = await (async () => {
      for await (const _ of stream) {
        // No message is expected before the error.
      }
      return undefined;
    })().catch((err: unknown) => ConnectError.from(err));
    expect(error?.code).toBe(Code.OutOfRange);
    expect(error?.rawMessage).toContain("after_sequence 7 is past the newest result, 0");
  });

  it("fails only the job when a handler throws before it returns a promise", async () => {
    dir = await mkdtemp(join(tmpdir(), "mpmc-sync-handler-"));
    const handler = join(dir, "throws-at-once.mjs");
    await writeFile(handler, 'export default function (job) { if (job.attempt === 1) throw new Error("no promise here"); return Promise.resolve(job.data * 2n); }\n');
    broker = await startTestBroker({ retryBackoff: { minMs: 10, maxMs: 20 } });
    consumer = startCli(["consumer", "--broker", broker.address, "--id", "c1", "--handler", handler]);
    await broker.client.submit({ producerId: "p1", job: { data: 4n } });
    await waitFor("the job to succeed on its second attempt", async () => (await broker?.client.getStats({}))?.stats?.processed === 1n);
    const stats = (await broker.client.getStats({})).stats;
    expect(stats?.failedAttempts).toBe(1n);
    expect(stats?.redelivered).toBe(0n);
    expect(stats?.consumers.find((c) => c.consumerId === "c1")?.connected).toBe(true);
  });
});
