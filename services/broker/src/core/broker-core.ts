import { MpmcError } from "@mpmc/common";
import { systemClock, type Clock } from "./clock.js";
import { ConsumerPool } from "./consumer-pool.js";
import { Counters } from "./counters.js";
import { DeadLetters, type DeadLetterRecord } from "./dead-letters.js";
import { Deque } from "./deque.js";
import { LeaseTimers } from "./lease-timers.js";
import { ResultWindow } from "./result-window.js";
import { retryDelayMs, type RetryBackoff } from "./retry-backoff.js";
import type { JournalEntry, PersistedCounters, RecoveredState } from "../storage/store.js";
import type {
  AckInput,
  BrokerSnapshot,
  ConsumerSink,
  ExtendInput,
  JobInput,
  JobRecord,
  Lease,
  LeaseInfo,
  LeaseRef,
  NackInput,
  OfferResult,
  QueueGauges,
  Rejection,
  ResultRecord,
  ResultSink,
} from "./types.js";

export interface BrokerCoreOptions {
  /** Most jobs the queue holds; producers wait while it is full. */
  capacity: number;
  /** How long a consumer may hold a job before it goes back to the queue, unless the job sets its own. */
  leaseMs: number;
  /** Attempts before a failing job moves to the dead letters. Default 5. */
  maxAttempts?: number;
  /** Wait before a failed job's next attempt. Default 500 ms doubling up to 30 s. */
  retryBackoff?: RetryBackoff;
  /** Results kept for subscribers that resume or read slowly. Default 10,000. */
  resultWindow?: number;
  clock?: Clock;
  /** Source of jitter for retry backoff, returning [0, 1). */
  random?: () => number;
  /** Receives every change to a job's place, in order, for a durable store. */
  journal?: (entry: JournalEntry) => void;
}

/** Largest credit one consumer may ask for. */
export const maxCredit = 10_000;

export const defaultCoreOptions = {
  maxAttempts: 5,
  retryBackoff: { minMs: 500, maxMs: 30_000 },
  resultWindow: 10_000,
} as const;

interface Session {
  readonly id: number;
  readonly consumerId: string;
  readonly credit: number;
  readonly sink: ConsumerSink;
  /** Ids of the jobs this session holds, each with a live lease. */
  readonly held: Set<number>;
  stopping: boolean;
  /** False while the stream's write buffer is full. */
  writable: boolean;
}

interface RoomWaiter {
  resolve: () => void;
  reject: (err: Error) => void;
  /** Set when the waiter's signal aborted; notifyRoom skips it without spending room on it. */
  cancelled: boolean;
}

/** The cause of a delivery that ended without a result. */
type LostReason = "consumer-lost" | "lease-expired" | "released-by-admin" | "broker-restarted";

/**
 * The broker's state machine: a bounded queue, the consumer sessions, the
 * leases on delivered jobs, failed jobs waiting to retry, dead letters, the
 * result window and the counters. It does no I/O. The RPC shell calls it and
 * passes sinks that write to streams.
 *
 * Every accepted job is in exactly one place until it settles: the queue, the
 * retry wait, the lease table, or the dead letters. So at every snapshot
 * created == queued + waiting retry + in flight + processed + dead-lettered.
 */
export class BrokerCore {
  readonly capacity: number;
  readonly leaseMs: number;
  readonly maxAttempts: number;

  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly retryBackoff: RetryBackoff;
  private readonly queue = new Deque<JobRecord>();
  private readonly leases = new Map<number, Lease>();
  private readonly leaseTimers = new LeaseTimers();
  private readonly retrying = new Map<number, JobRecord>();
  private readonly retryTimers = new LeaseTimers();
  private readonly deadLetters = new DeadLetters();
  private readonly resultWindow: ResultWindow;
  private readonly sessions = new Map<number, Session>();
  private readonly connectedIds = new Set<string>();
  private readonly pool = new ConsumerPool<number>();
  private readonly subscribers = new Set<ResultSink>();
  private readonly observers = new Set<ResultSink>();
  private readonly changeListeners = new Set<() => void>();
  private readonly roomWaiters = new Deque<RoomWaiter>();
  private readonly counters = new Counters();
  private readonly journal: ((entry: JournalEntry) => void) | undefined;

  private nextJobId = 1;
  private nextToken = 1;
  private nextSessionId = 1;
  private closedFlag = false;
  private drainedFlag = false;
  private shuttingDown = false;
  private cancelledWaiters = 0;
  private cancelTimer: (() => void) | undefined;
  private timerAt: number | undefined;

