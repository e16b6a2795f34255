import { randomBytes, randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  Backoff,
  JobSpecSchema,
  PublishRequestSchema,
  randomInRange,
  type BrokerService,
  type JobSpec,
  type Logger,
  type MsRange,
  type PublishRequest,
} from "@mpmc/common";

/** The pacing of one producer loop. */
export type Pace =
  | { kind: "random-pause"; pauseMs: MsRange; durationMs: number }
  | { kind: "fixed-rate"; jobsPerSecond: number; durationMs: number }
  | { kind: "fixed-count"; count: number };

export interface ProducerLoopOptions {
  producerId: string;
  pace: Pace;
  batchSize: number;
  payloadBytes: number;
  logger: Logger;
}

export interface ProducerLoopReport {
  producerId: string;
  /** Jobs the broker accepted from this loop. */
  created: number;
  /** Jobs the broker had already accepted when they were sent again after a broken stream. */
  duplicates: number;
  /** Streams opened again after a failure. */
  reconnects: number;
  /** Sequence numbers of the first and last job this loop made; 0 when it made none. */
  firstSequence: number;
  lastSequence: number;
  elapsedMs: number;
}

/**
 * Most jobs sent on one Publish stream. The loop keeps every job of the open
 * stream until the broker's response confirms it, to send it again if the
 * stream breaks, so this bounds that memory.
 */
const maxJobsPerStream = 1_000;

/** Codes after which sending again cannot help. */
const finalCodes = new Set([
  Code.FailedPrecondition,
  Code.InvalidArgument,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.Unimplemented,
  Code.OutOfRange,
]);

const reconnectMinMs = 200;
/** How long a stopping producer waits for the broker to take the jobs already sent, in ms. */
const stopGraceMs = 5_000;
/** A stream that stayed open this long counts as having worked, in ms. */
const stableStreamMs = 1_000;
const reconnectMaxMs = 10_000;

/**
 * Runs one producer loop. Jobs are numbered per producer id, starting after
 * the highest number the broker has accepted from that id, and are made only
 * when the stream asks for the next request, so a full queue makes the loop
 * wait instead of piling up jobs. When a stream breaks, the loop asks the
 * broker where to resume, sends again only the jobs past that point, and goes
 * on: no job is lost, and the broker refuses any it already has. Aborting the
 * signal ends the stream cleanly, and the jobs sent so far count.
 */
export async function runProducerLoop(
  client: Client<typeof BrokerService>,
  options: ProducerLoopOptions,
  signal: AbortSignal,
): Promise<ProducerLoopReport> {
  const { producerId, logger } = options;
  const started = performance.now();
  const cursor = await withReconnects(logger, signal, () => client.getProducerCursor({ producerId }));
  const source = new JobSource(options, Number(cursor.lastSequence) + 1, signal);
  const report: ProducerLoopReport = {
    producerId,
    created: 0,
    duplicates: 0,
    reconnects: 0,
    firstSequence: 0,
    lastSequence: 0,
    elapsedMs: 0,
  };
  let unconfirmed: JobSpec[] = [];
  const delays = new Backoff(reconnectMinMs, reconnectMaxMs);
  // Stopping ends the stream cleanly, unless the broker does not read it (a full queue); then it is cancelled.
  const cancelAfterStop = cancelLater(signal, stopGraceMs);

  for (;;) {
    const openedAt = performance.now();
    try {
      const response = await client.publish(streamRequests(source, unconfirmed, options), { signal: cancelAfterStop });
      report.created += Number(response.accepted);
      report.duplicates += Number(response.duplicates);
      unconfirmed = [];
      delays.reset();
      if (source.finished()) {
        break;
      }
    } catch (err) {
      if (signal.aborted) {
        logger.warn({ err, unconfirmed: unconfirmed.length }, "publish stream failed while stopping; unconfirmed jobs may be lost");
        break;
      }
      const code = ConnectError.from(err).code;
      if (finalCodes.has(code)) {
        // Sending again cannot help: the queue is closed, or the request is invalid.
        throw err;
      }
      report.reconnects++;
      if (performance.now() - openedAt > stableStreamMs) {
        // The stream worked for a while, so this failure starts a new series of retries.
        delays.reset();
      }
      const wait = delays.next();
      logger.warn({ err, unconfirmed: unconfirmed.length, retryInMs: Math.round(wait) }, "publish stream failed; resuming");
      await sleep(wait, undefined, { signal }).catch(() => {});
      let cursorAfterFailure: bigint;
      try {
        cursorAfterFailure = (await withReconnects(logger, signal, () => client.getProducerCursor({ producerId }))).lastSequence;
      } catch {
        logger.warn({ unconfirmed: unconfirmed.length }, "stopped before the broker could be reached; unconfirmed jobs may be lost");
        break;
      }
      const resumeAfter = Number(cursorAfterFailure);
      // Jobs up to the cursor reached the queue before the stream broke.
      const confirmed = unconfirmed.filter((job) => Number(job.sequence) <= resumeAfter);
      report.created += confirmed.length;
      unconfirmed = unconfirmed.filter((job) => Number(job.sequence) > resumeAfter);
    }
  }
  report.firstSequence = source.firstSequence;
  report.lastSequence = source.lastSequence;
  report.elapsedMs = performance.now() - started;
  const { producerId: _producerId, ...fields } = report;
  logger.info({ ...fields, elapsedMs: Math.round(report.elapsedMs) }, "producer finished");
  return report;
}

