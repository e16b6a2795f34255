import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { MpmcError, type Logger } from "@mpmc/common";
import type { JobRecord, ResultRecord } from "../core/types.js";
import { emptyState, type BrokerStore, type JournalEntry, type PersistedCounters, type RecoveredState } from "./store.js";

/**
 * The durability of a commit. "full" syncs the write-ahead log
 * at every commit, so a committed job survives a power loss. "normal" syncs at
 * checkpoints only: a committed job survives the broker process dying, but the
 * last commits can be lost when the machine does. "off" leaves it to the OS.
 */
export type FsyncPolicy = "full" | "normal" | "off";

export interface SqliteStoreOptions {
  dataDir: string;
  fsync: FsyncPolicy;
  /** Maximum time an appended entry waits for its group commit, in ms. */
  commitIntervalMs: number;
  /** Results kept for subscribers that resume; older ones are deleted. */
  resultWindow: number;
  /** Maximum size of the store file, in bytes; undefined means no limit but the disk's. */
  maxBytes?: number | undefined;
  logger: Logger;
}

/** Names this file format; a store with another name or version is never loaded. */
const formatName = "mpmc-broker-store";
const formatVersion = 1;
const fileName = "broker.sqlite";
const retryAfterFailureMs = 500;
/**
 * New jobs are refused once the store uses this share of max-store-bytes. The
 * rest keeps room for commits that settle jobs, which free space, because a
 * commit that runs out of space rolls back whole, deletions included.
 */
const headroomShare = 0.8;

interface PendingFlush {
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * The durable store: SQLite through better-sqlite3, in WAL mode. Entries are
 * grouped into one transaction per commit interval, so throughput does not
 * pay one disk sync per job. Settled jobs are deleted as their results commit,
 * so the file holds only what is unsettled plus the result window.
 */
export class SqliteStore implements BrokerStore {
  readonly path: string;
  private readonly db: Database.Database;
  private pending: JournalEntry[] = [];
  private waiting: PendingFlush[] = [];
  private timer: NodeJS.Timeout | undefined;
  private nextBack = 1;
  private nextFront = 0;
  private failedWith: MpmcError | undefined;
  /** Set while the file is within headroomShare of max-store-bytes, so that settling jobs can still commit. */
  private nearlyFull: MpmcError | undefined;
  private closed = false;
  private committedSequence = 0;
  private readonly statements: ReturnType<SqliteStore["prepare"]>;
  private readCounters: (() => PersistedCounters) | undefined;

  constructor(private readonly options: SqliteStoreOptions) {
    mkdirSync(options.dataDir, { recursive: true });
    this.path = join(options.dataDir, fileName);
    try {
      this.db = new Database(this.path);
      this.db.pragma("journal_mode = WAL");
      this.db.pragma(`synchronous = ${options.fsync.toUpperCase()}`);
      const check = this.db.pragma("quick_check", { simple: true });
      if (check !== "ok") {
        throw new Error(String(check));
      }
    } catch (err) {
      throw new MpmcError(
        "failed_precondition",
        `the store at ${this.path} is damaged and was not loaded: ${(err as Error).message}. ` +
          "Move it away to start empty, or restore it from a backup",
        { cause: err },
      );
    }
    if (options.maxBytes !== undefined) {
      const pageSize = Number(this.db.pragma("page_size", { simple: true }));
      this.db.pragma(`max_page_count = ${Math.max(16, Math.floor(options.maxBytes / pageSize))}`);
    }
    this.createSchema();
    this.statements = this.prepare();
  }

  get failure(): MpmcError | undefined {
    return this.failedWith ?? this.nearlyFull;
  }

  get committedResultSequence(): number {
    return this.committedSequence;
  }

