import { createClient, type Client } from "@connectrpc/connect";
import { BrokerService, connectTo, createTransport, Health, HealthCheckResponse_ServingStatus } from "@mpmc/common";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";

const { SERVING, NOT_SERVING } = HealthCheckResponse_ServingStatus;
const services = ["", "mpmc.v1.BrokerService"];

let broker: TestBroker | undefined;
const scriptedConsumers: ScriptedConsumer[] = [];
const processes: CliProcess[] = [];
const watches: AbortController[] = [];

afterEach(async () => {
  for (const watch of watches.splice(0)) {
    watch.abort();
  }
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

async function check(health: Client<typeof Health>, service: string): Promise<HealthCheckResponse_ServingStatus> {
  const response = await health.check({ service }, { timeoutMs: 5_000 });
  return response.status;
}

/** Follows grpc.health.v1 Watch for one service and records every status it sends. */
function watch(health: Client<typeof Health>, service: string): HealthCheckResponse_ServingStatus[] {
  const statuses: HealthCheckResponse_ServingStatus[] = [];
  const controller = new AbortController();
  watches.push(controller);
  void (async () => {
    try {
      for await (const response of health.watch({ service }, { signal: controller.signal })) {
        statuses.push(response.status);
      }
    } catch {
      // The broker cancels the stream at the end of its grace period, and only the statuses matter here.
    }
  })();
  return statuses;
}

describe("broker health", () => {
  it("turns NOT_SERVING after close and drain", async () => {
    broker = await startTestBroker();
    const { client } = broker;
    const health = createClient(Health, createTransport(broker.address));
    for (const service of services) {
      expect(await check(health, service), `"${service}" at start`).toBe(SERVING);
    }

    const consumer = new ScriptedConsumer(client, "c1", 2);
    scriptedConsumers.push(consumer);
    await client.submit({ producerId: "p1", job: { data: 1n } });
    await client.submit({ producerId: "p1", job: { data: 2n } });
    await waitFor("both jobs to be delivered", () => consumer.deliveries.length === 2);

    await client.closeQueue({});
    // Closed with two jobs in flight: not drained yet.
    for (const service of services) {
      expect(await check(health, service), `"${service}" while draining`).toBe(SERVING);
    }

    await consumer.ack(consumer.deliveries);
    await waitFor("the consumer stream to end", () => consumer.ended !== undefined);
    for (const service of services) {
      expect(await check(health, service), `"${service}" after drain`).toBe(NOT_SERVING);
    }
    expect(broker.broker.isServing()).toBe(false);
    // The broker still serves calls after it drained.
    const { stats } = await client.getStats({});
    expect(stats?.drained).toBe(true);
  });

  it("turns NOT_SERVING on SIGTERM, then cancels after the grace", async () => {
    const proc = startCli(["broker", "--host", "127.0.0.1", "--port", "0", "--shutdown-grace", "1s", "--log-level", "info"]);
    processes.push(proc);
    const port = await waitFor("the broker's port", () => proc.logs().find((line) => line.msg === "broker listening")?.port as number | undefined);
    const address = `127.0.0.1:${port}`;
    const health = createClient(Health, createTransport(address));
    expect(await check(health, "")).toBe(SERVING);

    const statuses = watch(health, "mpmc.v1.BrokerService");
    await waitFor("the watch to report SERVING", () => statuses.includes(SERVING));
    // An open Consume stream keeps the graceful shutdown waiting until the grace runs out.
    const consumer = new ScriptedConsumer(connectTo(BrokerService, address), "c1", 1);
    scriptedConsumers.push(consumer);
    await waitFor("the consumer to connect", () => proc.logs().some((line) => line.msg === "consumer connected"));

    proc.child.kill("SIGTERM");
    await waitFor("the watch to report NOT_SERVING", () => statuses.includes(NOT_SERVING));
    await expect(check(createClient(Health, createTransport(address)), "")).rejects.toThrow();
    expect(await proc.exited).toBe(0);
    await waitFor("the consumer stream to end", () => consumer.ended !== undefined);
    expect(consumer.ended).not.toBe("ok");
  });
});