/** Returns an AbortSignal that aborts delayMs after signal aborts. */
function cancelLater(signal: AbortSignal, delayMs: number): AbortSignal {
  const controller = new AbortController();
  signal.addEventListener(
    "abort",
    () => {
      setTimeout(() => controller.abort(new Error("the broker did not take the last jobs in time")), delayMs).unref();
    },
    { once: true },
  );
  return controller.signal;
}

/** Calls a unary RPC until it succeeds, waiting with backoff and jitter while the broker is unreachable. */
async function withReconnects<T>(logger: Logger, signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
  const delays = new Backoff(reconnectMinMs, reconnectMaxMs);
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (signal?.aborted || finalCodes.has(ConnectError.from(err).code)) {
        throw err;
      }
      const wait = delays.next();
      logger.warn({ err, retryInMs: Math.round(wait) }, "broker unreachable; retrying");
      await sleep(wait, undefined, { signal }).catch(() => {});
    }
  }
}

/**
 * Yields one Publish stream's requests: first the jobs a broken stream left
 * unconfirmed, then new jobs until the stream has carried maxJobsPerStream or
 * the source is finished. Every job sent is appended to unconfirmed.
 */
async function* streamRequests(source: JobSource, unconfirmed: JobSpec[], options: ProducerLoopOptions): AsyncGenerator<PublishRequest> {
  const resend = unconfirmed.slice();
  for (let i = 0; i < resend.length; i += options.batchSize) {
    yield create(PublishRequestSchema, { producerId: options.producerId, jobs: resend.slice(i, i + options.batchSize) });
  }
  let sent = resend.length;
  while (sent < maxJobsPerStream && !source.finished()) {
    const jobs = source.next(Math.min(options.batchSize, maxJobsPerStream - sent));
    if (jobs.length === 0) {
      break;
    }
    unconfirmed.push(...jobs);
    sent += jobs.length;
    yield create(PublishRequestSchema, { producerId: options.producerId, jobs });
    await source.pause();
  }
}

/** Makes numbered jobs at the loop's pace. */
class JobSource {
  readonly firstSequence: number;
  private nextSequence: number;
  private made = 0;
  private readonly started = performance.now();

  constructor(
    private readonly options: ProducerLoopOptions,
    firstSequence: number,
    private readonly signal: AbortSignal,
  ) {
    this.firstSequence = firstSequence;
    this.nextSequence = firstSequence;
  }

  get lastSequence(): number {
    return this.made === 0 ? 0 : this.nextSequence - 1;
  }

  finished(): boolean {
    if (this.signal.aborted) {
      return true;
    }
    const pace = this.options.pace;
    switch (pace.kind) {
      case "fixed-count":
        return this.made >= pace.count;
      case "random-pause":
      case "fixed-rate":
        return performance.now() - this.started >= pace.durationMs;
    }
  }

  /** Makes up to size jobs, fewer when a fixed count runs out. */
  next(size: number): JobSpec[] {
    const pace = this.options.pace;
    const count = pace.kind === "fixed-count" ? Math.min(size, pace.count - this.made) : size;
    const jobs: JobSpec[] = [];
    for (let i = 0; i < count; i++) {
      jobs.push(
        create(JobSpecSchema, {
          data: BigInt(randomInt(100)),
          payload: this.options.payloadBytes > 0 ? randomBytes(this.options.payloadBytes) : new Uint8Array(0),
          sequence: BigInt(this.nextSequence++),
        }),
      );
    }
    this.made += jobs.length;
    return jobs;
  }

  /** Waits between jobs as the pace sets; returns early when the signal aborts. */
  async pause(): Promise<void> {
    const pace = this.options.pace;
    let delayMs = 0;
    switch (pace.kind) {
      case "fixed-count":
        return;
      case "random-pause":
        delayMs = randomInRange(pace.pauseMs);
        break;
      case "fixed-rate":
        delayMs = this.started + (this.made * 1000) / pace.jobsPerSecond - performance.now();
        break;
    }
    if (delayMs > 0) {
      await sleep(delayMs, undefined, { signal: this.signal }).catch(() => {
        // Aborted: finished() now returns true and the stream ends.
      });
    }
  }
}
