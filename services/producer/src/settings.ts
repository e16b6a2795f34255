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

/** Every producer setting, from flags or MPMC_* environment variables. */
export interface ProducerSettings extends LogSettings, MetricsSettings, ClientTlsSettings {
  broker: string;
  id: string | undefined;
  loops: number;
  duration: number;
  /** Jobs per loop, sent as fast as the broker takes them; unset means run for the duration. */
  count: number | undefined;
  /** Jobs per second per loop; unset means a random pause between jobs. */
  rate: number | undefined;
  pauseMs: MsRange;
  batchSize: number;
  payloadBytes: number;
}

export function producerOptions(): Option[] {
  return [
    brokerAddressOption(),
    new Option("--id <id>", "producer id; with several loops each gets ID-N (default: HOST-PID)").env("MPMC_ID").argParser(parseId),
    new Option("--loops <count>", "producer loops in this process, each with its own stream")
      .env("MPMC_LOOPS")
      .default(1)
      .argParser(integerIn(1, 10_000)),
    new Option("--duration <time>", "how long each loop produces, e.g. 3s; ignored with --count")
      .env("MPMC_DURATION")
      .default(3_000, "3s")
      .argParser(durationIn(0, 604_800_000)),
    new Option("--count <jobs>", "jobs per loop, sent as fast as the broker accepts them")
      .env("MPMC_COUNT")
      .argParser(integerIn(0, 1_000_000_000)),
    new Option("--rate <jobs-per-second>", "fixed pace per loop instead of random pauses")
      .env("MPMC_RATE")
      .argParser(integerIn(1, 10_000_000)),
    new Option("--pause-ms <min-max>", "random pause between jobs in milliseconds, without --rate or --count")
      .env("MPMC_PAUSE_MS")
      .default(parseMsRange("50-150"), "50-150")
      .argParser(parseMsRange),
    new Option("--batch-size <jobs>", "jobs per Publish request")
      .env("MPMC_BATCH_SIZE")
      .default(1)
      .argParser(integerIn(1, 100_000)),
    new Option("--payload-bytes <bytes>", "size of each job's random payload")
      .env("MPMC_PAYLOAD_BYTES")
      .default(0)
      .argParser(integerIn(0, 268_435_456)),
    ...metricsOptions(9467),
    ...tlsOptions({ server: false, client: true }),
    ...logOptions(),
  ];
}
