import { create } from "@bufbuild/protobuf";
import { AggregatorSummarySchema, durationOfMs, msOfDuration, type AggregatorSummary, type BrokerStats, type Result } from "@mpmc/common";

interface Tally {
  results: number;
  totalProcessingMs: number;
}

/**
 * Running and final statistics over the broker's results. Pure: the
 * subscriber feeds it, the gRPC service reads it.
 */
export class Aggregation {
  results = 0;
  totalProcessingMs = 0;
  duplicateResults = 0;
  missedResults = 0;
  /** The result_sequence of the newest result added, 0 before the first. */
  lastSequence = 0;
  finished = false;
  finalStats: BrokerStats | undefined;

  private readonly consumers = new Map<string, Tally>();
  private readonly producers = new Map<string, number>();
  // NOTE: one entry per job ever seen, to count duplicates; memory grows with the job count.
  private readonly seenJobIds = new Set<bigint>();

  get averageProcessingMs(): number {
    return this.results === 0 ? 0 : this.totalProcessingMs / this.results;
  }

  add(result: Result): void {
    const sequence = Number(result.resultSequence);
    if (sequence > this.lastSequence + 1) {
      this.missedResults += sequence - this.lastSequence - 1;
    }
    this.lastSequence = Math.max(this.lastSequence, sequence);
    if (this.seenJobIds.has(result.jobId)) {
      this.duplicateResults++;
    }
    this.seenJobIds.add(result.jobId);
    const processingMs = msOfDuration(result.processingDuration);
    this.results++;
    this.totalProcessingMs += processingMs;
    let consumer = this.consumers.get(result.consumerId);
    if (consumer === undefined) {
      consumer = { results: 0, totalProcessingMs: 0 };
      this.consumers.set(result.consumerId, consumer);
    }
    consumer.results++;
    consumer.totalProcessingMs += processingMs;
    this.producers.set(result.producerId, (this.producers.get(result.producerId) ?? 0) + 1);
  }

  finish(stats: BrokerStats): void {
    this.finished = true;
    this.finalStats = stats;
  }

  /** Results per consumer id, in id order. */
  perConsumer(): { consumerId: string; results: number; totalProcessingMs: number }[] {
    return [...this.consumers]
      .map(([consumerId, tally]) => ({ consumerId, ...tally }))
      .sort((a, b) => a.consumerId.localeCompare(b.consumerId, "en", { numeric: true }));
  }

  summary(): AggregatorSummary {
    return create(AggregatorSummarySchema, {
      results: BigInt(this.results),
      totalProcessingDuration: durationOfMs(this.totalProcessingMs),
      averageProcessingDuration: durationOfMs(this.averageProcessingMs),
      duplicateResults: BigInt(this.duplicateResults),
      consumers: this.perConsumer().map((c) => ({
        consumerId: c.consumerId,
        results: BigInt(c.results),
        totalProcessingDuration: durationOfMs(c.totalProcessingMs),
      })),
      producers: [...this.producers]
        .sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }))
        .map(([producerId, results]) => ({ producerId, results: BigInt(results) })),
      finished: this.finished,
      finalStats: this.finalStats,
      missedResults: BigInt(this.missedResults),
      lastResultSequence: BigInt(this.lastSequence),
    });
  }
}
