import { pino } from "pino";
import { startMetricsServer, type Delivery, type RunningMetricsServer } from "@mpmc/common";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";

let broker: TestBroker | undefined;
let metricsServer: RunningMetricsServer | undefined;
const scriptedConsumers: ScriptedConsumer[] = [];
const processes: CliProcess[] = [];

afterEach(async () => {
  for (const consumer of scriptedConsumers.splice(0)) {
    consumer.close();
  }
  for (const proc of processes.splice(0)) {
    killIfRunning(proc);
    await proc.exited;
  }
  await metricsServer?.close();
  metricsServer = undefined;
  await broker?.stop();
  broker = undefined;
});

/** Parses the Prometheus text format into samples keyed by name and labels, e.g. `x_total{id="a"}`. */
function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) {
      continue;
    }
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

async function scrape(port: number): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toContain("text/plain");
  return parseSamples(await response.text());
}

async function statusOf(port: number, path: string): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5_000) });
  await response.arrayBuffer();
  return response.status;
}

/** Returns the value of a JSON log line's field, from the first line with that message. */
function logField(proc: CliProcess, message: string, field: string): unknown {
  return proc.logs().find((line) => line.msg === message)?.[field];
}

function deliveryOf(consumer: ScriptedConsumer, jobId: bigint, attempt: number): Delivery | undefined {
  return consumer.deliveries.find((d) => d.job?.id === jobId && d.job.attempt === attempt);
}