  constructor(options: BrokerCoreOptions) {
    if (!Number.isInteger(options.capacity) || options.capacity < 1) {
      throw new MpmcError("invalid_argument", `capacity must be an integer of at least 1, got ${options.capacity}`);
    }
    if (!(options.leaseMs > 0)) {
      throw new MpmcError("invalid_argument", `leaseMs must be positive, got ${options.leaseMs}`);
    }
    const maxAttempts = options.maxAttempts ?? defaultCoreOptions.maxAttempts;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
      throw new MpmcError("invalid_argument", `maxAttempts must be an integer of at least 1, got ${maxAttempts}`);
    }
    this.capacity = options.capacity;
    this.leaseMs = options.leaseMs;
    this.maxAttempts = maxAttempts;
    this.retryBackoff = options.retryBackoff ?? defaultCoreOptions.retryBackoff;
    this.resultWindow = new ResultWindow(options.resultWindow ?? defaultCoreOptions.resultWindow);
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.journal = options.journal;
  }

  /**
   * Rebuilds the state a store recovered after a restart, before any client
   * connects. Jobs that were in flight lost their deliveries: they go to the
   * front of the queue with their attempt raised, or to the dead letters at
   * their last attempt. Jobs waiting to retry keep their retry time.
   */
  restore(state: RecoveredState): void {
    if (this.sessions.size > 0 || this.counters.created > 0) {
      throw new MpmcError("failed_precondition", "restore() must run before the broker accepts jobs or consumers");
    }
    this.nextJobId = state.nextJobId;
    if (state.counters !== undefined) {
      this.counters.restore(state.counters);
      this.deadLetters.purged = state.counters.purged;
      // A broker that was draining when it stopped goes on draining.
      this.closedFlag = state.counters.closed === true;
    }
    for (const job of state.queue) {
      this.queue.pushBack(job);
    }
    this.returnLost(state.inFlight, "broker-restarted", "");
    for (const { job, retryAtMs } of state.retrying) {
      this.retrying.set(job.id, job);
      this.retryTimers.push({ deadline: retryAtMs, jobId: job.id, token: 0 });
    }
    for (const entry of state.deadLetters) {
      this.deadLetters.add(entry);
    }
    for (const result of state.results) {
      this.resultWindow.push(result);
    }
    this.scheduleTimer();
    this.checkDrained();
    this.changed();
  }

  /** Returns the counters a durable store keeps; the store reads them at each commit. */
  persistentCounters(): PersistedCounters {
    return { ...this.counters.toPersisted(), purged: this.deadLetters.purged, closed: this.closedFlag };
  }

  /**
   * Adds an observer inside the broker, such as the metrics: it receives every
   * result batch and the drain like a subscriber, but does not count as one.
   */
  observe(sink: ResultSink): () => void {
    this.observers.add(sink);
    return () => {
      this.observers.delete(sink);
    };
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  get drained(): boolean {
    return this.drainedFlag;
  }

  /** True when no job is queued or in flight; jobs waiting to retry are not counted. */
  get idle(): boolean {
    return this.queue.length === 0 && this.leases.size === 0;
  }

  /**
   * Refuses new jobs with UNAVAILABLE while the broker shuts down, so that
   * producers send them to the broker that replaces it. Consumers keep
   * receiving what is queued. Producers waiting for room are rejected now.
   */
  beginShutdown(): void {
    if (this.shuttingDown) {
      return;
    }
    this.shuttingDown = true;
    for (const waiter of this.roomWaiters.drain()) {
      if (!waiter.cancelled) {
        waiter.reject(shuttingDownError());
      }
    }
    this.changed();
  }

  get queued(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.leases.size;
  }

  /** Entries in the lease heap, settled and superseded ones included; exposed to check that it stays bounded. */
  get leaseHeapSize(): number {
    return this.leaseTimers.size;
  }

  /** Free places in the queue. Can be 0 while returned jobs push the queue past capacity. */
  room(): number {
    return Math.max(0, this.capacity - this.queue.length);
  }

  /**
   * Accepts jobs in order while there is room. A job whose sequence number its
   * producer has used before is counted as a duplicate and not queued. The
   * caller keeps the jobs after `consumed` and waits for room.
   */
  offer(producerId: string, jobs: readonly JobInput[]): OfferResult {
    this.assertOpen();
    const accepted: JobRecord[] = [];
    let duplicates = 0;
    let consumed = 0;
    const now = this.clock.now();
    for (const input of jobs) {
      if (input.sequence > 0 && input.sequence <= this.counters.lastSequence(producerId)) {
        duplicates++;
        consumed++;
        continue;
      }
      if (this.room() === 0) {
        break;
      }
      // Written out rather than spread: a spread record costs about four times the memory and time per job.
      const record: JobRecord = {
        id: this.nextJobId++,
        producerId,
        data: input.data,
        payload: input.payload,
        attributes: input.attributes,
        sequence: input.sequence,
        leaseMs: input.leaseMs,
        createdAtMs: now,
        attempt: 1,
      };
      this.queue.pushBack(record);
      this.counters.recordCreated(producerId, input.sequence);
      this.journal?.({ kind: "accepted", job: record });
      accepted.push(record);
      consumed++;
    }
    this.counters.duplicatesRefused += duplicates;
    if (accepted.length > 0) {
      this.pump();
      this.changed();
    }
    return { accepted, duplicates, consumed };
  }

  /** Returns the highest sequence number accepted from a producer, where it resumes after a broken stream. */
  producerCursor(producerId: string): number {
    return this.counters.lastSequence(producerId);
  }

  /**
   * Resolves when the queue has room, in the order callers started waiting.
   * Rejects with failed_precondition when the queue closes, or with the
   * signal's reason when it aborts.
   */
  waitForRoom(signal?: AbortSignal): Promise<void> {
    if (this.closedFlag) {
      return Promise.reject(closedError());
    }
    if (this.shuttingDown) {
      return Promise.reject(shuttingDownError());
    }
    if (this.room() > 0 && this.roomWaiters.length === 0) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        waiter.cancelled = true;
        this.compactRoomWaiters();
        reject(signal?.reason instanceof Error ? signal.reason : new MpmcError("cancelled", "wait for room cancelled"));
      };
      const waiter: RoomWaiter = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (err) => {
          signal?.removeEventListener("abort", onAbort);
          reject(err);
        },
        cancelled: false,
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.roomWaiters.pushBack(waiter);
    });
  }

  /**
   * Registers a consumer stream. The broker delivers to it at once, and never
   * more jobs than its free credit. When the queue has already drained, the
   * sink is ended right away, no session is kept, and 0 is returned.
   */
  attach(consumerId: string, credit: number, sink: ConsumerSink): number {
    if (!Number.isInteger(credit) || credit < 1 || credit > maxCredit) {
      throw new MpmcError("invalid_argument", `credit must be an integer from 1 to ${maxCredit}, got ${credit}`);
    }
    if (this.connectedIds.has(consumerId)) {
      throw new MpmcError("already_exists", `consumer_id "${consumerId}" is already connected`);
    }
    this.counters.touchConsumer(consumerId);
    if (this.drainedFlag) {
      // Nothing will ever be delivered, so no session is kept; 0 is never a session id.
      sink.end();
      return 0;
    }
    const session: Session = {
      id: this.nextSessionId++,
      consumerId,
      credit,
      sink,
      held: new Set(),
      stopping: false,
      writable: true,
    };
    this.sessions.set(session.id, session);
    this.connectedIds.add(consumerId);
    this.updateReadiness(session);
    this.pump();
    this.changed();
    return session.id;
  }

  /** Pauses or resumes deliveries to a session while its stream cannot take more writes. */
  setWritable(sessionId: number, writable: boolean): void {
    const session = this.sessions.get(sessionId);
    if (session === undefined || session.writable === writable) {
      return;
    }
    session.writable = writable;
    this.updateReadiness(session);
    this.pump();
  }

  /**
   * Settles jobs with their results. A result whose job the session does not
   * hold under that token is rejected and counted, never processed twice; one
   * for a delivery that has ended (its lease ran out, say) also counts as late.
   */
  acknowledge(sessionId: number, acks: readonly AckInput[]): Rejection[] {
    const session = this.sessions.get(sessionId);
    const rejections: Rejection[] = [];
    const results: ResultRecord[] = [];
    const now = this.clock.now();
    for (const ack of acks) {
      const lease = this.leaseHeldBy(sessionId, ack);
      if (typeof lease === "string") {
        rejections.push({ jobId: ack.jobId, token: ack.token, reason: lease });
        this.counters.recordRejected(session?.consumerId);
        if (ack.token > 0 && ack.token < this.nextToken && this.leases.get(ack.jobId)?.token !== ack.token) {
          this.counters.lateResults++;
        }
        continue;
      }
      this.endLease(lease);
      const job = lease.job;
      const queueWaitMs = lease.deliveredAtMs - job.createdAtMs;
      const consumerId = session?.consumerId ?? "";
      this.counters.recordProcessed(consumerId, ack.processingMs, queueWaitMs);
      const result: ResultRecord = {
        sequence: this.resultWindow.last + 1,
        jobId: job.id,
        consumerId,
        producerId: job.producerId,
        data: job.data,
        output: ack.output,
        attempt: job.attempt,
        processingMs: ack.processingMs,
        queueWaitMs,
        completedAtMs: now,
      };
      this.resultWindow.push(result);
      this.journal?.({ kind: "settled", result });
      results.push(result);
    }
    if (results.length > 0) {
      for (const observer of this.observers) {
        observer.results(results);
      }
      for (const subscriber of this.subscribers) {
        subscriber.results(results);
      }
    }
    this.afterSettling(session);
    return rejections;
  }

  /**
   * Records handler failures. A retryable failure waits for the retry backoff,
   * then goes to the back of the queue with its attempt raised. A permanent
   * failure, or one at the last attempt, moves the job to the dead letters.
   */
  nack(sessionId: number, nacks: readonly NackInput[]): Rejection[] {
    const session = this.sessions.get(sessionId);
    const rejections: Rejection[] = [];
    for (const nack of nacks) {
      const lease = this.leaseHeldBy(sessionId, nack);
      if (typeof lease === "string") {
        rejections.push({ jobId: nack.jobId, token: nack.token, reason: lease });
        continue;
      }
      this.endLease(lease);
      const consumerId = session?.consumerId ?? "";
      this.counters.recordFailedAttempt(consumerId);
      const job = lease.job;
      if (nack.permanent || job.attempt >= this.maxAttempts) {
        const why = nack.permanent ? "rejected as not retryable" : `failed ${job.attempt} of ${this.maxAttempts} attempts`;
        this.deadLetter(job, `${why}: ${nack.error}`, consumerId);
        continue;
      }
      const delayMs = retryDelayMs(this.retryBackoff, job.attempt, this.random);
      job.attempt++;
      const retryAtMs = this.clock.now() + delayMs;
      this.retrying.set(job.id, job);
      this.retryTimers.push({ deadline: retryAtMs, jobId: job.id, token: 0 });
      this.journal?.({ kind: "retrying", jobId: job.id, attempt: job.attempt, retryAtMs });
    }
    this.scheduleTimer();
    this.afterSettling(session);
    return rejections;
  }

  /**
   * Returns jobs a consumer did not start to the front of the queue, with their
   * attempt unchanged, because no handler ran them.
   */
  release(sessionId: number, refs: readonly LeaseRef[]): Rejection[] {
    const session = this.sessions.get(sessionId);
    const rejections: Rejection[] = [];
    const returned: JobRecord[] = [];
    for (const ref of refs) {
      const lease = this.leaseHeldBy(sessionId, ref);
      if (typeof lease === "string") {
        rejections.push({ ...ref, reason: lease });
        continue;
      }
      this.endLease(lease);
      returned.push(lease.job);
    }
    this.requeueFront(returned);
    this.afterSettling(session);
    return rejections;
  }

  /**
   * Moves lease deadlines forward for jobs a consumer is still running. Each
   * new deadline is now plus the requested extension, or plus the job's lease
   * timeout when none is given.
   */
  extend(sessionId: number, extensions: readonly ExtendInput[]): Rejection[] {
    const rejections: Rejection[] = [];
    const now = this.clock.now();
    for (const extension of extensions) {
      const lease = this.leaseHeldBy(sessionId, extension);
      if (typeof lease === "string") {
        rejections.push({ jobId: extension.jobId, token: extension.token, reason: lease });
        continue;
      }
      const deadline = now + (extension.extensionMs ?? this.leaseLengthOf(lease.job));
      // A later deadline needs no heap entry now: the entry at wakeAtMs finds the lease
      // extended and schedules the next, so a lease extended often keeps one live entry.
      if (deadline < lease.wakeAtMs) {
        this.leaseTimers.push({ deadline, jobId: lease.job.id, token: lease.token });
        lease.wakeAtMs = deadline;
      }
      lease.deadlineMs = deadline;
    }
    this.scheduleTimer();
    return rejections;
  }

  /** Sends no more jobs to a session. It still settles or releases what it holds. */
  stopConsuming(sessionId: number): void {
    const session = this.sessions.get(sessionId);
    if (session === undefined) {
      return;
    }
    session.stopping = true;
    this.pool.delete(sessionId);
  }

  /**
   * Removes a session whose stream ended for any reason. Every job it still
   * holds goes back to the front of the queue with its attempt raised, or to
   * the dead letters at its last attempt. Calling it for a removed session
   * does nothing. Returns how many jobs the session held.
   */
  detach(sessionId: number): number {
    const session = this.sessions.get(sessionId);
    if (session === undefined) {
      return 0;
    }
    this.sessions.delete(sessionId);
    this.connectedIds.delete(session.consumerId);
    this.pool.delete(sessionId);
    const lost: Lease[] = [];
    for (const jobId of session.held) {
      const lease = this.leases.get(jobId);
      if (lease !== undefined) {
        lost.push(lease);
      }
    }
    for (const lease of lost) {
      this.endLease(lease);
    }
    this.returnLost(lost.map((lease) => lease.job), "consumer-lost", session.consumerId);
    this.pump();
    this.checkDrained();
    this.changed();
    return lost.length;
  }

  /**
   * Ends one lease without ending its consumer's stream, as an operator's
   * action. The job is handled like one whose lease ran out, and a result the
   * consumer sends for it later is rejected as late.
   */
  releaseLease(jobId: number): LeaseInfo {
    const lease = this.leases.get(jobId);
    if (lease === undefined) {
      throw new MpmcError("not_found", `job ${jobId} is not in flight`);
    }
    const info = this.leaseInfoOf(lease);
    const session = this.sessions.get(lease.sessionId);
    this.endLease(lease);
    this.returnLost([lease.job], "released-by-admin", info.consumerId);
    if (session !== undefined) {
      this.updateReadiness(session);
    }
    this.pump();
    this.checkDrained();
    this.changed();
    return info;
  }

  /** Jobs in flight, optionally for one consumer or one job, in job id order. */
  listLeases(filter: { consumerId?: string; jobId?: number }, limit: number): LeaseInfo[] {
    const out: LeaseInfo[] = [];
    if (filter.jobId !== undefined) {
      const lease = this.leases.get(filter.jobId);
      const info = lease === undefined ? undefined : this.leaseInfoOf(lease);
      return info !== undefined && (filter.consumerId === undefined || info.consumerId === filter.consumerId) ? [info] : [];
    }
    for (const lease of this.leases.values()) {
      const info = this.leaseInfoOf(lease);
      if (filter.consumerId === undefined || info.consumerId === filter.consumerId) {
        out.push(info);
      }
    }
    return out.sort((a, b) => a.jobId - b.jobId).slice(0, limit);
  }

  listDeadLetters(afterJobId: number, limit: number): { entries: DeadLetterRecord[]; total: number } {
    return { entries: this.deadLetters.list(afterJobId, limit), total: this.deadLetters.size };
  }

  /**
   * Moves dead letters to the back of the queue with a fresh attempt count.
   * Fails once the queue has drained, because no consumer would receive them.
   */
  requeueDeadLetters(ids: readonly number[] | "all"): number {
    if (this.drainedFlag) {
      throw new MpmcError("failed_precondition", "the queue is closed and drained, so requeued jobs would never be delivered");
    }
    const taken = this.deadLetters.take(ids);
    for (const entry of taken) {
      entry.job.attempt = 1;
      this.queue.pushBack(entry.job);
      this.journal?.({ kind: "returned", jobId: entry.job.id, attempt: 1, to: "back" });
    }
    this.pump();
    this.changed();
    return taken.length;
  }

  /** Deletes dead letters for good; they stay counted as dead-lettered. */
  purgeDeadLetters(ids: readonly number[] | "all"): number {
    const taken = this.deadLetters.take(ids);
    this.deadLetters.purged += taken.length;
    for (const entry of taken) {
      this.journal?.({ kind: "purged", jobId: entry.job.id });
    }
    this.changed();
    return taken.length;
  }

  /**
   * Adds a result subscriber, called with each batch of new results, and with
   * the final stats once the queue has drained. A subscriber that resumes reads
   * the kept results it missed with resultsAfter(). Returns the function that
   * removes it.
   */
  subscribe(sink: ResultSink): () => void {
    if (this.drainedFlag) {
      sink.finish(this.snapshot());
      return () => {};
    }
    this.subscribers.add(sink);
    return () => {
      this.subscribers.delete(sink);
    };
  }

  /**
   * Up to limit kept results with a sequence above afterSequence, oldest first,
   * or undefined when some of those results are no longer kept.
   */
  resultsAfter(afterSequence: number, limit: number): ResultRecord[] | undefined {
    return this.resultWindow.after(afterSequence, limit);
  }

  get lastResultSequence(): number {
    return this.resultWindow.last;
  }

  get firstKeptResultSequence(): number {
    return this.resultWindow.first;
  }

  /** Calls listener after every change to the queue's gauges. Returns the function that removes it. */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => {
      this.changeListeners.delete(listener);
    };
  }

  /**
   * Stops accepting jobs. Producers waiting for room are rejected; consumers
   * receive what is left. Returns true when the queue was already closed.
   */
  close(): boolean {
    if (this.closedFlag) {
      return true;
    }
    this.closedFlag = true;
    this.journal?.({ kind: "closed" });
    for (const waiter of this.roomWaiters.drain()) {
      if (!waiter.cancelled) {
        waiter.reject(closedError());
      }
    }
    this.checkDrained();
    this.changed();
    return false;
  }

  gauges(): QueueGauges {
    const oldest = this.queue.peek();
    return {
      queued: this.queue.length,
      inFlight: this.leases.size,
      waitingRetry: this.retrying.size,
      oldestJobAgeMs: oldest === undefined ? 0 : Math.max(0, this.clock.now() - oldest.createdAtMs),
      created: this.counters.created,
      processed: this.counters.processed,
      deadLettered: this.deadLetters.size + this.deadLetters.purged,
      consumersConnected: this.sessions.size,
      closed: this.closedFlag,
      drained: this.drainedFlag,
    };
  }

  snapshot(): BrokerSnapshot {
    const gauges = this.gauges();
    const processed = this.counters.processed;
    const live = new Map<string, Session>();
    for (const session of this.sessions.values()) {
      live.set(session.consumerId, session);
    }
    return {
      created: this.counters.created,
      processed,
      inFlight: gauges.inFlight,
      queued: gauges.queued,
      capacity: this.capacity,
      closed: this.closedFlag,
      drained: this.drainedFlag,
      totalProcessingMs: this.counters.totalProcessingMs,
      averageProcessingMs: processed === 0 ? 0 : this.counters.totalProcessingMs / processed,
      queueWait: this.counters.queueWait(),
      redelivered: this.counters.redelivered,
      rejectedResults: this.counters.rejectedResults,
      lateResults: this.counters.lateResults,
      failedAttempts: this.counters.failedAttempts,
      waitingRetry: gauges.waitingRetry,
      deadLettered: gauges.deadLettered,
      deadLetters: this.deadLetters.size,
      duplicatesRefused: this.counters.duplicatesRefused,
      oldestJobAgeMs: gauges.oldestJobAgeMs,
      lastResultSequence: this.resultWindow.last,
      firstKeptResultSequence: this.resultWindow.first,
      consumersConnected: this.sessions.size,
      subscribersConnected: this.subscribers.size,
      consumers: this.counters.consumerSnapshots((consumerId) => {
        const session = live.get(consumerId);
        return session === undefined
          ? { connected: false, credit: 0, inFlight: 0 }
          : { connected: true, credit: session.credit, inFlight: session.held.size };
      }),
      producers: this.counters.producerSnapshots(),
    };
  }

  /** Returns the lease a session holds for a job under a token, or why it does not hold one. */
  private leaseHeldBy(sessionId: number, ref: LeaseRef): Lease | string {
    const lease = this.leases.get(ref.jobId);
    if (lease === undefined) {
      return `job ${ref.jobId} is not in flight`;
    }
    if (lease.sessionId !== sessionId) {
      return `job ${ref.jobId} is leased to another consumer`;
    }
    if (lease.token !== ref.token) {
      return `lease_token ${ref.token} is not the current delivery of job ${ref.jobId}`;
    }
    return lease;
  }

  /** Removes a lease from the lease table and from its session. Its heap entry goes stale. */
  private endLease(lease: Lease): void {
    this.leases.delete(lease.job.id);
    this.sessions.get(lease.sessionId)?.held.delete(lease.job.id);
  }

  /**
   * Handles deliveries that ended without a result: each job goes back to the
   * front of the queue with its attempt raised, or to the dead letters when
   * that was its last attempt.
   */
  private returnLost(lost: readonly JobRecord[], reason: LostReason, consumerId: string): void {
    const returned: JobRecord[] = [];
    for (const job of lost) {
      if (job.attempt >= this.maxAttempts) {
        this.deadLetter(job, `${describeLoss(reason)} on attempt ${job.attempt} of ${this.maxAttempts}`, consumerId);
        continue;
      }
      job.attempt++;
      returned.push(job);
    }
    this.counters.redelivered += returned.length;
    this.requeueFront(returned);
  }

  private deadLetter(job: JobRecord, error: string, consumerId: string): void {
    const deadLetter = { job, error, consumerId, deadLetteredAtMs: this.clock.now() };
    this.deadLetters.add(deadLetter);
    this.journal?.({ kind: "dead-lettered", deadLetter });
  }



  private leaseLengthOf(job: JobRecord): number {
    return job.leaseMs > 0 ? job.leaseMs : this.leaseMs;
  }

  private leaseInfoOf(lease: Lease): LeaseInfo {
    return {
      jobId: lease.job.id,
      consumerId: this.sessions.get(lease.sessionId)?.consumerId ?? "",
      token: lease.token,
      attempt: lease.job.attempt,
      deliveredAtMs: lease.deliveredAtMs,
      deadlineMs: lease.deadlineMs,
    };
  }

  /**
   * Puts jobs back at the front of the queue, lowest id first. The journal
   * gets them in the same order, so a store rebuilds the same queue.
   */
  private requeueFront(jobs: JobRecord[]): void {
    jobs.sort((a, b) => b.id - a.id);
    for (const job of jobs) {
      this.queue.pushFront(job);
      this.journal?.({ kind: "returned", jobId: job.id, attempt: job.attempt, to: "front" });
    }
  }

  /** Finishes every settling operation: frees credit, delivers more, checks the drain. */
  private afterSettling(session: Session | undefined): void {
    if (session !== undefined) {
      this.updateReadiness(session);
    }
    this.pump();
    this.checkDrained();
    this.changed();
  }

  private updateReadiness(session: Session): void {
    const ready =
      !session.stopping && session.writable && !this.drainedFlag && session.held.size < session.credit;
    if (ready) {
      this.pool.set(session.id, session.held.size);
    } else {
      this.pool.delete(session.id);
    }
  }

  /** Delivers queued jobs to ready consumers, one batch per consumer. */
  private pump(): void {
    if (this.queue.length === 0 || this.pool.size === 0) {
      return;
    }
    const batches = new Map<Session, Lease[]>();
    const now = this.clock.now();
    while (this.queue.length > 0) {
      const sessionId = this.pool.pick();
      if (sessionId === undefined) {
        break;
      }
      const session = this.sessions.get(sessionId) as Session;
      const job = this.queue.shift() as JobRecord;
      const deadline = now + this.leaseLengthOf(job);
      const lease: Lease = { job, sessionId, token: this.nextToken++, deliveredAtMs: now, deadlineMs: deadline, wakeAtMs: deadline };
      this.leases.set(job.id, lease);
      this.journal?.({ kind: "delivered", jobId: job.id, attempt: job.attempt });
      this.leaseTimers.push({ deadline, jobId: job.id, token: lease.token });
      session.held.add(job.id);
      this.updateReadiness(session);
      let batch = batches.get(session);
      if (batch === undefined) {
        batch = [];
        batches.set(session, batch);
      }
      batch.push(lease);
    }
    this.scheduleTimer();
    for (const [session, batch] of batches) {
      session.sink.deliver(batch);
    }
    this.notifyRoom();
  }

  /** Drops aborted waiters once they are most of the list, so calls that time out on a full queue do not pile up. */
  private compactRoomWaiters(): void {
    this.cancelledWaiters++;
    if (this.cancelledWaiters < 64 || this.cancelledWaiters * 2 < this.roomWaiters.length) {
      return;
    }
    for (const waiter of this.roomWaiters.drain()) {
      if (!waiter.cancelled) {
        this.roomWaiters.pushBack(waiter);
      }
    }
    this.cancelledWaiters = 0;
  }

  private notifyRoom(): void {
    let free = this.room();
    while (free > 0) {
      const waiter = this.roomWaiters.shift();
      if (waiter === undefined) {
        return;
      }
      if (!waiter.cancelled) {
        waiter.resolve();
        free--;
      }
    }
  }

  /** Keeps one timer at the earliest lease deadline or retry time. */
  private scheduleTimer(): void {
    const leaseAt = this.leaseTimers.peekDeadline();
    const retryAt = this.retryTimers.peekDeadline();
    let next = leaseAt ?? retryAt;
    if (leaseAt !== undefined && retryAt !== undefined) {
      next = Math.min(leaseAt, retryAt);
    }
    if (next === this.timerAt) {
      return;
    }
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.timerAt = next;
    if (next !== undefined && !this.drainedFlag) {
      this.cancelTimer = this.clock.schedule(() => this.onTimer(), Math.max(0, next - this.clock.now()));
    }
  }

  private onTimer(): void {
    this.cancelTimer = undefined;
    this.timerAt = undefined;
    const now = this.clock.now();
    this.expireLeases(now);
    this.releaseRetries(now);
    this.pump();
    this.scheduleTimer();
    this.checkDrained();
    this.changed();
  }

  /** Handles leases whose deadline passed like lost deliveries. */
  private expireLeases(now: number): void {
    const expired: Lease[] = [];
    const touched = new Set<Session>();
    for (let due = this.leaseTimers.popDue(now); due !== undefined; due = this.leaseTimers.popDue(now)) {
      const lease = this.leases.get(due.jobId);
      // Settled or redelivered since this entry was pushed.
      if (lease === undefined || lease.token !== due.token) {
        continue;
      }
      if (lease.deadlineMs > now) {
        // Extended since: the entry the lease waits on schedules the next; older ones are spent.
        if (due.deadline === lease.wakeAtMs) {
          this.leaseTimers.push({ deadline: lease.deadlineMs, jobId: lease.job.id, token: lease.token });
          lease.wakeAtMs = lease.deadlineMs;
        }
        continue;
      }
      const session = this.sessions.get(lease.sessionId);
      if (session !== undefined) {
        touched.add(session);
      }
      this.endLease(lease);
      expired.push(lease);
    }
    for (const session of touched) {
      const ofSession = expired.filter((lease) => lease.sessionId === session.id);
      this.returnLost(ofSession.map((lease) => lease.job), "lease-expired", session.consumerId);
      this.updateReadiness(session);
    }
    const orphaned = expired.filter((lease) => !this.sessions.has(lease.sessionId));
    this.returnLost(orphaned.map((lease) => lease.job), "lease-expired", "");
  }

  /** Moves failed jobs whose backoff has passed to the back of the queue. */
  private releaseRetries(now: number): void {
    for (let due = this.retryTimers.popDue(now); due !== undefined; due = this.retryTimers.popDue(now)) {
      const job = this.retrying.get(due.jobId);
      if (job !== undefined) {
        this.retrying.delete(due.jobId);
        this.queue.pushBack(job);
        this.journal?.({ kind: "returned", jobId: job.id, attempt: job.attempt, to: "back" });
      }
    }
  }

  private checkDrained(): void {
    if (
      this.drainedFlag ||
      !this.closedFlag ||
      this.queue.length > 0 ||
      this.leases.size > 0 ||
      this.retrying.size > 0
    ) {
      return;
    }
    this.drainedFlag = true;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    for (const session of this.sessions.values()) {
      this.pool.delete(session.id);
      session.sink.end();
    }
    const stats = this.snapshot();
    for (const observer of this.observers) {
      observer.finish(stats);
    }
    for (const subscriber of this.subscribers) {
      subscriber.finish(stats);
    }
    this.subscribers.clear();
  }

  private changed(): void {
    for (const listener of this.changeListeners) {
      listener();
    }
  }

  private assertOpen(): void {
    if (this.closedFlag) {
      throw closedError();
    }
    if (this.shuttingDown) {
      throw shuttingDownError();
    }
  }
}

function closedError(): MpmcError {
  return new MpmcError("failed_precondition", "the queue is closed and accepts no new jobs");
}

function shuttingDownError(): MpmcError {
  return new MpmcError("unavailable", "the broker is shutting down; send the job again once it is back");
}

function describeLoss(reason: LostReason): string {
  switch (reason) {
    case "consumer-lost":
      return "consumer disconnected";
    case "lease-expired":
      return "lease expired";
    case "released-by-admin":
      return "lease released by an operator";
    case "broker-restarted":
      return "broker restarted";
  }
}
