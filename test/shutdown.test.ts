import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { ResultSubscription } from "./support/results.js";
import { waitFor } from "./support/wait.js";

describe("broker shutdown", () => {
  let broker: TestBroker | undefined;
  let consumer: CliProcess | undefined;

  afterEach(async () => {
    killIfRunning(consumer);
    await broker?.stop();
  });

  it("drains the queue, then ends streams with UNAVAILABLE", async () => {
    broker = await startTestBroker({ capacity: 100 });
    const subscription = new ResultSubscription(broker.client, "shutdown-watcher");
    consumer = startCli(["consumer", "--broker", broker.address, "--id", "c1", "--credit", "2", "--work-ms", "100-150"]);
    await waitFor("the consumer and the subscriber to connect", async () => {
      const stats = (await broker?.client.getStats({}))?.stats;
      return stats?.consumersConnected === 1 && stats.subscribersConnected >= 1;
    });
    for (let i = 1; i <= 10; i++) {
      await broker.client.submit({ producerId: "p1", job: { data: BigInt(i) } });
    }

    const stopping = broker.broker.shutdown(20_000);
    const refused = await broker.client.submit({ producerId: "p1", job: { data: 11n } }).catch((err: unknown) => ConnectError.from(err));
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.Unavailable);
    expect((refused as ConnectError).rawMessage).toContain("shutting down");

    await stopping;
    // Every queued job was processed before the broker stopped, and none twice.
    const snapshot = broker.broker.core.snapshot();
    expect(snapshot.created).toBe(10);
    expect(snapshot.processed).toBe(10);
    expect(snapshot.queued).toBe(0);
    expect(snapshot.inFlight).toBe(0);
    expect(subscription.results.map((result) => Number(result.jobId)).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    await waitFor("the subscription to end", () => subscription.ended !== undefined);
    expect(subscription.error?.code).toBe(Code.Unavailable);

    // The consumer treats UNAVAILABLE as a reason to connect again, not to exit.
    await waitFor("the consumer to try again", () =>
      consumer?.logs().some((line) => line.msg === "consume stream failed; connecting again"),
    );
    expect(consumer.child.exitCode).toBeNull();
  });
});