describe("broker metrics", () => {
  it("counts jobs and results exactly", async () => {
    broker = await startTestBroker({ retryBackoff: { minMs: 10, maxMs: 10 } });
    const { client } = broker;
    const running = broker.broker;
    metricsServer = await startMetricsServer({
      host: "127.0.0.1",
      port: 0,
      registry: running.metrics,
      ready: () => running.isServing(),
      logger: pino({ level: "silent" }),
    });

    // c2 takes job 1 and disconnects, so job 1 is redelivered to c1 with attempt 2.
    const c2 = new ScriptedConsumer(client, "c2", 1);
    scriptedConsumers.push(c2);
    await waitFor("c2 to connect", async () => (await client.getStats({})).stats?.consumersConnected === 1);
    const first = await client.submit({ producerId: "p1", job: { data: 1n } });
    const job1 = first.job?.id ?? 0n;
    await waitFor("c2 to receive job 1", () => c2.deliveries.length === 1);
    c2.close();
    await waitFor("job 1 to be requeued", async () => (await client.getStats({})).stats?.redelivered === 1n);

    const c1 = new ScriptedConsumer(client, "c1", 10);
    scriptedConsumers.push(c1);
    const ids = [job1];
    for (const data of [2n, 3n, 4n, 5n]) {
      const { job } = await client.submit({ producerId: "p1", job: { data } });
      ids.push(job?.id ?? 0n);
    }
    const [, job2, job3, job4, job5] = ids as [bigint, bigint, bigint, bigint, bigint];
    await waitFor("c1 to receive 5 jobs", () => c1.deliveries.length === 5);

    await c1.ack([deliveryOf(c1, job1, 2) as Delivery], 100);
    await c1.ack([deliveryOf(c1, job2, 1) as Delivery, deliveryOf(c1, job3, 1) as Delivery], 300);
    const nack = (delivery: Delivery, permanent: boolean) => ({
      jobId: delivery.job?.id ?? 0n,
      leaseToken: delivery.leaseToken,
      error: "handler failed",
      permanent,
    });
    // Job 4 fails once and is retried. Job 5 fails for good and is dead-lettered.
    await c1.send({ case: "nacks", value: { nacks: [nack(deliveryOf(c1, job4, 1) as Delivery, false), nack(deliveryOf(c1, job5, 1) as Delivery, true)] } });
    const retried = await waitFor("job 4 to come back", () => deliveryOf(c1, job4, 2));
    await c1.ack([retried], 500);
    // A second result for job 2 is rejected, because the job is settled.
    await c1.ack([deliveryOf(c1, job2, 1) as Delivery], 1);
    await waitFor("the stale result to be rejected", () => c1.rejections.length === 1);
    const stats = await waitFor("4 jobs to be processed", async () => {
      const { stats } = await client.getStats({});
      return stats?.processed === 4n && stats.rejectedResults === 1n ? stats : undefined;
    });

    const samples = await scrape(metricsServer.port);
    const expected: Record<string, number> = {
      mpmc_jobs_created_total: 5,
      mpmc_jobs_processed_total: 4,
      mpmc_jobs_redelivered_total: 1,
      mpmc_jobs_failed_attempts_total: 2,
      mpmc_results_rejected_total: 1,
      mpmc_jobs_dead_lettered_total: 1,
      mpmc_dead_letters: 1,
      mpmc_queue_depth: 0,
      mpmc_jobs_in_flight: 0,
      mpmc_jobs_waiting_retry: 0,
      mpmc_consumers_connected: 1,
      'mpmc_consumer_jobs_processed_total{consumer_id="c1"}': 4,
      'mpmc_consumer_jobs_processed_total{consumer_id="c2"}': 0,
      mpmc_job_processing_seconds_count: 4,
      'mpmc_job_processing_seconds_bucket{le="0.05"}': 0,
      'mpmc_job_processing_seconds_bucket{le="0.1"}': 1,
      'mpmc_job_processing_seconds_bucket{le="0.25"}': 1,
      'mpmc_job_processing_seconds_bucket{le="0.5"}': 4,
      'mpmc_job_processing_seconds_bucket{le="+Inf"}': 4,
      mpmc_job_queue_wait_seconds_count: 4,
      'mpmc_job_queue_wait_seconds_bucket{le="+Inf"}': 4,
    };
    for (const [sample, value] of Object.entries(expected)) {
      expect(samples.get(sample), sample).toBe(value);
    }
    expect(samples.get("mpmc_job_processing_seconds_sum")).toBeCloseTo(1.2, 6);

    // The counters are the ones GetStats returns.
    expect(samples.get("mpmc_jobs_created_total")).toBe(Number(stats.created));
    expect(samples.get("mpmc_jobs_failed_attempts_total")).toBe(Number(stats.failedAttempts));
    expect(samples.get("mpmc_jobs_dead_lettered_total")).toBe(Number(stats.deadLettered));
  });

  it("keeps the internal subscriber out of GetStats", async () => {
    broker = await startTestBroker();
    const { stats } = await broker.client.getStats({});
    expect(stats?.subscribersConnected).toBe(0);
  });

  it("serves health, readiness and 404", async () => {
    broker = await startTestBroker();
    const running = broker.broker;
    metricsServer = await startMetricsServer({
      host: "127.0.0.1",
      port: 0,
      registry: running.metrics,
      ready: () => running.isServing(),
      logger: pino({ level: "silent" }),
    });
    const port = metricsServer.port;

    expect(await statusOf(port, "/healthz")).toBe(200);
    expect(await statusOf(port, "/readyz")).toBe(200);
    expect(await statusOf(port, "/metrics?name=x")).toBe(200);
    expect(await statusOf(port, "/")).toBe(404);
    const post = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "POST", signal: AbortSignal.timeout(5_000) });
    await post.arrayBuffer();
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");

    // An empty queue drains as soon as it closes.
    await broker.client.closeQueue({});
    expect(await statusOf(port, "/readyz")).toBe(503);
    expect(await statusOf(port, "/healthz")).toBe(200);
  });
});

