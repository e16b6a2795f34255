import { Option } from "commander";
import { durationIn, integerIn, listenOptions, logOptions, shutdownGraceOption, type LogSettings } from "@mpmc/common";
import { defaultRequestLimits, type RequestLimits } from "./rpc/limits.js";

/** Every broker setting, from flags or MPMC_* environment variables. */
export interface BrokerSettings extends LogSettings, RequestLimits {
  host: string;
  port: number;
  capacity: number;
  leaseTimeout: number;
  maxMessageBytes: number;
  maxSubscriberBacklog: number;
  shutdownGrace: number;
}

export const brokerDefaults: Omit<BrokerSettings, keyof LogSettings | "host" | "port"> = {
  capacity: 20,
  leaseTimeout: 30_000,
  maxMessageBytes: 4_194_304,
  maxSubscriberBacklog: 10_000,
  shutdownGrace: 10_000,
  ...defaultRequestLimits,
};

export function brokerOptions(): Option[] {
  return [
    ...listenOptions(50051),
    new Option("--capacity <jobs>", "most jobs the queue holds; producers wait while it is full")
      .env("MPMC_CAPACITY")
      .default(brokerDefaults.capacity)
      .argParser(integerIn(1, 10_000_000)),
    new Option("--lease-timeout <time>", "how long a consumer may hold a job before it goes back to the queue, e.g. 30s")
      .env("MPMC_LEASE_TIMEOUT")
      .default(brokerDefaults.leaseTimeout, "30s")
      .argParser(durationIn(100, 86_400_000)),
    new Option("--max-message-bytes <bytes>", "largest request message accepted")
      .env("MPMC_MAX_MESSAGE_BYTES")
      .default(brokerDefaults.maxMessageBytes)
      .argParser(integerIn(1_024, 268_435_456)),
    new Option("--max-batch-jobs <jobs>", "most jobs in one Publish request")
      .env("MPMC_MAX_BATCH_JOBS")
      .default(brokerDefaults.maxBatchJobs)
      .argParser(integerIn(1, 100_000)),
    new Option("--max-payload-bytes <bytes>", "largest payload of one job")
      .env("MPMC_MAX_PAYLOAD_BYTES")
      .default(brokerDefaults.maxPayloadBytes)
      .argParser(integerIn(0, 268_435_456)),
    new Option("--max-attributes <count>", "most attributes on one job")
      .env("MPMC_MAX_ATTRIBUTES")
      .default(brokerDefaults.maxAttributes)
      .argParser(integerIn(0, 10_000)),
    new Option("--max-subscriber-backlog <results>", "results buffered for a slow result subscriber before it is ended")
      .env("MPMC_MAX_SUBSCRIBER_BACKLOG")
      .default(brokerDefaults.maxSubscriberBacklog)
      .argParser(integerIn(1, 10_000_000)),
    shutdownGraceOption(),
    ...logOptions(),
  ];
}
