import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import type { Client } from "@connectrpc/connect";
import { BrokerService, connectTo, durationOfMs, type QueueGauges } from "@mpmc/common";
import { residentBytes } from "./proc.js";
import { benchScript, type BenchChild, type ProcessGroup } from "./processes.js";

/** How long a service may take to start and report its port. */
export const startTimeoutMs = 15_000;

/** Settings every mpmc child gets: warnings and errors logged, and no metrics server, which the benchmark does not read. */
const commonArgs = ["--log-level", "warn", "--log-format", "json", "--metrics-port", "-1"];

export interface BrokerOptions {
  name?: string;
  capacity: number;
  /** Writes a V8 CPU profile to this directory when the broker exits. */
  cpuProfileDir?: string | undefined;
  /** Preloads bench/dist/gc-hook.js, so that measureMemory can run a full GC in the broker. */
  gcHook?: boolean;
  /** Runs the broker in durable mode with its store in this folder, at its default fsync policy. */
  dataDir?: string | undefined;
}

export interface StartedBroker {
  child: BenchChild;
  address: string;
  client: Client<typeof BrokerService>;
}

/** Starts `mpmc broker` on 127.0.0.1 with a free port and waits until it listens. */
export async function startBroker(group: ProcessGroup, options: BrokerOptions): Promise<StartedBroker> {
  const args = ["broker", "--host", "127.0.0.1", "--port", "0", "--capacity", String(options.capacity), "--shutdown-grace", "2s"];
  if (options.dataDir !== undefined) {
    args.push("--data-dir", options.dataDir);
  }
  const execArgv: string[] = [];
  if (options.cpuProfileDir !== undefined) {
    execArgv.push("--cpu-prof", "--cpu-prof-dir", options.cpuProfileDir);
  }
  if (options.gcHook === true) {
    execArgv.push("--expose-gc", "--import", pathToFileURL(benchScript("gc-hook.js")).href);
  }
  const child = group.startService(options.name ?? "broker", [...args, ...commonArgs], execArgv);
  const { port } = await child.waitFor("listening", startTimeoutMs);
  const address = `127.0.0.1:${String(port)}`;
  return { child, address, client: connectTo(BrokerService, address) };
}

export interface MemoryReading {
  /** VmRSS from /proc after the collections. */
  rssBytes: number;
  heapUsedBytes: number;
  /** Memory of C++ objects bound to JavaScript objects, ArrayBuffer contents included. */
  externalBytes: number;
  arrayBuffersBytes: number;
}

/** Runs two full GCs in a broker started with gcHook, then reads its memory. */
export async function measureMemory(broker: StartedBroker): Promise<MemoryReading> {
  broker.child.send({ type: "bench-gc" });
  const usage = await broker.child.waitFor("bench-memory", 60_000);
  if (typeof usage.error === "string") {
    throw new Error(`${broker.child.name} could not run a GC: ${usage.error}`);
  }
  return {
    rssBytes: residentBytes(broker.child.pid),
    heapUsedBytes: Number(usage.heapUsed),
    externalBytes: Number(usage.external),
    arrayBuffersBytes: Number(usage.arrayBuffers),
  };
}

/** Starts `mpmc aggregator` following a broker and waits until it listens. */
export async function startAggregator(group: ProcessGroup, brokerAddress: string): Promise<{ child: BenchChild; address: string }> {
  const args = ["aggregator", "--host", "127.0.0.1", "--port", "0", "--broker", brokerAddress, "--shutdown-grace", "2s"];
  // A progress line per billion results: none during a benchmark.
  const child = group.startService("aggregator", [...args, "--progress-every", "1000000000", ...commonArgs]);
  const { port } = await child.waitFor("listening", startTimeoutMs);
  return { child, address: `127.0.0.1:${String(port)}` };
}

export interface ConsumerProcessOptions {
  count: number;
  credit: number;
}

/** Starts consumer processes with the benchmark's no-op handler, so they spend no time in handlers. */
export function startConsumers(group: ProcessGroup, address: string, options: ConsumerProcessOptions): BenchChild[] {
  const handler = benchScript("noop-handler.js");
  return Array.from({ length: options.count }, (_, i) =>
    group.startService(`consumer-${i + 1}`, [
      "consumer",
      "--broker",
      address,
      "--id",
      `bench-consumer-${i + 1}`,
      "--credit",
      String(options.credit),
      "--handler",
      handler,
      // Jobs wait in a loaded queue for long; one warning per job would cost more than the job.
      "--queue-warn",
      "24h",
      "--shutdown-grace",
      "2s",
      ...commonArgs,
    ]),
  );
}

export interface ProducerProcessOptions {
  count: number;
  jobsPerProducer: number;
  batchSize: number;
  payloadBytes: number;
}

/** Starts producer processes that each send a fixed number of jobs as fast as the server takes them. */
export function startProducers(group: ProcessGroup, address: string, options: ProducerProcessOptions): BenchChild[] {
  return Array.from({ length: options.count }, (_, i) =>
    group.startService(`producer-${i + 1}`, [
      "producer",
      "--broker",
      address,
      "--id",
      `bench-producer-${i + 1}`,
      "--count",
      String(options.jobsPerProducer),
      "--batch-size",
      String(options.batchSize),
      "--payload-bytes",
      String(options.payloadBytes),
      ...commonArgs,
    ]),
  );
}

/**
 * Calls check every intervalMs until it returns true. Throws after timeoutMs,
 * naming what it waited for.
 */
export async function pollUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<void> {
  const attempts = Math.max(1, Math.ceil(timeoutMs / intervalMs));
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (await check()) {
      return;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * Follows a broker's WatchStats stream at its shortest interval, 50 ms, and
 * notes when gauges first meet a condition. Times are performance.now() at
 * arrival, so each is late by up to 50 ms plus the stream's delivery time.
 */
export class GaugeWatcher {
  latest: QueueGauges | undefined;
  private readonly controller = new AbortController();
  private readonly waiters: { predicate: (g: QueueGauges) => boolean; resolve: (atMs: number) => void }[] = [];
  private readonly following: Promise<void>;
  private failure: unknown;

  constructor(client: Client<typeof BrokerService>) {
    this.following = this.follow(client);
  }

  /** Resolves with the arrival time of the first gauges that meet predicate; rejects after timeoutMs. */
  async until(what: string, predicate: (g: QueueGauges) => boolean, timeoutMs: number): Promise<number> {
    if (this.latest !== undefined && predicate(this.latest)) {
      return performance.now();
    }
    let timer: NodeJS.Timeout | undefined;
    const met = new Promise<number>((resolve) => this.waiters.push({ predicate, resolve }));
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const outcome = await Promise.race([met, timedOut]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      const failure = this.failure === undefined ? "" : `; the WatchStats stream failed: ${String(this.failure)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${failure}`);
    }
    return outcome;
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.following;
  }

  private async follow(client: Client<typeof BrokerService>): Promise<void> {
    try {
      for await (const response of client.watchStats({ minInterval: durationOfMs(50) }, { signal: this.controller.signal })) {
        const arrivedAt = performance.now();
        const gauges = response.gauges;
        if (gauges === undefined) {
          continue;
        }
        this.latest = gauges;
        for (let i = this.waiters.length - 1; i >= 0; i--) {
          const waiter = this.waiters[i];
          if (waiter !== undefined && waiter.predicate(gauges)) {
            this.waiters.splice(i, 1);
            waiter.resolve(arrivedAt);
          }
        }
      }
    } catch (err) {
      if (!this.controller.signal.aborted) {
        this.failure = err;
      }
    }
  }
}
