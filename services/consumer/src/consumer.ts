import { setTimeout as sleep } from "node:timers/promises";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { createWritableIterable, type WritableIterable } from "@connectrpc/connect/protocol";
import {
  AckSchema,
  Backoff,
  ConsumeRequestSchema,
  NackSchema,
  durationOfMs,
  msOfDuration,
  msOfTimestamp,
  type Ack,
  type BrokerService,
  type ConsumeRequest,
  type Delivery,
  type Logger,
  type Nack,
} from "@mpmc/common";
import { isPermanentFailure, outputOf, type HandlerJob, type JobHandler } from "./handler.js";

export interface ConsumerOptions {
  id: string;
  /** Jobs the broker may deliver before this consumer returns results. */
  credit: number;
  /** Handlers run at once; deliveries beyond it wait here, unstarted. At most credit. */
  concurrency: number;
  handler: JobHandler;
  /** Jobs that waited longer than this in the queue are logged as warnings. */
  queueWarnMs: number;
  logger: Logger;
  /** Waits between reconnection attempts after the stream fails, in ms. */
  reconnect?: { minMs: number; maxMs: number };
}

export interface ConsumerReport {
  consumerId: string;
  /** Jobs whose result was sent. */
  processed: number;
  /** Jobs whose handler failed. */
  failed: number;
  /** Jobs handed back unstarted while stopping. */
  released: number;
  /** Results the broker rejected, e.g. for a lease that had run out. */
  rejected: number;
  /** Streams opened again after a failure. */
  reconnects: number;
}

type State = "idle" | "consuming" | "stopping" | "stopped";

/** One delivery this consumer holds, waiting or running. */
interface HeldJob {
  readonly delivery: Delivery;
  readonly jobId: number;
  readonly controller: AbortController;
  /** Lease length the broker granted, in ms, measured when the job arrived. */
  readonly leaseMs: number;
  extendTimer: NodeJS.Timeout | undefined;
  /** Set when the broker rejected an extension: the delivery is no longer current. */
  leaseEnded: boolean;
}

/** Minimum time between two "job waited long in the queue" warnings, in ms. */
const queueWarnIntervalMs = 5_000;

/** A stream that stayed open this long counts as having worked, in ms. */
const stableStreamMs = 1_000;

/** Codes after which opening the stream again cannot help. */
// ALREADY_EXISTS is not among them: after a network cut the broker may still hold the old stream for a while.
const finalCodes = new Set([Code.InvalidArgument, Code.PermissionDenied, Code.Unauthenticated, Code.Unimplemented]);

/**
 * A consumer: it receives deliveries over a Consume stream, runs up to
 * `concurrency` handlers at once, returns results in batches, and extends the
 * lease of a job whose handler runs long. When the stream fails it connects
 * again with backoff and jitter; the broker has requeued what it held by then.
 * stop() hands back jobs not started, lets running handlers finish, then ends
 * the stream.
 */
export class Consumer {
  private state: State = "idle";
  private requests: WritableIterable<ConsumeRequest> | undefined;
  private readonly waiting: HeldJob[] = [];
  /** Running jobs by lease token: the same job can be delivered again while an earlier run goes on. */
  private readonly running = new Map<bigint, HeldJob>();
  private pendingAcks: Ack[] = [];
  private pendingNacks: Nack[] = [];
  private flushScheduled = false;
  private whenIdle: (() => void) | undefined;
  private readonly stopController = new AbortController();
  private lastQueueWarnAt = Number.NEGATIVE_INFINITY;
  private queueWarnsSkipped = 0;
  private readonly report: ConsumerReport;

  constructor(
    private readonly client: Client<typeof BrokerService>,
    private readonly options: ConsumerOptions,
  ) {
    this.report = { consumerId: options.id, processed: 0, failed: 0, released: 0, rejected: 0, reconnects: 0 };
  }

  /** True while a stream to the broker is open and this consumer takes jobs. */
  get connected(): boolean {
    return this.requests !== undefined && this.state === "consuming";
  }

  /**
   * Consumes until the broker ends the stream with OK, once the queue has
   * drained or after stop(). A failed stream is opened again; a final error,
   * such as an invalid setting, is thrown.
   */
  async run(): Promise<ConsumerReport> {
    if (this.state !== "idle") {
      throw new Error(`consumer ${this.options.id} was already started`);
    }
    this.state = "consuming";
    const { logger } = this.options;
    const backoff = this.options.reconnect ?? { minMs: 200, maxMs: 10_000 };
    const delays = new Backoff(backoff.minMs, backoff.maxMs);
    try {
      for (;;) {
        const openedAt = performance.now();
        const outcome = await this.consumeOnce();
        if (performance.now() - openedAt > stableStreamMs) {
          // The last stream worked for a while, so this failure starts a new series of retries.
          delays.reset();
        }
        if (outcome === "ended") {
          const { consumerId: _consumerId, ...fields } = this.report;
          logger.info(fields, "consumer stream ended");
          return { ...this.report };
        }
        if (this.state !== "consuming") {
          // Stopping, and the stream broke before it ended cleanly: what we held is requeued by the broker.
          return { ...this.report };
        }
        if (finalCodes.has(outcome.code)) {
          throw outcome;
        }
        this.report.reconnects++;
        const wait = delays.next();
        logger.warn({ err: outcome, retryInMs: Math.round(wait) }, "consume stream failed; connecting again");
        await sleep(wait, undefined, { signal: this.stopController.signal }).catch(() => {});
        if (this.state !== "consuming") {
          return { ...this.report };
        }
      }
    } finally {
      this.state = "stopped";
      this.abandonHeld("consumer stopped");
    }
  }

