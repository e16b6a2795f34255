import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { BrokerService, connectTo, type BrokerStats } from "@mpmc/common";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";

interface ResultLine {
  jobId: string;
  producerId: string;
  data?: string;
  output?: string;
}

/** Returns a free loopback port. The broker restarts on the same one, so clients find it again. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

describe("durable broker", () => {
  const processes: CliProcess[] = [];
  let dir: string | undefined;
  let inProcess: TestBroker | undefined;

  afterEach(async () => {
    await inProcess?.stop();
    inProcess = undefined;
    for (const proc of processes) {
      killIfRunning(proc);
    }
    processes.length = 0;
    if (dir !== undefined) {
      await rm(dir, { recursive: true, force: true });
    }
  });

  function start(args: string[]): CliProcess {
    const proc = startCli([...args, "--log-level", "warn"]);
    processes.push(proc);
    return proc;
  }

  it("loses no accepted job across ten kill -9 restarts", async () => {
    dir = await mkdtemp(join(tmpdir(), "mpmc-durable-"));
    const dataDir = join(dir, "store");
    const resultsFile = join(dir, "results.ndjson");
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const client = connectTo(BrokerService, address);
    const brokerArgs = ["broker", "--host", "127.0.0.1", "--port", String(port), "--data-dir", dataDir, "--capacity", "50"];
    // Jobs in flight at a crash raise their attempt; this keeps them out of the dead letters.
    brokerArgs.push("--max-attempts", "100", "--metrics-port", "-1");

    const startBroker = async (): Promise<CliProcess> => {
      const broker = start(brokerArgs);
      await waitFor("the broker to answer", async () => (await client.getStats({}, { timeoutMs: 1_000 }).catch(() => undefined))?.stats, 20_000);
      return broker;
    };

    let broker = await startBroker();
    const aggregator = start(["aggregator", "--broker", address, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1", "--results-file", resultsFile]);
    const consumers = ["c1", "c2"].map((id) =>
      start(["consumer", "--broker", address, "--id", id, "--credit", "3", "--work-ms", "10-30", "--metrics-port", "-1"]),
    );
    const producers = ["p1", "p2"].map((id) =>
      // 400 jobs at 60 per second: the producers keep publishing while the broker is killed.
      start(["producer", "--broker", address, "--id", id, "--count", "400", "--batch-size", "5", "--rate", "60", "--metrics-port", "-1"]),
    );

    for (let restart = 0; restart < 10; restart++) {
      await sleep(150 + Math.floor(Math.random() * 350));
      broker.child.kill("SIGKILL");
      await broker.exited;
      broker = await startBroker();
    }

    for (const producer of producers) {
      expect(await producer.exited).toBe(0);
    }
    // The kills broke the producers' streams, and each resumed from the broker's cursor.
    const resumed = producers.flatMap((producer) => producer.logs()).filter((line) => line.msg === "publish stream failed; resuming");
    expect(resumed.length).toBeGreaterThanOrEqual(2);
    await client.closeQueue({});
    for (const consumer of consumers) {
      expect(await consumer.exited).toBe(0);
    }

    const stats = (await client.getStats({})).stats as BrokerStats;
    expect(stats.created).toBe(800n);
    expect(stats.processed).toBe(800n);
    expect(stats.inFlight).toBe(0n);
    expect(stats.queued).toBe(0n);
    expect(stats.waitingRetry).toBe(0n);
    expect(stats.deadLettered).toBe(0n);
    expect(stats.drained).toBe(true);
    expect(stats.producers.map((p) => [p.producerId, p.lastSequence, p.created]).sort()).toEqual([
      ["p1", 400n, 400n],
      ["p2", 400n, 400n],
    ]);
    // Jobs that were in flight at a crash came back; at least one crash caught some.
    expect(stats.redelivered).toBeGreaterThan(0n);

    // The aggregator followed the results across every restart, resuming after the last one it saw.
    await waitFor("the aggregator to write 800 results", async () => {
      const text = await readFile(resultsFile, "utf8").catch(() => "");
      return text.split("\n").filter((line) => line !== "").length >= 800;
    }, 30_000);
    await sleep(200);
    const lines = (await readFile(resultsFile, "utf8")).trim().split("\n").map((line) => JSON.parse(line) as ResultLine);
    expect(lines).toHaveLength(800);
    expect(new Set(lines.map((line) => line.jobId)).size).toBe(800);
    for (const line of lines) {
      expect(BigInt(line.output ?? "0")).toBe(BigInt(line.data ?? "0") * 2n);
    }
    killIfRunning(aggregator);
    broker.child.kill("SIGTERM");
    expect(await broker.exited).toBe(0);
  }, 180_000);

  it("rejects new jobs with RESOURCE_EXHAUSTED when the store is full", async () => {
    dir = await mkdtemp(join(tmpdir(), "mpmc-full-"));
    inProcess = await startTestBroker({ dataDir: join(dir, "store"), maxStoreBytes: 262_144, capacity: 1_000 });
    const payload = new Uint8Array(8_000);
    let refused: ConnectError | undefined;
    let accepted = 0;
    for (let i = 1; i <= 200 && refused === undefined; i++) {
      try {
        await inProcess.client.submit({ producerId: "p1", job: { data: BigInt(i), payload, sequence: BigInt(i) } });
        accepted++;
      } catch (err) {
        refused = ConnectError.from(err);
      }
    }
    expect(refused?.code).toBe(Code.ResourceExhausted);
    expect(refused?.rawMessage).toContain("max-store-bytes");
    expect(accepted).toBeGreaterThan(0);
    // The broker keeps serving, and every job it confirmed is still there.
    const stats = (await inProcess.client.getStats({})).stats;
    expect(stats?.created).toBe(BigInt(accepted));
    expect(stats?.queued).toBe(BigInt(accepted));
  });

  it("refuses to start on a damaged store", async () => {
    dir = await mkdtemp(join(tmpdir(), "mpmc-damaged-"));
    const dataDir = join(dir, "store");
    await mkdir(dataDir);
    await writeFile(join(dataDir, "broker.sqlite"), "not a database ".repeat(1_000));
    const broker = start(["broker", "--host", "127.0.0.1", "--port", "0", "--data-dir", dataDir, "--metrics-port", "-1"]);
    expect(await broker.exited).not.toBe(0);
    expect(broker.stderr() + broker.stdout()).toContain("is damaged and was not loaded");
  });
});
