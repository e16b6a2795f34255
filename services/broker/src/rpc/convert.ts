import { create } from "@bufbuild/protobuf";
import {
  BrokerStatsSchema,
  DeliverySchema,
  JobSchema,
  ResultSchema,
  durationOfMs,
  timestampOfMs,
  type BrokerStats,
  type Delivery,
  type Job,
  type Result,
} from "@mpmc/common";
import type { BrokerSnapshot, JobRecord, Lease, ResultRecord } from "../core/types.js";

/** Converts the core's records to wire messages. */

export function jobMessageOf(job: JobRecord): Job {
  return create(JobSchema, {
    id: BigInt(job.id),
    producerId: job.producerId,
    data: job.data,
    payload: job.payload,
    attributes: { ...job.attributes },
    createdAt: timestampOfMs(job.createdAtMs),
    attempt: job.attempt,
    sequence: BigInt(job.sequence),
  });
}

export function deliveryMessageOf(lease: Lease): Delivery {
  return create(DeliverySchema, {
    job: jobMessageOf(lease.job),
    leaseToken: BigInt(lease.token),
    leaseDeadline: timestampOfMs(lease.deadlineMs),
    queueWait: durationOfMs(lease.deliveredAtMs - lease.job.createdAtMs),
  });
}

export function resultMessageOf(result: ResultRecord): Result {
  return create(ResultSchema, {
    jobId: BigInt(result.jobId),
    consumerId: result.consumerId,
    output: result.output,
    processingDuration: durationOfMs(result.processingMs),
    queueWait: durationOfMs(result.queueWaitMs),
    producerId: result.producerId,
    data: result.data,
    attempt: result.attempt,
    resultSequence: BigInt(result.sequence),
    completedAt: timestampOfMs(result.completedAtMs),
  });
}

export function statsMessageOf(snapshot: BrokerSnapshot): BrokerStats {
  return create(BrokerStatsSchema, {
    created: BigInt(snapshot.created),
    processed: BigInt(snapshot.processed),
    inFlight: BigInt(snapshot.inFlight),
    queued: BigInt(snapshot.queued),
    capacity: snapshot.capacity,
    closed: snapshot.closed,
    drained: snapshot.drained,
    totalProcessingDuration: durationOfMs(snapshot.totalProcessingMs),
    averageProcessingDuration: durationOfMs(snapshot.averageProcessingMs),
    queueWait: {
      p50: durationOfMs(snapshot.queueWait.p50Ms),
      p90: durationOfMs(snapshot.queueWait.p90Ms),
      p99: durationOfMs(snapshot.queueWait.p99Ms),
      max: durationOfMs(snapshot.queueWait.maxMs),
    },
    redelivered: BigInt(snapshot.redelivered),
    rejectedResults: BigInt(snapshot.rejectedResults),
    failedAttempts: BigInt(snapshot.failedAttempts),
    consumersConnected: snapshot.consumersConnected,
    subscribersConnected: snapshot.subscribersConnected,
    consumers: snapshot.consumers.map((c) => ({
      consumerId: c.consumerId,
      connected: c.connected,
      credit: c.credit,
      inFlight: BigInt(c.inFlight),
      processed: BigInt(c.processed),
      totalProcessingDuration: durationOfMs(c.totalProcessingMs),
      rejectedResults: BigInt(c.rejectedResults),
      failedAttempts: BigInt(c.failedAttempts),
    })),
    producers: snapshot.producers.map((p) => ({
      producerId: p.producerId,
      created: BigInt(p.created),
      lastSequence: BigInt(p.lastSequence),
    })),
  });
}
