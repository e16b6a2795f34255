import { create } from "@bufbuild/protobuf";
import {
  BrokerStatsSchema,
  DeadLetterSchema,
  LeaseInfoSchema,
  QueueGaugesSchema,
  JobSchema,
  durationOfMs,
  timestampOfMs,
  type BrokerStats,
  type DeadLetter,
  type LeaseInfo,
  type QueueGauges,
  type Job,
} from "@mpmc/common";
import type { DeadLetterRecord } from "../core/dead-letters.js";
import type { BrokerSnapshot, JobRecord, LeaseInfo as LeaseInfoRecord, QueueGauges as GaugesRecord } from "../core/types.js";

/** Converts the core's records to wire messages. */

export function jobMessageOf(job: JobRecord): Job {
  return create(JobSchema, {
    id: BigInt(job.id),
    producerId: job.producerId,
    data: job.data,
    payload: job.payload,
    attributes: job.attributes,
    createdAt: timestampOfMs(job.createdAtMs),
    attempt: job.attempt,
    sequence: BigInt(job.sequence),
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
    lateResults: BigInt(snapshot.lateResults),
    failedAttempts: BigInt(snapshot.failedAttempts),
    waitingRetry: BigInt(snapshot.waitingRetry),
    deadLettered: BigInt(snapshot.deadLettered),
    deadLetters: BigInt(snapshot.deadLetters),
    duplicatesRefused: BigInt(snapshot.duplicatesRefused),
    oldestJobAge: durationOfMs(snapshot.oldestJobAgeMs),
    lastResultSequence: BigInt(snapshot.lastResultSequence),
    firstKeptResultSequence: BigInt(snapshot.firstKeptResultSequence),
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

export function gaugesMessageOf(gauges: GaugesRecord): QueueGauges {
  return create(QueueGaugesSchema, {
    queued: BigInt(gauges.queued),
    inFlight: BigInt(gauges.inFlight),
    waitingRetry: BigInt(gauges.waitingRetry),
    oldestJobAge: durationOfMs(gauges.oldestJobAgeMs),
    created: BigInt(gauges.created),
    processed: BigInt(gauges.processed),
    deadLettered: BigInt(gauges.deadLettered),
    consumersConnected: gauges.consumersConnected,
    closed: gauges.closed,
    drained: gauges.drained,
  });
}

export function leaseInfoMessageOf(info: LeaseInfoRecord): LeaseInfo {
  return create(LeaseInfoSchema, {
    jobId: BigInt(info.jobId),
    consumerId: info.consumerId,
    leaseToken: BigInt(info.token),
    attempt: info.attempt,
    deliveredAt: timestampOfMs(info.deliveredAtMs),
    leaseDeadline: timestampOfMs(info.deadlineMs),
  });
}

export function deadLetterMessageOf(entry: DeadLetterRecord): DeadLetter {
  return create(DeadLetterSchema, {
    job: jobMessageOf(entry.job),
    error: entry.error,
    consumerId: entry.consumerId,
    deadLetteredAt: timestampOfMs(entry.deadLetteredAtMs),
  });
}
