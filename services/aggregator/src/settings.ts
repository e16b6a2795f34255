import { Option } from "commander";
import {
  brokerAddressOption,
  integerIn,
  listenOptions,
  logOptions,
  metricsOptions,
  shutdownGraceOption,
  tlsOptions,
  type ClientTlsSettings,
  type LogSettings,
  type MetricsSettings,
  type ServerTlsSettings,
} from "@mpmc/common";

/**
 * Every aggregator setting, from flags or MPMC_* environment variables. Its
 * --tls-cert and --tls-key serve its own clients and, for mutual TLS, identify
 * it to the broker.
 */
export interface AggregatorSettings extends LogSettings, MetricsSettings, ServerTlsSettings, ClientTlsSettings {
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
    ...metricsOptions(9465),
    ...tlsOptions({ server: true, client: true }),
    ...logOptions(),
  ];
}
