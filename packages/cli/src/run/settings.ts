import { Option } from "commander";
import { durationIn, integerIn, logOptions, parseMsRange, type LogSettings, type MsRange } from "@mpmc/common";

/** Settings of `mpmc run`, the whole pipeline on this machine. */
export interface RunSettings extends LogSettings {
  producers: number;
  consumers: number;
  capacity: number;
  duration: number;
  count: number | undefined;
  rate: number | undefined;
  pauseMs: MsRange;
  workMs: MsRange;
  credit: number;
  handler: string | undefined;
  report: string | undefined;
  resultsFile: string | undefined;
  timeout: number;
}

export function runOptions(): Option[] {
  return [
    new Option("--producers <count>", "producer processes").env("MPMC_PRODUCERS").default(4).argParser(integerIn(1, 256)),
    new Option("--consumers <count>", "consumer processes").env("MPMC_CONSUMERS").default(6).argParser(integerIn(1, 256)),
    new Option("--capacity <jobs>", "maximum jobs in the queue").env("MPMC_CAPACITY").default(20).argParser(integerIn(1, 10_000_000)),
    new Option("--duration <time>", "how long each producer runs, e.g. 3s").env("MPMC_DURATION").default(3_000, "3s").argParser(durationIn(0, 86_400_000)),
    new Option("--count <jobs>", "jobs per producer, as fast as the broker takes them, instead of --duration")
      .env("MPMC_COUNT")
      .argParser(integerIn(0, 1_000_000_000)),
    new Option("--rate <jobs-per-second>", "fixed pace per producer instead of random pauses").env("MPMC_RATE").argParser(integerIn(1, 10_000_000)),
    new Option("--pause-ms <min-max>", "random pause between a producer's jobs, in milliseconds")
      .env("MPMC_PAUSE_MS")
      .default(parseMsRange("50-150"), "50-150")
      .argParser(parseMsRange),
    new Option("--work-ms <min-max>", "simulated work per job, in milliseconds")
      .env("MPMC_WORK_MS")
      .default(parseMsRange("80-200"), "80-200")
      .argParser(parseMsRange),
    new Option("--credit <jobs>", "jobs each consumer runs at once").env("MPMC_CREDIT").default(1).argParser(integerIn(1, 10_000)),
    new Option("--handler <module>", "handler module for the consumers instead of the simulated work").env("MPMC_HANDLER"),
    new Option("--report <file>", "also write the final report as JSON to this file").env("MPMC_REPORT"),
    new Option("--results-file <file>", "also write every result to this file, one JSON object per line").env(
      "MPMC_RESULTS_FILE",
    ),
    new Option("--timeout <time>", "abort the run if it has not finished by then, e.g. 5m")
      .env("MPMC_TIMEOUT")
      .default(300_000, "5m")
      .argParser(durationIn(1_000, 86_400_000)),
    ...logOptions(),
  ];
}
