import { Option } from "commander";
import {
  brokerAddressOption,
  durationIn,
  integerIn,
  logOptions,
  metricsOptions,
  parseId,
  parseMsRange,
  tlsOptions,
  type ClientTlsSettings,
  type LogSettings,
  type MetricsSettings,
  type MsRange,
} from "@mpmc/common";

/** Every consumer setting, from flags or MPMC_* environment variables. */
export interface ConsumerSettings extends LogSettings, MetricsSettings, ClientTlsSettings {
  broker: string;
  id: string;
  credit: number;
  /** Handlers run at once; unset means as many as the credit. */
  concurrency: number | undefined;
  workMs: MsRange;
  /** Path of a handler module; the simulated work runs when unset. */
  handler: string | undefined;
  queueWarn: number;
  shutdownGrace: number;
}

export function consumerOptions(): Option[] {
  return [
    brokerAddressOption(),
    new Option("--id <id>", "consumer id shown in stats and results (default: HOST-PID)").env("MPMC_ID").argParser(parseId),
    new Option("--credit <jobs>", "maximum jobs the consumer holds at once")
      .env("MPMC_CREDIT")
      .default(1)
      .argParser(integerIn(1, 10_000)),
    new Option("--concurrency <jobs>", "handlers run at once (default: the credit); with less, the rest wait here unstarted and are handed back on SIGTERM")
      .env("MPMC_CONCURRENCY")
      .argParser(integerIn(1, 10_000)),
    new Option("--work-ms <min-max>", "simulated work per job in milliseconds, when no handler is set")
      .env("MPMC_WORK_MS")
      .default(parseMsRange("80-200"), "80-200")
      .argParser(parseMsRange),
    new Option("--handler <module>", "path of a module whose default export is an async (job) => output function").env(
      "MPMC_HANDLER",
    ),
    new Option("--queue-warn <time>", "warn when a job waited in the queue longer than this, e.g. 500ms")
      .env("MPMC_QUEUE_WARN")
      .default(500, "500ms")
      .argParser(durationIn(0, 86_400_000)),
    new Option("--shutdown-grace <time>", "how long running handlers may finish after SIGTERM, e.g. 30s")
      .env("MPMC_SHUTDOWN_GRACE")
      .default(30_000, "30s")
      .argParser(durationIn(0, 3_600_000)),
    ...metricsOptions(9466),
    ...tlsOptions({ server: false, client: true }),
    ...logOptions(),
  ];
}
