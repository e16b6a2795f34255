import { MpmcError } from "@mpmc/common";
import { systemClock, type Clock } from "./clock.js";
import { ConsumerPool } from "./consumer-pool.js";
import { Counters } from "./counters.js";
import { Deque } from "./deque.js";
import { LeaseTimers } from "./lease-timers.js";
import type {
  AckInput,
  BrokerSnapshot,
  ConsumerSink,
  JobInput,
  JobRecord,
  Lease,
  LeaseRef,
  NackInput,
  Rejection,
  ResultRecord,
  ResultSink,
} from "./types.js";

export interface BrokerCoreOptions {
  /** Most jobs the queue holds; producers wait while it is full. */
  capacity: number;
  /** How long a consumer may hold a job before it goes back to the queue. */
  leaseMs: number;
  clock?: Clock;
}

/** Largest credit one consumer may ask for. */
export const maxCredit = 10_000;

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

/**
 * The broker's state machine: a bounded queue, the consumer sessions, the
 * leases on delivered jobs and the counters. It does no I/O. The RPC shell calls
 * it and passes sinks that write to streams.
 *
 * Every accepted job is in exactly one place, the queue or the lease table,
 * until a result settles it, so created == queued + in flight + processed.
 */
export class BrokerCore {
  readonly capacity: number;
  readonly leaseMs: number;

  private readonly clock: Clock;
  private readonly queue = new Deque<JobRecord>();
  private readonly leases = new Map<number, Lease>();
  private readonly leaseTimers = new LeaseTimers();
  private readonly sessions = new Map<number, Session>();
  private readonly connectedIds = new Set<string>();
  private readonly pool = new ConsumerPool<number>();
  private readonly subscribers = new Set<ResultSink>();
  private readonly roomWaiters = new Deque<RoomWaiter>();
  private readonly counters = new Counters();

  private nextJobId = 1;
  private nextToken = 1;
  private nextSessionId = 1;
  private nextResultSequence = 1;
  private closedFlag = false;
  private drainedFlag = false;
  private cancelLeaseTimer: (() => void) | undefined;
  private leaseTimerAt: number | undefined;

