import { Counter, Gauge, Histogram, type Registry } from "@mpmc/common";
import { outputOf, type JobHandler } from "./handler.js";

/** Bucket bounds in seconds, reaching past the broker's default 30 s lease. */
const secondsBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * Registers the consumer's handler metrics and returns the handler wrapped to
 * record them. The counters follow the consumer's own report: a run that
 * returns an integer is processed, one that throws or returns anything else
 * has failed, and one aborted because the stream ended counts as neither.
 */
export function instrumentHandler(handler: JobHandler, registry: Registry): JobHandler {
  const processed = new Counter({
    name: "mpmc_handler_jobs_processed_total",
    help: "Jobs whose handler returned an integer output, so the consumer sent a result.",
    registers: [registry],
  });
  const failed = new Counter({
    name: "mpmc_handler_jobs_failed_total",
    help: "Jobs whose handler failed. Each went back to the broker as a failed attempt.",
    registers: [registry],
  });
  const duration = new Histogram({
    name: "mpmc_handler_duration_seconds",
    help: "Handler run time, whatever the outcome.",
    buckets: secondsBuckets,
    registers: [registry],
  });
  const inProgress = new Gauge({
    name: "mpmc_handler_jobs_in_progress",
    help: "Handlers running now.",
    registers: [registry],
  });

  return async (job, signal) => {
    inProgress.inc();
    const endTimer = duration.startTimer();
    try {
      const value = await handler(job, signal);
      // The consumer rejects the same outputs, so a result it cannot send is counted as failed here too.
      outputOf(value);
      processed.inc();
      return value;
    } catch (err) {
      if (!signal.aborted) {
        failed.inc();
      }
      throw err;
    } finally {
      inProgress.dec();
      endTimer();
    }
  };
}
