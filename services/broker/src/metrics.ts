import { Counter, Gauge, Histogram, type Registry } from "@mpmc/common";
import type { BrokerSnapshot, ResultRecord } from "./core/types.js";

/**
 * Bucket bounds in seconds for processing and queue-wait times. They reach
 * past the default 30 s lease, because a handler may run up to its lease.
 */
const secondsBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export interface BrokerMetrics {
  /** Adds settled jobs to the processing and queue-wait histograms. */
  observeResults(batch: readonly ResultRecord[]): void;
}

/**
 * Registers the broker's metrics. Gauges and counters read a fresh snapshot at
 * each scrape, so they show what GetStats would return at that moment. The histograms need every
 * result, so the caller feeds them from a result subscription.
 */
export function registerBrokerMetrics(registry: Registry, snapshot: () => BrokerSnapshot): BrokerMetrics {
  const gauge = (name: string, help: string, read: (s: BrokerSnapshot) => number): void => {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read(snapshot()));
      },
    });
  };
  // The core keeps these totals itself, so each scrape copies them instead of counting twice.
  const counter = (name: string, help: string, read: (s: BrokerSnapshot) => number): void => {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read(snapshot()));
      },
    });
  };

  gauge("mpmc_queue_depth", "Jobs waiting in the queue.", (s) => s.queued);
  gauge("mpmc_jobs_in_flight", "Jobs delivered to a consumer and not yet settled.", (s) => s.inFlight);
  gauge("mpmc_consumers_connected", "Open Consume streams.", (s) => s.consumersConnected);
  counter("mpmc_jobs_created_total", "Jobs accepted from producers.", (s) => s.created);
  counter("mpmc_jobs_processed_total", "Jobs settled with a result.", (s) => s.processed);
  counter(
    "mpmc_jobs_redelivered_total",
    "Jobs returned to the queue because their consumer was lost or their lease ran out.",
    (s) => s.redelivered,
  );
  counter(
    "mpmc_jobs_failed_attempts_total",
    "Deliveries whose handler failed, whether the job was then retried or dead-lettered.",
    (s) => s.failedAttempts,
  );
  counter("mpmc_results_rejected_total", "Results rejected because the consumer did not hold the job.", (s) => s.rejectedResults);
  counter("mpmc_jobs_dead_lettered_total", "Jobs that failed for good: held in the dead letters or purged from them.", (s) => s.deadLettered);
  gauge("mpmc_jobs_waiting_retry", "Failed jobs waiting for their retry backoff to pass.", (s) => s.waitingRetry);
  gauge("mpmc_dead_letters", "Jobs held in the dead letters now.", (s) => s.deadLetters);

  new Counter({
    name: "mpmc_consumer_jobs_processed_total",
    help: "Jobs settled with a result, per consumer id, including consumers that have disconnected.",
    labelNames: ["consumer_id"],
    registers: [registry],
    collect() {
      this.reset();
      for (const consumer of snapshot().consumers) {
        this.inc({ consumer_id: consumer.consumerId }, consumer.processed);
      }
    },
  });

  const processing = new Histogram({
    name: "mpmc_job_processing_seconds",
    help: "Handler run time of settled jobs, as their consumers reported it.",
    buckets: secondsBuckets,
    registers: [registry],
  });
  const queueWait = new Histogram({
    name: "mpmc_job_queue_wait_seconds",
    help: "Time of settled jobs from acceptance to the delivery that produced the result.",
    buckets: secondsBuckets,
    registers: [registry],
  });

  return {
    observeResults(batch) {
      for (const result of batch) {
        processing.observe(result.processingMs / 1000);
        queueWait.observe(result.queueWaitMs / 1000);
      }
    },
  };
}