  /**
   * Takes no more jobs: tells the broker, hands back jobs not started, waits up
   * to graceMs for running handlers, then ends the stream. Jobs still running
   * then go back to the queue when the stream ends.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.state !== "consuming") {
      return;
    }
    this.state = "stopping";
    this.stopController.abort();
    const { logger } = this.options;
    logger.info({ running: this.running.size, waiting: this.waiting.length }, "stopping: taking no more jobs");
    this.send({ case: "stop", value: {} });
    this.releaseWaiting();
    if (this.running.size > 0) {
      const idle = new Promise<void>((resolve) => {
        this.whenIdle = resolve;
      });
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), graceMs);
      });
      const outcome = await Promise.race([idle, timedOut]);
      clearTimeout(timer);
      if (outcome === "timeout") {
        logger.warn({ running: this.running.size, graceMs }, "handlers still running after the grace period; their jobs go back to the queue");
      }
    }
    this.flush();
    this.requests?.close();
  }

  /** Opens one stream and reads it to its end. Returns "ended" for OK, or the error. */
  private async consumeOnce(): Promise<"ended" | ConnectError> {
    const requests = createWritableIterable<ConsumeRequest>();
    this.requests = requests;
    this.send({ case: "hello", value: { consumerId: this.options.id, credit: this.options.credit } });
    try {
      for await (const response of this.client.consume(requests)) {
        const kind = response.kind;
        switch (kind.case) {
          case "deliveries":
            for (const delivery of kind.value.deliveries) {
              this.accept(delivery);
            }
            break;
          case "rejections":
            for (const rejection of kind.value.rejections) {
              this.onRejection(rejection);
            }
            break;
          case undefined:
            break;
        }
      }
      return "ended";
    } catch (err) {
      return ConnectError.from(err);
    } finally {
      requests.close();
      this.requests = undefined;
      // The broker requeued everything this stream held; results for it would be rejected.
      this.abandonHeld("stream ended");
    }
  }

  private accept(delivery: Delivery): void {
    const job = delivery.job;
    if (job === undefined) {
      return;
    }
    const jobId = Number(job.id);
    const held: HeldJob = {
      delivery,
      jobId,
      controller: new AbortController(),
      leaseMs: Math.max(0, msOfTimestamp(delivery.leaseDeadline) - Date.now()),
      extendTimer: undefined,
      leaseEnded: false,
    };
    if (this.state !== "consuming") {
      this.release([held]);
      return;
    }
    const queueWaitMs = msOfDuration(delivery.queueWait);
    if (queueWaitMs > this.options.queueWarnMs) {
      this.warnQueueWait(jobId, queueWaitMs);
    }
    this.waiting.push(held);
    this.startWaiting();
  }

  /**
   * Logs a job that waited longer than the threshold, at most once per
   * queueWarnIntervalMs: a backlog makes every job wait, and one line per job
   * would bury everything else. Each line counts the ones left out.
   */
  private warnQueueWait(jobId: number, queueWaitMs: number): void {
    const now = performance.now();
    if (now - this.lastQueueWarnAt < queueWarnIntervalMs) {
      this.queueWarnsSkipped++;
      return;
    }
    this.options.logger.warn(
      {
        jobId,
        queueWaitMs: Math.round(queueWaitMs),
        thresholdMs: this.options.queueWarnMs,
        moreSinceLastWarning: this.queueWarnsSkipped,
      },
      "job waited long in the queue",
    );
    this.lastQueueWarnAt = now;
    this.queueWarnsSkipped = 0;
  }

  private startWaiting(): void {
    while (this.state === "consuming" && this.running.size < this.options.concurrency) {
      const held = this.waiting.shift();
      if (held === undefined) {
        return;
      }
      this.start(held);
    }
  }

