import { build, type Histogram } from "hdr-histogram-js";
import type { PersistedCounters } from "../storage/store.js";
import type { ConsumerSnapshot, ProducerSnapshot, QueueWaitPercentiles } from "./types.js";

interface ConsumerCounters {
  processed: number;
  totalProcessingMs: number;
  rejectedResults: number;
  failedAttempts: number;
}

interface ProducerCounters {
  created: number;
  lastSequence: number;
}

/**
 * The broker's monotonic counters. Gauges (queued, in flight) are not kept here:
 * the core derives them from the queue and the lease table, so they cannot drift.
 */
export class Counters {
  created = 0;
  processed = 0;
  redelivered = 0;
  rejectedResults = 0;
  lateResults = 0;
  failedAttempts = 0;
  duplicatesRefused = 0;
  totalProcessingMs = 0;

  // NOTE: an entry per consumer and producer id ever seen, never removed. Ids that change with
  // every process (the HOST-PID defaults, autoscaled pods) grow these maps, every snapshot, and
  // in durable mode the counters written at each commit. Fixed ids keep them small.
  private readonly consumers = new Map<string, ConsumerCounters>();
  private readonly producers = new Map<string, ProducerCounters>();
  /** Queue waits in microseconds, up to one hour, with two significant digits. */
  private readonly queueWaitUs: Histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 2,
    autoResize: true,
  });

  recordCreated(producerId: string, sequence: number): void {
    this.created++;
    const producer = this.producer(producerId);
    producer.created++;
    if (sequence > producer.lastSequence) {
      producer.lastSequence = sequence;
    }
  }

  recordProcessed(consumerId: string, processingMs: number, queueWaitMs: number): void {
    this.processed++;
    this.totalProcessingMs += processingMs;
    const consumer = this.consumer(consumerId);
    consumer.processed++;
    consumer.totalProcessingMs += processingMs;
    this.queueWaitUs.recordValue(Math.max(0, Math.round(queueWaitMs * 1000)));
  }

  /** Counts a rejected result, also per consumer when the session is still known. */
  recordRejected(consumerId: string | undefined): void {
    this.rejectedResults++;
    if (consumerId !== undefined) {
      this.consumer(consumerId).rejectedResults++;
    }
  }

  recordFailedAttempt(consumerId: string): void {
    this.failedAttempts++;
    this.consumer(consumerId).failedAttempts++;
  }

  /** Returns the counters that a durable store keeps, without the histogram; purged is the caller's. */
  toPersisted(): Omit<PersistedCounters, "purged"> {
    return {
      created: this.created,
      processed: this.processed,
      redelivered: this.redelivered,
      rejectedResults: this.rejectedResults,
      lateResults: this.lateResults,
      failedAttempts: this.failedAttempts,
      duplicatesRefused: this.duplicatesRefused,
      totalProcessingMs: this.totalProcessingMs,
      consumers: [...this.consumers].map(([consumerId, c]) => ({ consumerId, ...c })),
      producers: [...this.producers].map(([producerId, p]) => ({ producerId, ...p })),
    };
  }

  /** Sets the counters from a store after a restart. The queue-wait histogram starts empty. */
  restore(saved: PersistedCounters): void {
    this.created = saved.created;
    this.processed = saved.processed;
    this.redelivered = saved.redelivered;
    this.rejectedResults = saved.rejectedResults;
    this.lateResults = saved.lateResults;
    this.failedAttempts = saved.failedAttempts;
    this.duplicatesRefused = saved.duplicatesRefused;
    this.totalProcessingMs = saved.totalProcessingMs;
    for (const { consumerId, ...c } of saved.consumers) {
      this.consumers.set(consumerId, c);
    }
    for (const { producerId, ...p } of saved.producers) {
      this.producers.set(producerId, p);
    }
  }

  /** Returns the highest sequence number accepted from a producer, 0 when none. */
  lastSequence(producerId: string): number {
    return this.producers.get(producerId)?.lastSequence ?? 0;
  }

  /** Makes a consumer appear in the stats from the moment it connects. */
  touchConsumer(consumerId: string): void {
    this.consumer(consumerId);
  }

  queueWait(): QueueWaitPercentiles {
    const h = this.queueWaitUs;
    if (h.totalCount === 0) {
      return { p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 };
    }
    // A percentile is the upper edge of its histogram bucket, which can lie above the largest recorded value.
    const maxMs = h.maxValue / 1000;
    return {
      p50Ms: Math.min(h.getValueAtPercentile(50) / 1000, maxMs),
      p90Ms: Math.min(h.getValueAtPercentile(90) / 1000, maxMs),
      p99Ms: Math.min(h.getValueAtPercentile(99) / 1000, maxMs),
      maxMs,
    };
  }

  consumerSnapshots(
    live: (consumerId: string) => { connected: boolean; credit: number; inFlight: number },
  ): ConsumerSnapshot[] {
    return [...this.consumers].map(([consumerId, c]) => ({
      consumerId,
      ...live(consumerId),
      processed: c.processed,
      totalProcessingMs: c.totalProcessingMs,
      rejectedResults: c.rejectedResults,
      failedAttempts: c.failedAttempts,
    }));
  }

  producerSnapshots(): ProducerSnapshot[] {
    return [...this.producers].map(([producerId, p]) => ({ producerId, ...p }));
  }

  private consumer(consumerId: string): ConsumerCounters {
    let consumer = this.consumers.get(consumerId);
    if (consumer === undefined) {
      consumer = { processed: 0, totalProcessingMs: 0, rejectedResults: 0, failedAttempts: 0 };
      this.consumers.set(consumerId, consumer);
    }
    return consumer;
  }

  private producer(producerId: string): ProducerCounters {
    let producer = this.producers.get(producerId);
    if (producer === undefined) {
      producer = { created: 0, lastSequence: 0 };
      this.producers.set(producerId, producer);
    }
    return producer;
  }
}
