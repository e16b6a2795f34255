import { Option } from "commander";
import { brokerAddressOption, integerIn, listenOptions, logOptions, shutdownGraceOption, type LogSettings } from "@mpmc/common";

/** Every aggregator setting, from flags or MPMC_* environment variables. */
export interface AggregatorSettings extends LogSettings {
  broker: string;
  host: string;
  port: number;
  progressEvery: number;
  /** File to write every result to as one JSON line, for audits and tests. */
  resultsFile: string | undefined;
  shutdownGrace: number;
}

export function aggregatorOptions(): Option[] {
  return [
    brokerAddressOption(),
    ...listenOptions(50052),
    new Option("--progress-every <results>", "log the running totals after this many results")
      .env("MPMC_PROGRESS_EVERY")
      .default(10)
      .argParser(integerIn(1, 1_000_000_000)),
    new Option("--results-file <path>", "also write every result to this file, one JSON object per line").env(
      "MPMC_RESULTS_FILE",
    ),
    shutdownGraceOption(),
    ...logOptions(),
  ];
}
