import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import {
  AckSchema,
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
import { outputOf, type HandlerJob, type JobHandler } from "./handler.js";

export interface ConsumerOptions {
  id: string;
  credit: number;
  handler: JobHandler;
  /** Jobs that waited longer than this in the queue are logged as warnings. */
  queueWarnMs: number;
  logger: Logger;
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
}

type State = "idle" | "consuming" | "stopping" | "stopped";

/**
 * One consumer stream: it receives deliveries, runs the handler on each at
 * once (the broker never sends more than the credit), and returns results in
 * batches. stop() hands back what arrives afterwards, lets running handlers
 * finish, then ends the stream.
 */
export class Consumer {
  private state: State = "idle";
  private readonly requests = createWritableIterable<ConsumeRequest>();
  private readonly running = new Map<number, AbortController>();
  private pendingAcks: Ack[] = [];
  private pendingNacks: Nack[] = [];
  private flushScheduled = false;
  private whenIdle: (() => void) | undefined;
  private readonly report: ConsumerReport;

  constructor(
    private readonly client: Client<typeof BrokerService>,
    private readonly options: ConsumerOptions,
  ) {
    this.report = { consumerId: options.id, processed: 0, failed: 0, released: 0, rejected: 0 };
  }

  /** Consumes until the broker ends the stream: with OK once the queue drained, or with an error. */
  async run(): Promise<ConsumerReport> {
    if (this.state !== "idle") {
      throw new Error(`consumer ${this.options.id} was already started`);
    }
    this.state = "consuming";
    const { logger } = this.options;
    this.send(create(ConsumeRequestSchema, { kind: { case: "hello", value: { consumerId: this.options.id, credit: this.options.credit } } }));
    try {
      for await (const response of this.client.consume(this.requests)) {
        const kind = response.kind;
        switch (kind.case) {
          case "deliveries":
            for (const delivery of kind.value.deliveries) {
              this.accept(delivery);
            }
            break;
          case "rejections":
            this.report.rejected += kind.value.rejections.length;
            for (const rejection of kind.value.rejections) {
              logger.warn({ jobId: Number(rejection.jobId), reason: rejection.reason }, "broker rejected a result");
            }
            break;
          case undefined:
            break;
        }
      }
      logger.info({ ...this.report }, "consumer stream ended");
      return { ...this.report };
    } finally {
      this.state = "stopped";
      this.requests.close();
      // Leases of jobs still running have ended with the stream; the broker already requeued them.
      for (const controller of this.running.values()) {
        controller.abort(new Error("consumer stream ended"));
      }
    }
  }

  /**
   * Takes no more jobs: tells the broker, hands back jobs that arrive
   * afterwards, waits up to graceMs for running handlers, then ends the
   * stream. Jobs still running then go back to the queue when the stream ends.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.state !== "consuming") {
      return;
    }
    this.state = "stopping";
    const { logger } = this.options;
    logger.info({ running: this.running.size }, "stopping: taking no more jobs");
    this.send(create(ConsumeRequestSchema, { kind: { case: "stop", value: {} } }));
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
    this.requests.close();
  }

  private accept(delivery: Delivery): void {
    const job = delivery.job;
    if (job === undefined) {
      return;
    }
    const jobId = Number(job.id);
    if (this.state !== "consuming") {
      this.report.released++;
      this.send(
        create(ConsumeRequestSchema, {
          kind: { case: "release", value: { leases: [{ jobId: job.id, leaseToken: delivery.leaseToken }] } },
        }),
      );
      return;
    }
    const queueWaitMs = msOfDuration(delivery.queueWait);
    if (queueWaitMs > this.options.queueWarnMs) {
      this.options.logger.warn({ jobId, queueWaitMs: Math.round(queueWaitMs), thresholdMs: this.options.queueWarnMs }, "job waited long in the queue");
    }
    const handlerJob: HandlerJob = {
      id: jobId,
      producerId: job.producerId,
      data: job.data,
      payload: job.payload,
      attributes: job.attributes,
      attempt: job.attempt,
      createdAt: new Date(msOfTimestamp(job.createdAt)),
    };
    const controller = new AbortController();
    this.running.set(jobId, controller);
    const started = performance.now();
    this.options
      .handler(handlerJob, controller.signal)
      .then(
        (value) => {
          const output = outputOf(value);
          this.report.processed++;
          this.pendingAcks.push(
            create(AckSchema, {
              jobId: job.id,
              leaseToken: delivery.leaseToken,
              output,
              processingDuration: durationOfMs(performance.now() - started),
            }),
          );
        },
      )
      .catch((err: unknown) => {
        if (controller.signal.aborted) {
          return;
        }
        this.report.failed++;
        const message = err instanceof Error ? err.message : String(err);
        this.options.logger.warn({ jobId, attempt: job.attempt, err }, "handler failed");
        this.pendingNacks.push(create(NackSchema, { jobId: job.id, leaseToken: delivery.leaseToken, error: message }));
      })
      .finally(() => {
        this.running.delete(jobId);
        this.scheduleFlush();
        if (this.running.size === 0) {
          this.whenIdle?.();
        }
      });
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
      this.send(create(ConsumeRequestSchema, { kind: { case: "acks", value: { acks } } }));
    }
    if (this.pendingNacks.length > 0) {
      const nacks = this.pendingNacks;
      this.pendingNacks = [];
      this.send(create(ConsumeRequestSchema, { kind: { case: "nacks", value: { nacks } } }));
    }
  }

  private send(request: ConsumeRequest): void {
    if (this.state === "stopped") {
      return;
    }
    this.requests.write(request).catch((err: unknown) => {
      this.options.logger.debug({ err }, "request not sent: the stream has ended");
    });
  }
}
