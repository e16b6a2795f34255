import { Counter, type Registry } from "@mpmc/common";
import type { Aggregation } from "./aggregation.js";

/** Registers the aggregator's totals, read from the aggregation at each scrape. */
export function registerAggregatorMetrics(registry: Registry, aggregation: Aggregation): void {
  new Counter({
    name: "mpmc_aggregator_results_total",
    help: "Results received from the broker's result stream.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(aggregation.results);
    },
  });
  new Counter({
    name: "mpmc_aggregator_duplicate_results_total",
    help: "Results received for a job id seen before. Zero when every job has exactly one result.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(aggregation.duplicateResults);
    },
  });
}