  private start(held: HeldJob): void {
    const { delivery, jobId } = held;
    const job = delivery.job as NonNullable<Delivery["job"]>;
    this.running.set(delivery.leaseToken, held);
    this.scheduleExtension(held);
    const handlerJob: HandlerJob = {
      id: jobId,
      producerId: job.producerId,
      data: job.data,
      payload: job.payload,
      attributes: job.attributes,
      attempt: job.attempt,
      createdAt: new Date(msOfTimestamp(job.createdAt)),
    };
    const started = performance.now();
    const signal = held.controller.signal;
    // Called inside a promise, so a handler that throws at once, or returns no promise, fails only this job.
    Promise.resolve()
      .then(() => this.options.handler(handlerJob, signal))
      .then((value) => {
        const output = outputOf(value);
        if (signal.aborted) {
          return;
        }
        this.report.processed++;
        this.pendingAcks.push(
          create(AckSchema, {
            jobId: job.id,
            leaseToken: delivery.leaseToken,
            output,
            processingDuration: durationOfMs(performance.now() - started),
          }),
        );
      })
      .catch((err: unknown) => {
        if (signal.aborted) {
          return;
        }
        this.report.failed++;
        const message = err instanceof Error ? err.message : String(err);
        const permanent = isPermanentFailure(err);
        this.options.logger.warn({ jobId, attempt: job.attempt, permanent, err }, "handler failed");
        this.pendingNacks.push(create(NackSchema, { jobId: job.id, leaseToken: delivery.leaseToken, error: message, permanent }));
      })
      .finally(() => {
        clearTimeout(held.extendTimer);
        // A restarted broker reuses tokens, so remove the entry only if it is still this run's.
        if (this.running.get(delivery.leaseToken) === held) {
          this.running.delete(delivery.leaseToken);
        }
        this.scheduleFlush();
        this.startWaiting();
        if (this.running.size === 0) {
          this.whenIdle?.();
        }
      });
  }

  /**
   * Asks for more time when half of a running job's lease has passed, and again
   * for every half lease after that, so only a consumer that stalls or dies
   * loses its jobs to lease expiry.
   */
  private scheduleExtension(held: HeldJob): void {
    if (held.leaseMs <= 0) {
      return;
    }
    held.extendTimer = setTimeout(() => {
      if (!this.running.has(held.delivery.leaseToken) || held.controller.signal.aborted || held.leaseEnded) {
        return;
      }
      this.send({
        case: "extend",
        value: {
          extensions: [{ jobId: BigInt(held.jobId), leaseToken: held.delivery.leaseToken, extension: durationOfMs(held.leaseMs) }],
        },
      });
      this.scheduleExtension(held);
    }, held.leaseMs / 2);
    held.extendTimer.unref();
  }

  /**
   * Handles the broker's answer that it does not accept a request. For a job
   * still running here, only a lease extension can have been rejected, so its
   * delivery has ended: the consumer stops extending it and lets the handler
   * finish, and the broker will reject that result as late. Otherwise a result
   * or a hand-back was rejected.
   */
  private onRejection(rejection: { jobId: bigint; leaseToken: bigint; reason: string }): void {
    const jobId = Number(rejection.jobId);
    const held = this.running.get(rejection.leaseToken);
    if (held !== undefined) {
      if (held.extendTimer !== undefined) {
        this.options.logger.warn({ jobId, reason: rejection.reason }, "lease ended while the handler runs; its result will be rejected");
      }
      clearTimeout(held.extendTimer);
      held.extendTimer = undefined;
      held.leaseEnded = true;
      return;
    }
    this.report.rejected++;
    this.options.logger.warn({ jobId, reason: rejection.reason }, "broker rejected a result");
  }

  private releaseWaiting(): void {
    const unstarted = this.waiting.splice(0, this.waiting.length);
    if (unstarted.length > 0) {
      this.release(unstarted);
    }
  }

  /** Hands jobs back unstarted; the broker requeues them with their attempt unchanged. */
  private release(jobs: HeldJob[]): void {
    this.report.released += jobs.length;
    this.options.logger.info({ jobIds: jobs.map((held) => held.jobId) }, "handing back jobs not started");
    this.send({
      case: "release",
      value: { leases: jobs.map((held) => ({ jobId: BigInt(held.jobId), leaseToken: held.delivery.leaseToken })) },
    });
  }

  /** Forgets every job of an ended stream and aborts its handlers. */
  private abandonHeld(reason: string): void {
    for (const held of [...this.waiting.splice(0, this.waiting.length), ...this.running.values()]) {
      clearTimeout(held.extendTimer);
      held.controller.abort(new Error(reason));
    }
    this.running.clear();
    this.pendingAcks = [];
    this.pendingNacks = [];
    this.whenIdle?.();
  }

  /** Sends the results gathered in this turn of the event loop as one batch. */
  private scheduleFlush(): void {
    if (this.flushScheduled) {
      return;
    }
    this.flushScheduled = true;
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pendingAcks.length > 0) {
      const acks = this.pendingAcks;
      this.pendingAcks = [];
      this.send({ case: "acks", value: { acks } });
    }
    if (this.pendingNacks.length > 0) {
      const nacks = this.pendingNacks;
      this.pendingNacks = [];
      this.send({ case: "nacks", value: { nacks } });
    }
  }

  private send(kind: MessageInitShape<typeof ConsumeRequestSchema>["kind"]): void {
    const requests = this.requests;
    if (requests === undefined) {
      return;
    }
    requests.write(create(ConsumeRequestSchema, { kind })).catch((err: unknown) => {
      this.options.logger.debug({ err }, "request not sent: the stream has ended");
    });
  }
}
