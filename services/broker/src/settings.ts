import { Option } from "commander";
import {
  adminTokenOption,
  durationIn,
  integerIn,
  listenOptions,
  logOptions,
  metricsOptions,
  shutdownGraceOption,
  tlsOptions,
  parseMsRange,
  type LogSettings,
  type MsRange,
  type MetricsSettings,
  type ServerTlsSettings,
} from "@mpmc/common";
import { defaultRequestLimits, type RequestLimits } from "./rpc/limits.js";
import type { FsyncPolicy } from "./storage/sqlite-store.js";

/** Every broker setting, from flags or MPMC_* environment variables. */
export interface BrokerSettings extends LogSettings, RequestLimits, MetricsSettings, ServerTlsSettings {
  host: string;
  port: number;
  capacity: number;
  leaseTimeout: number;
  maxMessageBytes: number;
  resultWindow: number;
  maxAttempts: number;
  retryBackoff: MsRange;
  /** Folder of the durable store; unset keeps everything in memory. */
  dataDir: string | undefined;
  fsync: FsyncPolicy;
  commitInterval: number;
  maxStoreBytes: number | undefined;
  shutdownGrace: number;
  /** Bearer token that operator RPCs such as CloseQueue require. They are open to every client when it is unset. */
  adminToken: string | undefined;
}

export const brokerDefaults: Omit<BrokerSettings, keyof LogSettings | "host" | "port"> = {
  capacity: 20,
  leaseTimeout: 30_000,
  maxMessageBytes: 4_194_304,
  resultWindow: 10_000,
  maxAttempts: 5,
  retryBackoff: { minMs: 500, maxMs: 30_000 },
  dataDir: undefined,
  fsync: "full",
  commitInterval: 2,
  maxStoreBytes: undefined,
  shutdownGrace: 10_000,
  ...defaultRequestLimits,
  metricsPort: 9464,
  metricsHost: "0.0.0.0",
  tlsCert: undefined,
  tlsKey: undefined,
  tlsClientCa: undefined,
  adminToken: undefined,
};

export function brokerOptions(): Option[] {
  return [
    ...listenOptions(50051),
    new Option("--capacity <jobs>", "maximum jobs in the queue; producers wait while it is full")
      .env("MPMC_CAPACITY")
      .default(brokerDefaults.capacity)
      .argParser(integerIn(1, 10_000_000)),
    new Option("--lease-timeout <time>", "how long a consumer may hold a job before it goes back to the queue, e.g. 30s")
      .env("MPMC_LEASE_TIMEOUT")
      .default(brokerDefaults.leaseTimeout, "30s")
      .argParser(durationIn(100, 86_400_000)),
    new Option("--max-message-bytes <bytes>", "maximum size of a request message")
      .env("MPMC_MAX_MESSAGE_BYTES")
      .default(brokerDefaults.maxMessageBytes)
      .argParser(integerIn(1_024, 268_435_456)),
    new Option("--max-batch-jobs <jobs>", "maximum jobs in one Publish request")
      .env("MPMC_MAX_BATCH_JOBS")
      .default(brokerDefaults.maxBatchJobs)
      .argParser(integerIn(1, 100_000)),
    new Option("--max-payload-bytes <bytes>", "maximum payload size of one job")
      .env("MPMC_MAX_PAYLOAD_BYTES")
      .default(brokerDefaults.maxPayloadBytes)
      .argParser(integerIn(0, 268_435_456)),
    new Option("--max-attributes <count>", "maximum attributes on one job")
      .env("MPMC_MAX_ATTRIBUTES")
      .default(brokerDefaults.maxAttributes)
      .argParser(integerIn(0, 10_000)),
    new Option("--result-window <results>", "newest results kept for subscribers that resume or read slowly; one further behind is ended")
      .env("MPMC_RESULT_WINDOW")
      .default(brokerDefaults.resultWindow)
      .argParser(integerIn(1, 10_000_000)),
    new Option("--max-attempts <count>", "attempts before a failing job moves to the dead letters")
      .env("MPMC_MAX_ATTEMPTS")
      .default(brokerDefaults.maxAttempts)
      .argParser(integerIn(1, 1_000)),
    new Option("--retry-backoff <min-max>", "wait before a failed job's next attempt, in ms: MIN after the first failure, doubling up to MAX, with jitter")
      .env("MPMC_RETRY_BACKOFF")
      .default(brokerDefaults.retryBackoff, "500-30000")
      .argParser(parseMsRange),
    new Option("--data-dir <path>", "folder for the durable store; without it the broker keeps everything in memory").env(
      "MPMC_DATA_DIR",
    ),
    new Option("--fsync <policy>", "with --data-dir: full syncs every commit to disk; normal survives a broker crash but not a power loss; off leaves it to the OS")
      .choices(["full", "normal", "off"])
      .env("MPMC_FSYNC")
      .default(brokerDefaults.fsync),
    new Option("--commit-interval <time>", "with --data-dir: most time a change waits to be committed with others, e.g. 2ms")
      .env("MPMC_COMMIT_INTERVAL")
      .default(brokerDefaults.commitInterval, "2ms")
      .argParser(durationIn(0, 1_000)),
    new Option("--max-store-bytes <bytes>", "with --data-dir: largest store file; when full, new jobs are rejected with RESOURCE_EXHAUSTED")
      .env("MPMC_MAX_STORE_BYTES")
      .argParser(integerIn(65_536, Number.MAX_SAFE_INTEGER)),
    shutdownGraceOption(),
    ...metricsOptions(brokerDefaults.metricsPort),
    ...tlsOptions({ server: true, client: false }),
    adminTokenOption(
      "bearer token that CloseQueue, ReleaseLease, RequeueDeadLetters and PurgeDeadLetters require; prefer MPMC_ADMIN_TOKEN, since other users can read command lines",
    ),
    ...logOptions(),
  ];
}
