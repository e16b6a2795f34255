import { create } from "@bufbuild/protobuf";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { PublishRequestSchema, type PublishRequest } from "@mpmc/common";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";

describe("backpressure", () => {
  let broker: TestBroker | undefined;
  let producer: CliProcess | undefined;
  let consumer: CliProcess | undefined;

  afterEach(async () => {
    killIfRunning(producer);
    killIfRunning(consumer);
    await broker?.stop();
  });

  it("holds a publishing stream back while the queue is full", async () => {
    broker = await startTestBroker({ capacity: 5 });
    const planned = 1_000_000;
    let pulled = 0;
    async function* requests(): AsyncGenerator<PublishRequest> {
      for (let i = 1; i <= planned; i++) {
        pulled = i;
        yield create(PublishRequestSchema, { producerId: "p1", jobs: [{ data: BigInt(i % 100), sequence: BigInt(i) }] });
      }
    }
    const abort = new AbortController();
    const publishing = broker.client.publish(requests(), { signal: abort.signal }).catch((err: unknown) => err);

    await waitFor("the queue to fill", async () => (await broker?.client.getStats({}))?.stats?.queued === 5n);
    // The stream runs into its flow-control windows, then stops there. On a loaded machine
    // that takes a while, so wait until two samples 300 ms apart agree, then check once more.
    let previous = -1;
    await waitFor(
      "the stream to stop pulling requests",
      async () => {
        const settled = pulled === previous || pulled >= planned;
        previous = pulled;
        await sleep(300);
        return settled;
      },
      30_000,
    );
    const pulledWhileFull = pulled;
    await sleep(500);
    const { stats } = await broker.client.getStats({});
    expect(stats?.created).toBe(5n);
    expect(stats?.queued).toBe(5n);
    expect(pulled).toBe(pulledWhileFull);
    // HTTP/2 and grpc-js buffers hold a bounded number of small requests; nowhere near all of them.
    expect(pulled).toBeLessThan(planned / 10);
    abort.abort();
    await publishing;
  });

  it("never lets the queue grow past capacity while a producer process waits", async () => {
    broker = await startTestBroker({ capacity: 10 });
    producer = startCli(["producer", "--broker", broker.address, "--id", "p1", "--count", "2000", "--log-level", "warn"]);
    await waitFor("the queue to fill", async () => (await broker?.client.getStats({}))?.stats?.queued === 10n);
    await sleep(300);
    expect((await broker.client.getStats({})).stats?.created).toBe(10n);
    expect(producer.child.exitCode).toBeNull();

    let maxQueued = 0n;
    const sampling = (async () => {
      while (producer?.child.exitCode === null) {
        const queued = (await broker?.client.getStats({}))?.stats?.queued ?? 0n;
        maxQueued = queued > maxQueued ? queued : maxQueued;
        await sleep(5);
      }
    })();
    consumer = startCli(["consumer", "--broker", broker.address, "--id", "c1", "--credit", "20", "--work-ms", "0", "--log-level", "warn"]);
    expect(await producer.exited).toBe(0);
    await sampling;
    await broker.client.closeQueue({});
    expect(await consumer.exited).toBe(0);

    const { stats } = await broker.client.getStats({});
    expect(maxQueued).toBeLessThanOrEqual(10n);
    expect(stats?.created).toBe(2000n);
    expect(stats?.processed).toBe(2000n);
    expect(stats?.producers.find((p) => p.producerId === "p1")?.lastSequence).toBe(2000n);
  });

  it("waits for room in the order producers started waiting", async () => {
    broker = await startTestBroker({ capacity: 1 });
    await broker.client.submit({ producerId: "first", job: { data: 1n } });
    const second = broker.client.submit({ producerId: "second", job: { data: 2n } });
    await sleep(100);
    const third = broker.client.submit({ producerId: "third", job: { data: 3n } });
    await sleep(100);
    const reader = new ScriptedConsumer(broker.client, "c1", 1);
    const order: string[] = [];
    for (let expected = 1; expected <= 3; expected++) {
      await waitFor(`delivery ${expected}`, () => reader.deliveries.length >= expected);
      const delivery = reader.deliveries[expected - 1];
      order.push(delivery?.job?.producerId ?? "");
      await reader.ack([delivery as NonNullable<typeof delivery>]);
    }
    await Promise.all([second, third]);
    expect(order).toEqual(["first", "second", "third"]);
    reader.close();
    await reader.done;
  });
});