  load(): RecoveredState {
    const state = emptyState();
    const meta = this.readMeta();
    state.nextJobId = Number(meta.get("next_job_id") ?? "1");
    const counters = meta.get("counters");
    state.counters = counters === undefined ? undefined : (JSON.parse(counters) as PersistedCounters);

    const rows = this.db.prepare("SELECT * FROM jobs ORDER BY position").all() as JobRow[];
    for (const row of rows) {
      const job = jobOf(row);
      state.nextJobId = Math.max(state.nextJobId, job.id + 1);
      switch (row.state) {
        case "queued":
          state.queue.push(job);
          break;
        case "leased":
          state.inFlight.push(job);
          break;
        case "retrying":
          state.retrying.push({ job, retryAtMs: row.retry_at_ms ?? 0 });
          break;
        case "dead":
          state.deadLetters.push({
            job,
            error: row.error ?? "",
            consumerId: row.consumer_id ?? "",
            deadLetteredAtMs: row.dead_at_ms ?? 0,
          });
          break;
      }
    }
    const positions = this.db.prepare("SELECT MIN(position) AS low, MAX(position) AS high FROM jobs").get() as {
      low: number | null;
      high: number | null;
    };
    this.nextFront = Math.min(0, (positions.low ?? 1) - 1);
    this.nextBack = Math.max(1, (positions.high ?? 0) + 1);
    state.results = (this.db.prepare("SELECT * FROM results ORDER BY sequence").all() as ResultRow[]).map(resultOf);
    this.committedSequence = state.results.at(-1)?.sequence ?? 0;
    return state;
  }

  append(entry: JournalEntry): void {
    if (this.closed) {
      return;
    }
    this.pending.push(entry);
    this.schedule(this.options.commitIntervalMs);
  }

  setCountersSource(read: () => PersistedCounters): void {
    this.readCounters = read;
  }

