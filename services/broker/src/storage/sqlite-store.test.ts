import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MpmcError } from "@mpmc/common";
import { BrokerCore } from "../core/broker-core.js";
import { ManualClock } from "../core/clock.js";
import type { ConsumerSink, JobInput, Lease } from "../core/types.js";
import { SqliteStore, type SqliteStoreOptions } from "./sqlite-store.js";

const logger = pino({ level: "silent" });

function job(data: number, sequence = 0): JobInput {
  return { data: BigInt(data), payload: new Uint8Array([data]), attributes: { n: String(data) }, sequence, leaseMs: 0 };
}

/** Returns a consumer sink that records deliveries. */
function recordingSink(): ConsumerSink & { leases: Lease[] } {
  const leases: Lease[] = [];
  return { leases, deliver: (batch) => leases.push(...batch), end: () => {} };
}

describe("SqliteStore", () => {
  let dir: string;
  let stores: SqliteStore[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "mpmc-store-"));
    stores = [];
  });

  afterEach(async () => {
    for (const store of stores) {
      await store.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  function open(overrides: Partial<SqliteStoreOptions> = {}): SqliteStore {
    const store = new SqliteStore({ dataDir: dir, fsync: "full", commitIntervalMs: 1, resultWindow: 100, logger, ...overrides });
    stores.push(store);
    return store;
  }

  /** Opens a store on dir and returns a core that journals to it, restored from what it contains. */
  function openBroker(clock = new ManualClock(), overrides: Partial<SqliteStoreOptions> = {}): { core: BrokerCore; store: SqliteStore } {
    const store = open(overrides);
    const core = new BrokerCore({ capacity: 100, leaseMs: 1_000, clock, maxAttempts: 3, journal: (entry) => store.append(entry) });
    core.restore(store.load());
    store.setCountersSource(() => core.persistentCounters());
    return { core, store };
  }

  it("starts empty in a new folder", () => {
    const state = open().load();
    expect(state.nextJobId).toBe(1);
    expect(state.queue).toEqual([]);
    expect(state.inFlight).toEqual([]);
    expect(state.counters).toBeUndefined();
  });

  it("restores queue order, counters and cursors", async () => {
    const first = openBroker();
    first.core.offer("p1", [job(1, 1), job(2, 2), job(3, 3)]);
    first.core.offer("p2", [job(4)]);
    await first.store.flush();
    await first.store.close();

    const second = openBroker();
    const snapshot = second.core.snapshot();
    expect(snapshot.created).toBe(4);
    expect(snapshot.queued).toBe(4);
    expect(second.core.producerCursor("p1")).toBe(3);
    const sink = recordingSink();
    second.core.attach("c1", 10, sink);
    expect(sink.leases.map((lease) => Number(lease.job.data))).toEqual([1, 2, 3, 4]);
    expect(sink.leases.map((lease) => lease.job.id)).toEqual([1, 2, 3, 4]);
    expect(sink.leases[0]?.job.attributes).toEqual({ n: "1" });
    expect([...(sink.leases[0]?.job.payload ?? [])]).toEqual([1]);
    // Job ids continue after the restored ones.
    const { accepted } = second.core.offer("p1", [job(5, 4)]);
    expect(accepted[0]?.id).toBe(5);
  });

  it("returns jobs in flight to the front with attempt raised", async () => {
    const first = openBroker();
    first.core.offer("p1", [job(1), job(2), job(3)]);
    first.core.attach("c1", 2, recordingSink());
    await first.store.flush();
    // A crash: the store is not closed, and nothing after the last commit counts.
    const second = openBroker();
    expect(second.core.snapshot().redelivered).toBe(2);
    const sink = recordingSink();
    second.core.attach("c2", 10, sink);
    expect(sink.leases.map((lease) => [lease.job.id, lease.job.attempt])).toEqual([
      [1, 2],
      [2, 2],
      [3, 1],
    ]);
  });

  it("keeps settled jobs out and results in the window", async () => {
    const first = openBroker();
    first.core.offer("p1", [job(1), job(2)]);
    const sink = recordingSink();
    const session = first.core.attach("c1", 10, sink);
    const [a] = sink.leases;
    first.core.acknowledge(session, [{ jobId: a!.job.id, token: a!.token, output: 2n, processingMs: 5 }]);
    await first.store.flush();
    expect(first.store.committedResultSequence).toBe(1);

    const second = openBroker();
    const snapshot = second.core.snapshot();
    expect(snapshot.processed).toBe(1);
    expect(snapshot.created).toBe(2);
    expect(snapshot.queued).toBe(1);
    expect(snapshot.lastResultSequence).toBe(1);
    expect(second.core.resultsAfter(0, 10)?.map((r) => [r.jobId, r.output])).toEqual([[1, 2n]]);
    expect(snapshot.consumers.find((c) => c.consumerId === "c1")?.processed).toBe(1);
    const rows = new Database(join(dir, "broker.sqlite"), { readonly: true }).prepare("SELECT id FROM jobs").all();
    expect(rows).toEqual([{ id: 2 }]);
  });

  it("restores retries and dead letters", async () => {
    const clock = new ManualClock();
    const first = openBroker(clock);
    first.core.offer("p1", [job(1), job(2)]);
    const sink = recordingSink();
    const session = first.core.attach("c1", 10, sink);
    const [a, b] = sink.leases;
    first.core.nack(session, [
      { jobId: a!.job.id, token: a!.token, error: "try again", permanent: false },
      { jobId: b!.job.id, token: b!.token, error: "bad input", permanent: true },
    ]);
    await first.store.flush();

    const second = openBroker(clock);
    const snapshot = second.core.snapshot();
    expect(snapshot.waitingRetry).toBe(1);
    expect(snapshot.deadLetters).toBe(1);
    expect(snapshot.failedAttempts).toBe(2);
    expect(second.core.listDeadLetters(0, 10).entries.map((e) => e.error)).toEqual(["rejected as not retryable: bad input"]);
    clock.advance(60_000);
    expect(second.core.snapshot().queued).toBe(1);
  });

  it("refuses a file that is not a store", () => {
    writeFileSync(join(dir, "broker.sqlite"), "this is not a database, just text that fills a page ".repeat(200));
    expect(() => open()).toThrow(/damaged and was not loaded/);
  });

  it("refuses a truncated store", async () => {
    const first = openBroker();
    first.core.offer("p1", Array.from({ length: 200 }, (_, i) => job(i)));
    await first.store.flush();
    await first.store.close();
    const path = join(dir, "broker.sqlite");
    const size = statSync(path).size;
    expect(size).toBeGreaterThan(8_192);
    truncateSync(path, Math.floor(size / 2));
    expect(() => openBroker()).toThrow(MpmcError);
    expect(readFileSync(path).length).toBe(Math.floor(size / 2));
  });

  it("refuses a store of another format version", async () => {
    const first = open();
    await first.close();
    const db = new Database(join(dir, "broker.sqlite"));
    db.prepare("UPDATE meta SET value = '99' WHERE key = 'format_version'").run();
    db.close();
    expect(() => open()).toThrow(/version 99; this broker reads "mpmc-broker-store" version 1 only/);
  });

  it("refuses new jobs near max-store-bytes and takes them again once jobs settle", async () => {
    const { core, store } = openBroker(new ManualClock(), { maxBytes: 131_072 });
    const big = new Uint8Array(4_000);
    let offered = 0;
    while (store.failure === undefined && offered < 100) {
      core.offer("p1", [{ ...job(offered), payload: big }]);
      offered++;
      await store.flush();
    }
    expect(offered).toBeLessThan(100);
    expect(store.failure).toBeInstanceOf(MpmcError);
    expect(store.failure?.code).toBe("resource_exhausted");
    expect(store.failure?.message).toContain("max-store-bytes");

    // Settling jobs frees pages: drain the queue, then the pending commit goes through.
    const sink = recordingSink();
    const session = core.attach("c1", 100, sink);
    core.acknowledge(
      session,
      sink.leases.map((lease) => ({ jobId: lease.job.id, token: lease.token, output: 0n, processingMs: 1 })),
    );
    await store.flush();
    expect(store.failure).toBeUndefined();
    expect(core.snapshot().processed).toBe(offered);
  });

  it("restores jobs returned by a lost consumer in queue order", async () => {
    const first = openBroker();
    first.core.offer("p1", [job(1), job(2), job(3), job(4), job(5)]);
    const session = first.core.attach("c1", 5, recordingSink());
    first.core.detach(session);
    await first.store.flush();
    const sink = recordingSink();
    first.core.attach("c2", 5, sink);
    const memoryOrder = sink.leases.map((lease) => lease.job.id);
    await first.store.close();

    const second = openBroker();
    const recovered = recordingSink();
    second.core.attach("c3", 5, recovered);
    expect(memoryOrder).toEqual([1, 2, 3, 4, 5]);
    expect(recovered.leases.map((lease) => lease.job.id)).toEqual([1, 2, 3, 4, 5]);
  });

  it("keeps a closed queue closed across a restart", async () => {
    const first = openBroker();
    first.core.offer("p1", [job(1)]);
    first.core.close();
    await first.store.flush();
    await first.store.close();

    const second = openBroker();
    expect(second.core.closed).toBe(true);
    expect(second.core.drained).toBe(false);
    expect(() => second.core.offer("p1", [job(2)])).toThrow(/closed/);
    const sink = recordingSink();
    const session = second.core.attach("c1", 1, sink);
    const [lease] = sink.leases;
    second.core.acknowledge(session, [{ jobId: lease!.job.id, token: lease!.token, output: 2n, processingMs: 1 }]);
    expect(second.core.drained).toBe(true);
  });
});