describe("service metrics processes", () => {
  it("broker process serves process metrics and readiness", async () => {
    const proc = startCli(["broker", "--host", "127.0.0.1", "--port", "0", "--log-level", "info"]);
    processes.push(proc);
    const metricsPort = await waitFor("the broker's metrics port", () => logField(proc, "metrics listening", "metricsPort") as number | undefined);
    const grpcPort = await waitFor("the broker's port", () => logField(proc, "broker listening", "port") as number | undefined);

    const samples = await scrape(metricsPort);
    expect(samples.has("process_cpu_user_seconds_total")).toBe(true);
    expect(samples.has("nodejs_eventloop_lag_seconds")).toBe(true);
    expect(samples.get("mpmc_jobs_created_total")).toBe(0);
    expect(await statusOf(metricsPort, "/readyz")).toBe(200);

    const close = startCli(["close", "--broker", `127.0.0.1:${grpcPort}`]);
    processes.push(close);
    expect(await close.exited).toBe(0);
    await waitFor("the drained broker to report not ready", async () => (await statusOf(metricsPort, "/readyz")) === 503);

    proc.child.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  });

  it("metrics port -1 turns metrics off", async () => {
    const proc = startCli(["broker", "--host", "127.0.0.1", "--port", "0", "--log-level", "info"], { MPMC_METRICS_PORT: "-1" });
    processes.push(proc);
    await waitFor("the metrics server to be turned off", () => proc.logs().some((line) => line.msg === "metrics server turned off (--metrics-port -1)"));
    await waitFor("the broker to start", () => logField(proc, "broker listening", "port") as number | undefined);
    expect(proc.logs().some((line) => line.msg === "metrics listening")).toBe(false);
  });

  it("invalid metrics port names the range", async () => {
    const proc = startCli(["broker", "--metrics-port", "70000"]);
    processes.push(proc);
    expect(await proc.exited).toBe(1);
    expect(proc.stderr()).toContain("--metrics-port");
    expect(proc.stderr()).toContain("expected a port from 0 to 65535 (0 picks a free port), or -1 to turn metrics off");
  });

  it("help lists metrics, TLS and admin settings", async () => {
    const expectations: Record<string, string[]> = {
      broker: ["--metrics-port", "MPMC_METRICS_PORT", "9464", "--tls-cert", "--tls-key", "--tls-client-ca", "MPMC_TLS_CLIENT_CA", "--admin-token", "MPMC_ADMIN_TOKEN"],
      aggregator: ["--metrics-port", "9465", "--tls-cert", "--tls-client-ca", "--tls-ca", "MPMC_TLS_CA"],
      consumer: ["--metrics-port", "9466", "--tls-ca", "--tls-cert", "--tls-key"],
      producer: ["--metrics-port", "9467", "--tls-ca", "--tls-cert", "--tls-key"],
      close: ["--admin-token", "--tls-ca"],
      stats: ["--tls-ca", "--tls-cert"],
    };
    for (const [command, flags] of Object.entries(expectations)) {
      const proc = startCli([command, "--help"]);
      processes.push(proc);
      expect(await proc.exited, command).toBe(0);
      for (const flag of flags) {
        expect(proc.stdout(), `${command} --help`).toContain(flag);
      }
    }
  });

  it("consumer process reports readiness and handler metrics", async () => {
    broker = await startTestBroker();
    const consumer = startCli(["consumer", "--broker", broker.address, "--id", "c1", "--credit", "2", "--work-ms", "5", "--log-level", "info"]);
    processes.push(consumer);
    const port = await waitFor("the consumer's metrics port", () => logField(consumer, "metrics listening", "metricsPort") as number | undefined);

    await waitFor("the consumer to be ready", async () => (await statusOf(port, "/readyz")) === 200);
    expect(await statusOf(port, "/healthz")).toBe(200);

    for (const data of [1n, 2n, 3n]) {
      await broker.client.submit({ producerId: "p1", job: { data } });
    }
    await waitFor("3 jobs to be processed", async () => (await broker?.client.getStats({}))?.stats?.processed === 3n);

    const samples = await scrape(port);
    expect(samples.get('mpmc_handler_jobs_processed_total{consumer_id="c1"}')).toBe(3);
    expect(samples.get('mpmc_handler_jobs_failed_total{consumer_id="c1"}')).toBe(0);
    expect(samples.get('mpmc_handler_duration_seconds_count{consumer_id="c1"}')).toBe(3);
    expect(samples.get('mpmc_handler_jobs_in_progress{consumer_id="c1"}')).toBe(0);
    expect(samples.has('process_cpu_user_seconds_total{consumer_id="c1"}')).toBe(true);

    // Without its broker the consumer keeps running and tries again, but is not ready.
    await broker.stop();
    broker = undefined;
    await waitFor("the consumer to report not ready", async () => (await statusOf(port, "/readyz")) === 503);
    expect(await statusOf(port, "/healthz")).toBe(200);
  });
});