  constructor(options: BrokerCoreOptions) {
    if (!Number.isInteger(options.capacity) || options.capacity < 1) {
      throw new MpmcError("invalid_argument", `capacity must be an integer of at least 1, got ${options.capacity}`);
    }
    if (!(options.leaseMs > 0)) {
      throw new MpmcError("invalid_argument", `leaseMs must be positive, got ${options.leaseMs}`);
    }
    this.capacity = options.capacity;
    this.leaseMs = options.leaseMs;
    this.clock = options.clock ?? systemClock;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  get drained(): boolean {
    return this.drainedFlag;
  }

  get queued(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.leases.size;
  }

  /** Free places in the queue. Can be 0 while returned jobs push the queue past capacity. */
  room(): number {
    return Math.max(0, this.capacity - this.queue.length);
  }

  /**
   * Accepts as many of the jobs as there is room for, in order, and returns the
   * accepted records. The caller keeps the rest and waits for room.
   */
  offer(producerId: string, jobs: readonly JobInput[]): JobRecord[] {
    this.assertOpen();
    const count = Math.min(jobs.length, this.room());
    const accepted: JobRecord[] = [];
    const now = this.clock.now();
    for (let i = 0; i < count; i++) {
      const input = jobs[i] as JobInput;
      const record: JobRecord = {
        ...input,
        id: this.nextJobId++,
        producerId,
        createdAtMs: now,
        attempt: 1,
      };
      this.queue.pushBack(record);
      this.counters.recordCreated(producerId, input.sequence);
      accepted.push(record);
    }
    if (accepted.length > 0) {
      this.pump();
    }
    return accepted;
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
    if (this.room() > 0 && this.roomWaiters.length === 0) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        waiter.cancelled = true;
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
   * sink is ended right away.
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
    this.counters.touchConsumer(consumerId);
    this.updateReadiness(session);
    this.pump();
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
   * hold under that token is rejected and counted, never processed twice.
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
        continue;
      }
      this.leases.delete(ack.jobId);
      session?.held.delete(ack.jobId);
      const job = lease.job;
      const queueWaitMs = lease.deliveredAtMs - job.createdAtMs;
      const consumerId = session?.consumerId ?? "";
      this.counters.recordProcessed(consumerId, ack.processingMs, queueWaitMs);
      results.push({
        sequence: this.nextResultSequence++,
        jobId: job.id,
        consumerId,
        producerId: job.producerId,
        data: job.data,
        output: ack.output,
        attempt: job.attempt,
        processingMs: ack.processingMs,
        queueWaitMs,
        completedAtMs: now,
      });
    }
    if (results.length > 0) {
      for (const subscriber of this.subscribers) {
        subscriber.results(results);
      }
    }
    if (session !== undefined) {
      this.updateReadiness(session);
    }
    this.pump();
    this.checkDrained();
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
      this.leases.delete(ref.jobId);
      session?.held.delete(ref.jobId);
      returned.push(lease.job);
    }
    this.requeueFront(returned);
    if (session !== undefined) {
      this.updateReadiness(session);
    }
    this.pump();
    return rejections;
  }

  /**
   * Records handler failures. Each job goes to the back of the queue with its
   * attempt raised, so a job that keeps failing does not block the ones behind it.
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
      this.leases.delete(nack.jobId);
      session?.held.delete(nack.jobId);
      this.counters.recordFailedAttempt(session?.consumerId ?? "");
      lease.job.attempt++;
      this.queue.pushBack(lease.job);
    }
    if (session !== undefined) {
      this.updateReadiness(session);
    }
    this.pump();
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
   * holds goes back to the front of the queue with its attempt raised. Calling
   * it for a removed session does nothing. Returns how many jobs went back.
   */
  detach(sessionId: number): number {
    const session = this.sessions.get(sessionId);
    if (session === undefined) {
      return 0;
    }
    this.sessions.delete(sessionId);
    this.connectedIds.delete(session.consumerId);
    this.pool.delete(sessionId);
    const returned: JobRecord[] = [];
    for (const jobId of session.held) {
      const lease = this.leases.get(jobId);
      if (lease !== undefined) {
        this.leases.delete(jobId);
        lease.job.attempt++;
        returned.push(lease.job);
      }
    }
    this.counters.redelivered += returned.length;
    this.requeueFront(returned);
    this.pump();
    this.checkDrained();
    return returned.length;
  }

  /** Adds a result subscriber. Returns the function that removes it. */
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
   * Stops accepting jobs. Producers waiting for room are rejected; consumers
   * receive what is left. Returns true when the queue was already closed.
   */
  close(): boolean {
    if (this.closedFlag) {
      return true;
    }
    this.closedFlag = true;
    for (const waiter of this.roomWaiters.drain()) {
      if (!waiter.cancelled) {
        waiter.reject(closedError());
      }
    }
    this.checkDrained();
    return false;
  }

  snapshot(): BrokerSnapshot {
    const processed = this.counters.processed;
    const live = (consumerId: string): { connected: boolean; credit: number; inFlight: number } => {
      for (const session of this.sessions.values()) {
        if (session.consumerId === consumerId) {
          return { connected: true, credit: session.credit, inFlight: session.held.size };
        }
      }
      return { connected: false, credit: 0, inFlight: 0 };
    };
    return {
      created: this.counters.created,
      processed,
      inFlight: this.leases.size,
      queued: this.queue.length,
      capacity: this.capacity,
      closed: this.closedFlag,
      drained: this.drainedFlag,
      totalProcessingMs: this.counters.totalProcessingMs,
      averageProcessingMs: processed === 0 ? 0 : this.counters.totalProcessingMs / processed,
      queueWait: this.counters.queueWait(),
      redelivered: this.counters.redelivered,
      rejectedResults: this.counters.rejectedResults,
      failedAttempts: this.counters.failedAttempts,
      consumersConnected: this.sessions.size,
      subscribersConnected: this.subscribers.size,
      consumers: this.counters.consumerSnapshots(live),
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

  /** Puts jobs back at the front of the queue, lowest id first. */
  private requeueFront(jobs: JobRecord[]): void {
    jobs.sort((a, b) => b.id - a.id);
    for (const job of jobs) {
      this.queue.pushFront(job);
    }
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
    const deadline = now + this.leaseMs;
    while (this.queue.length > 0) {
      const sessionId = this.pool.pick();
      if (sessionId === undefined) {
        break;
      }
      const session = this.sessions.get(sessionId) as Session;
      const job = this.queue.shift() as JobRecord;
      const lease: Lease = { job, sessionId, token: this.nextToken++, deliveredAtMs: now, deadlineMs: deadline };
      this.leases.set(job.id, lease);
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
    this.scheduleLeaseTimer();
    for (const [session, batch] of batches) {
      session.sink.deliver(batch);
    }
    this.notifyRoom();
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

  private scheduleLeaseTimer(): void {
    const next = this.leaseTimers.peekDeadline();
    if (next === this.leaseTimerAt) {
      return;
    }
    this.cancelLeaseTimer?.();
    this.cancelLeaseTimer = undefined;
    this.leaseTimerAt = next;
    if (next !== undefined) {
      this.cancelLeaseTimer = this.clock.schedule(() => this.expireLeases(), Math.max(0, next - this.clock.now()));
    }
  }

  /** Returns jobs whose lease ran out to the front of the queue, attempt raised. */
  private expireLeases(): void {
    this.cancelLeaseTimer = undefined;
    this.leaseTimerAt = undefined;
    const now = this.clock.now();
    const returned: JobRecord[] = [];
    const touched = new Set<Session>();
    for (let due = this.leaseTimers.popDue(now); due !== undefined; due = this.leaseTimers.popDue(now)) {
      const lease = this.leases.get(due.jobId);
      // Settled, redelivered or extended since this entry was pushed.
      if (lease === undefined || lease.token !== due.token || lease.deadlineMs > now) {
        continue;
      }
      this.leases.delete(due.jobId);
      const session = this.sessions.get(lease.sessionId);
      if (session !== undefined) {
        session.held.delete(due.jobId);
        touched.add(session);
      }
      lease.job.attempt++;
      returned.push(lease.job);
    }
    this.counters.redelivered += returned.length;
    this.requeueFront(returned);
    for (const session of touched) {
      this.updateReadiness(session);
    }
    this.pump();
    this.scheduleLeaseTimer();
  }

  private checkDrained(): void {
    if (this.drainedFlag || !this.closedFlag || this.queue.length > 0 || this.leases.size > 0) {
      return;
    }
    this.drainedFlag = true;
    this.cancelLeaseTimer?.();
    for (const session of this.sessions.values()) {
      this.pool.delete(session.id);
      session.sink.end();
    }
    const stats = this.snapshot();
    for (const subscriber of this.subscribers) {
      subscriber.finish(stats);
    }
    this.subscribers.clear();
  }

  private assertOpen(): void {
    if (this.closedFlag) {
      throw closedError();
    }
  }
}

function closedError(): MpmcError {
  return new MpmcError("failed_precondition", "the queue is closed and accepts no new jobs");
}
