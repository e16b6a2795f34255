/** The benchmark's scenarios, in the order a full run makes them. */
export const scenarioNames = ["submit", "publish", "pipeline", "relay", "durable", "scale"] as const;
export type ScenarioName = (typeof scenarioNames)[number];

/**
 * The fixed amount of work and the time bound of every scenario. Each run
 * stops after its work or its time bound, whichever comes first, and the
 * report states which.
 */
export interface Sizes {
  submit: { calls: number; warmupCalls: number; rounds: number; timeLimitMs: number };
  publish: { jobs: number; jobsPerStream: number; streams: number; batchSizes: number[]; timeLimitMs: number };
  pipeline: {
    jobs: number;
    producers: number;
    consumers: number;
    credit: number;
    batchSize: number;
    capacity: number;
    timeLimitMs: number;
  };
  scale: {
    consumerStreams: number;
    producerStreams: number;
    workersPerRole: number;
    jobsPerProducer: number;
    batchSize: number;
    capacity: number;
    timeLimitMs: number;
    queuedJobs: number;
    memoryBatchSize: number;
    memoryTimeLimitMs: number;
  };
}

export const fullSizes: Sizes = {
  submit: { calls: 20_000, warmupCalls: 2_000, rounds: 2, timeLimitMs: 60_000 },
  publish: { jobs: 100_000, jobsPerStream: 1_000, streams: 4, batchSizes: [1, 10, 100], timeLimitMs: 60_000 },
  pipeline: { jobs: 100_000, producers: 2, consumers: 4, credit: 100, batchSize: 10, capacity: 10_000, timeLimitMs: 120_000 },
  scale: {
    consumerStreams: 1_000,
    producerStreams: 1_000,
    workersPerRole: 4,
    jobsPerProducer: 100,
    batchSize: 1,
    capacity: 10_000,
    timeLimitMs: 180_000,
    queuedJobs: 1_000_000,
    memoryBatchSize: 100,
    memoryTimeLimitMs: 180_000,
  },
};

/** --quick: each scenario in a few seconds, with smaller counts that the report states. */
export const quickSizes: Sizes = {
  submit: { calls: 3_000, warmupCalls: 500, rounds: 1, timeLimitMs: 5_000 },
  publish: { jobs: 10_000, jobsPerStream: 1_000, streams: 4, batchSizes: [1, 10, 100], timeLimitMs: 5_000 },
  pipeline: { jobs: 10_000, producers: 2, consumers: 2, credit: 100, batchSize: 10, capacity: 10_000, timeLimitMs: 20_000 },
  scale: {
    consumerStreams: 100,
    producerStreams: 100,
    workersPerRole: 2,
    jobsPerProducer: 50,
    batchSize: 1,
    capacity: 10_000,
    timeLimitMs: 30_000,
    queuedJobs: 100_000,
    memoryBatchSize: 100,
    memoryTimeLimitMs: 30_000,
  },
};

export interface BenchSettings {
  quick: boolean;
  sizes: Sizes;
  /** Unary calls in flight in the submit scenario. */
  concurrency: number;
  /** Bytes of each job's payload in every scenario. */
  payloadBytes: number;
  /** Directory for the pipeline broker's V8 CPU profile; no profile when unset. */
  cpuProfileDir: string | undefined;
}