  flush(): Promise<void> {
    if (this.pending.length === 0 && this.failedWith === undefined) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.schedule(this.failedWith === undefined ? this.options.commitIntervalMs : retryAfterFailureMs);
    });
  }

  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.commit();
    this.closed = true;
    this.db.close();
  }

  /** Refuses new jobs near max-store-bytes, and accepts them again once settled jobs have freed space. */
  private checkSize(): void {
    const maxBytes = this.options.maxBytes;
    if (maxBytes === undefined) {
      return;
    }
    const pageSize = Number(this.db.pragma("page_size", { simple: true }));
    const pages = Number(this.db.pragma("page_count", { simple: true })) - Number(this.db.pragma("freelist_count", { simple: true }));
    const used = pages * pageSize;
    if (used < maxBytes * headroomShare) {
      this.nearlyFull = undefined;
      return;
    }
    if (this.nearlyFull === undefined) {
      this.options.logger.warn({ path: this.path, usedBytes: used, maxStoreBytes: maxBytes }, "store nearly full; accepting no new jobs");
    }
    this.nearlyFull = new MpmcError(
      "resource_exhausted",
      `the broker's store is full: ${used} of ${maxBytes} bytes (max-store-bytes) in use; new jobs are accepted again as queued jobs settle`,
    );
  }

  private schedule(delayMs: number): void {
    if (this.timer !== undefined) {
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.commit();
    }, delayMs);
  }

  /** Applies every pending entry in one transaction, then settles the flushes that waited for it. */
  private commit(): void {
    if (this.closed || (this.pending.length === 0 && this.waiting.length === 0)) {
      return;
    }
    const entries = this.pending;
    const waiting = this.waiting;
    this.waiting = [];
    try {
      this.db.transaction(() => {
        for (const entry of entries) {
          this.apply(entry);
        }
        if (this.readCounters !== undefined && entries.length > 0) {
          this.statements.setMeta.run("counters", JSON.stringify(this.readCounters()));
        }
      })();
    } catch (err) {
      // The transaction rolled back: keep the entries and try again, and refuse new jobs meanwhile.
      const full = (err as { code?: string }).code === "SQLITE_FULL";
      const error = new MpmcError(
        full ? "resource_exhausted" : "unavailable",
        full
          ? `the broker's store is full (${this.path}); free disk space or raise max-store-bytes`
          : `the broker could not write its store (${this.path}): ${(err as Error).message}`,
        { cause: err },
      );
      if (this.failedWith === undefined) {
        this.options.logger.error({ err, path: this.path, entries: entries.length }, "store commit failed; accepting no new jobs until it succeeds");
      }
      this.failedWith = error;
      for (const flush of waiting) {
        flush.reject(error);
      }
      this.schedule(retryAfterFailureMs);
      return;
    }
    this.pending = [];
    if (this.failedWith !== undefined) {
      this.options.logger.info({ path: this.path }, "store commits succeed again");
    }
    this.failedWith = undefined;
    for (const entry of entries) {
      if (entry.kind === "settled" && entry.result.sequence > this.committedSequence) {
        this.committedSequence = entry.result.sequence;
      }
    }
    this.checkSize();
    for (const flush of waiting) {
      flush.resolve();
    }
    if (this.pending.length > 0) {
      this.schedule(this.options.commitIntervalMs);
    }
  }

  private apply(entry: JournalEntry): void {
    const s = this.statements;
    switch (entry.kind) {
      case "accepted": {
        const job = entry.job;
        s.insertJob.run({
          id: job.id,
          producer_id: job.producerId,
          data: job.data.toString(),
          payload: Buffer.from(job.payload),
          attributes: JSON.stringify(job.attributes),
          created_at_ms: job.createdAtMs,
          sequence: job.sequence,
          lease_ms: job.leaseMs,
          attempt: job.attempt,
          position: this.nextBack++,
        });
        s.setMeta.run("next_job_id", String(job.id + 1));
        return;
      }
      case "delivered":
        s.markLeased.run(entry.attempt, entry.jobId);
        return;
      case "returned":
        s.markQueued.run(entry.attempt, entry.to === "front" ? this.nextFront-- : this.nextBack++, entry.jobId);
        return;
      case "retrying":
        s.markRetrying.run(entry.attempt, entry.retryAtMs, this.nextBack++, entry.jobId);
        return;
      case "settled": {
        const r = entry.result;
        s.deleteJob.run(r.jobId);
        s.insertResult.run({
          sequence: r.sequence,
          job_id: r.jobId,
          consumer_id: r.consumerId,
          producer_id: r.producerId,
          data: r.data.toString(),
          output: r.output.toString(),
          attempt: r.attempt,
          processing_ms: r.processingMs,
          queue_wait_ms: r.queueWaitMs,
          completed_at_ms: r.completedAtMs,
        });
        s.pruneResults.run(r.sequence - this.options.resultWindow);
        return;
      }
      case "dead-lettered": {
        const d = entry.deadLetter;
        s.markDead.run(d.job.attempt, d.error, d.consumerId, d.deadLetteredAtMs, d.job.id);
        return;
      }
      case "purged":
        s.deleteJob.run(entry.jobId);
        return;
      case "closed":
        return;
    }
  }

  private createSchema(): void {
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY,
        producer_id TEXT NOT NULL,
        data TEXT NOT NULL,
        payload BLOB NOT NULL,
        attributes TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        sequence INTEGER NOT NULL,
        lease_ms INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'retrying', 'dead')),
        position INTEGER NOT NULL,
        retry_at_ms INTEGER,
        error TEXT,
        consumer_id TEXT,
        dead_at_ms INTEGER
      );
      CREATE TABLE IF NOT EXISTS results (
        sequence INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL,
        consumer_id TEXT NOT NULL,
        producer_id TEXT NOT NULL,
        data TEXT NOT NULL,
        output TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        processing_ms REAL NOT NULL,
        queue_wait_ms REAL NOT NULL,
        completed_at_ms INTEGER NOT NULL
      );
    `);
    const meta = this.readMeta();
    const format = meta.get("format");
    const version = meta.get("format_version");
    if (format === undefined) {
      const jobs = (this.db.prepare("SELECT COUNT(*) AS n FROM jobs").get() as { n: number }).n;
      if (jobs > 0) {
        throw new MpmcError("failed_precondition", `the store at ${this.path} has jobs but no format record; it was not written by this broker`);
      }
      const insert = this.db.prepare("INSERT INTO meta (key, value) VALUES (?, ?)");
      insert.run("format", formatName);
      insert.run("format_version", String(formatVersion));
      return;
    }
    if (format !== formatName || version !== String(formatVersion)) {
      throw new MpmcError(
        "failed_precondition",
        `the store at ${this.path} is "${format}" version ${version}; this broker reads "${formatName}" version ${formatVersion} only`,
      );
    }
  }

  private readMeta(): Map<string, string> {
    const rows = this.db.prepare("SELECT key, value FROM meta").all() as { key: string; value: string }[];
    return new Map(rows.map((row) => [row.key, row.value]));
  }

  private prepare() {
    const db = this.db;
    return {
      insertJob: db.prepare(
        `INSERT INTO jobs (id, producer_id, data, payload, attributes, created_at_ms, sequence, lease_ms, attempt, state, position)
         VALUES (@id, @producer_id, @data, @payload, @attributes, @created_at_ms, @sequence, @lease_ms, @attempt, 'queued', @position)`,
      ),
      markLeased: db.prepare("UPDATE jobs SET state = 'leased', attempt = ? WHERE id = ?"),
      markQueued: db.prepare("UPDATE jobs SET state = 'queued', attempt = ?, position = ?, retry_at_ms = NULL WHERE id = ?"),
      markRetrying: db.prepare("UPDATE jobs SET state = 'retrying', attempt = ?, retry_at_ms = ?, position = ? WHERE id = ?"),
      markDead: db.prepare("UPDATE jobs SET state = 'dead', attempt = ?, error = ?, consumer_id = ?, dead_at_ms = ? WHERE id = ?"),
      deleteJob: db.prepare("DELETE FROM jobs WHERE id = ?"),
      insertResult: db.prepare(
        `INSERT OR REPLACE INTO results (sequence, job_id, consumer_id, producer_id, data, output, attempt, processing_ms, queue_wait_ms, completed_at_ms)
         VALUES (@sequence, @job_id, @consumer_id, @producer_id, @data, @output, @attempt, @processing_ms, @queue_wait_ms, @completed_at_ms)`,
      ),
      pruneResults: db.prepare("DELETE FROM results WHERE sequence <= ?"),
      setMeta: db.prepare("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
    };
  }
}

interface JobRow {
  id: number;
  producer_id: string;
  data: string;
  payload: Buffer;
  attributes: string;
  created_at_ms: number;
  sequence: number;
  lease_ms: number;
  attempt: number;
  state: "queued" | "leased" | "retrying" | "dead";
  position: number;
  retry_at_ms: number | null;
  error: string | null;
  consumer_id: string | null;
  dead_at_ms: number | null;
}

interface ResultRow {
  sequence: number;
  job_id: number;
  consumer_id: string;
  producer_id: string;
  data: string;
  output: string;
  attempt: number;
  processing_ms: number;
  queue_wait_ms: number;
  completed_at_ms: number;
}

function jobOf(row: JobRow): JobRecord {
  return {
    id: row.id,
    producerId: row.producer_id,
    data: BigInt(row.data),
    payload: new Uint8Array(row.payload),
    attributes: JSON.parse(row.attributes) as Record<string, string>,
    createdAtMs: row.created_at_ms,
    sequence: row.sequence,
    leaseMs: row.lease_ms,
    attempt: row.attempt,
  };
}

function resultOf(row: ResultRow): ResultRecord {
  return {
    sequence: row.sequence,
    jobId: row.job_id,
    consumerId: row.consumer_id,
    producerId: row.producer_id,
    data: BigInt(row.data),
    output: BigInt(row.output),
    attempt: row.attempt,
    processingMs: row.processing_ms,
    queueWaitMs: row.queue_wait_ms,
    completedAtMs: row.completed_at_ms,
  };
}
