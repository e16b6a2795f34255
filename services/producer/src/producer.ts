import { randomBytes, randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  JobSpecSchema,
  PublishRequestSchema,
  randomInRange,
  type BrokerService,
  type JobSpec,
  type Logger,
  type MsRange,
  type PublishRequest,
} from "@mpmc/common";

/** How one producer loop paces its jobs. */
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
  /** Jobs the broker accepted. */
  created: number;
  firstJobId: number;
  lastJobId: number;
  elapsedMs: number;
}

/**
 * Runs one producer loop over one Publish stream. Jobs are made only when the
 * stream asks for the next request, so when the broker stops reading, because
 * its queue is full, the loop waits instead of piling up jobs in memory.
 * Aborting the signal ends the stream cleanly: the jobs sent so far count.
 */
export async function runProducerLoop(
  client: Client<typeof BrokerService>,
  options: ProducerLoopOptions,
  signal: AbortSignal,
): Promise<ProducerLoopReport> {
  const started = performance.now();
  const response = await client.publish(requests(options, signal));
  const report: ProducerLoopReport = {
    producerId: options.producerId,
    created: Number(response.accepted),
    firstJobId: Number(response.firstJobId),
    lastJobId: Number(response.lastJobId),
    elapsedMs: performance.now() - started,
  };
  options.logger.info({ ...report, elapsedMs: Math.round(report.elapsedMs) }, "producer finished");
  return report;
}

async function* requests(options: ProducerLoopOptions, signal: AbortSignal): AsyncGenerator<PublishRequest> {
  const { pace, batchSize, producerId } = options;
  const started = performance.now();
  let sequence = 0;
  const finished = (): boolean => {
    if (signal.aborted) {
      return true;
    }
    switch (pace.kind) {
      case "fixed-count":
        return sequence >= pace.count;
      case "random-pause":
      case "fixed-rate":
        return performance.now() - started >= pace.durationMs;
    }
  };
  while (!finished()) {
    const size = pace.kind === "fixed-count" ? Math.min(batchSize, pace.count - sequence) : batchSize;
    const jobs: JobSpec[] = [];
    for (let i = 0; i < size; i++) {
      sequence++;
      jobs.push(
        create(JobSpecSchema, {
          data: BigInt(randomInt(100)),
          payload: options.payloadBytes > 0 ? randomBytes(options.payloadBytes) : new Uint8Array(0),
          sequence: BigInt(sequence),
        }),
      );
    }
    yield create(PublishRequestSchema, { producerId, jobs });
    await pause(pace, sequence, started, signal);
  }
}

async function pause(pace: Pace, sent: number, started: number, signal: AbortSignal): Promise<void> {
  let delayMs = 0;
  switch (pace.kind) {
    case "fixed-count":
      return;
    case "random-pause":
      delayMs = randomInRange(pace.pauseMs);
      break;
    case "fixed-rate":
      delayMs = started + (sent * 1000) / pace.jobsPerSecond - performance.now();
      break;
  }
  if (delayMs > 0) {
    await sleep(delayMs, undefined, { signal }).catch(() => {
      // Aborted: the loop checks the signal and ends the stream.
    });
  }
}
