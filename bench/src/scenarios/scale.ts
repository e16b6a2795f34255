import { payloadOf, publishRequests } from "../jobs.js";
import type { LoadSummary } from "../latency.js";
import { runLoad } from "../load.js";
import { benchScript, type BenchChild, type ChildMessage } from "../processes.js";
import { Progress, note } from "../progress.js";
import {
  GaugeWatcher,
  measureMemory,
  pollUntil,
  startBroker,
  startTimeoutMs,
  type MemoryReading,
  type StartedBroker,
} from "../services.js";
import { atMost, type TargetCheck } from "../targets.js";
import { stopGraceMs, type ScenarioContext } from "./context.js";

export interface ScaleStreamsResult {
  consumerStreams: number;
  producerStreams: number;
  workersPerRole: number;
  jobsPerProducer: number;
  batchSize: number;
  capacity: number;
  jobs: number;
  processed: number;
  elapsedMs: number;
  jobsPerSecond: number;
  stoppedBy: "count" | "time";
  /** Every stream's final gRPC status, from the client processes. */
  statusCodeDistribution: Record<string, number>;
  workerExitCodes: (number | string)[];
  redelivered: number;
  rejectedResults: number;
  /** Failed streams, failed client processes and rejected results, with a target of zero. */
  errors: TargetCheck;
  share: {
    meanJobs: number;
    minJobs: number;
    maxJobs: number;
    /** Largest distance of one consumer's job count from the mean, in % of the mean. */
    maxDeviationPercent: TargetCheck;
    /** Mean jobs per consumer stream of each client process, which shows when one process was slower than another. */
    perWorkerMeanJobs: number[];
    /** The largest deviation from its own process's mean, in %: the broker's fairness between streams of one connection. */
    maxDeviationWithinWorkerPercent: number;
    /** Jobs processed by each consumer stream, by consumer index. */
    perConsumer: number[];
  };
}

export interface ScaleMemoryResult {
  queuedJobs: number;
  capacity: number;
  payloadBytes: number;
  batchSize: number;
  publish: LoadSummary;
  publishStoppedBy: "count" | "time";
  queuedAfter: number;
  /** Readings taken after two full GCs in the broker, before the jobs were published and once all were queued. */
  before: MemoryReading;
  after: MemoryReading;
  /** (VmRSS after - VmRSS before) / queued jobs - payload bytes. */
  rssBytesPerJob: TargetCheck;
  /** Live V8 heap growth per job: the job records and their objects. */
  heapBytesPerJob: number;
  /** Growth of memory outside the V8 heap per job, mostly request buffers that payload views keep alive. */
  externalBytesPerJob: number;
}

export interface ScaleResult {
  description: string;
  countsNote: string;
  streams: ScaleStreamsResult;
  memory: ScaleMemoryResult;
}

/**
 * Many streams on one broker, from a few client processes that each hold
 * many streams on one HTTP/2 connection, and the broker's memory per queued
 * job with a full queue and no consumers.
 */
export async function runScaleScenario(ctx: ScenarioContext): Promise<ScaleResult> {
  const sizes = ctx.settings.sizes.scale;
  const countsNote = ctx.settings.quick
    ? `--quick: ${sizes.consumerStreams} consumer and ${sizes.producerStreams} producer streams, ${sizes.queuedJobs} queued jobs (a full run uses 1000, 1000 and 1000000)`
    : `${sizes.consumerStreams} consumer and ${sizes.producerStreams} producer streams, ${sizes.queuedJobs} queued jobs`;
  note(`[scale] ${countsNote}`);
  let streams: ScaleStreamsResult;
  try {
    streams = await measureStreams(ctx);
  } finally {
    await ctx.group.stopAll(stopGraceMs);
  }
  let memory: ScaleMemoryResult;
  try {
    memory = await measureQueuedMemory(ctx);
  } finally {
    await ctx.group.stopAll(stopGraceMs);
  }
  return {
    description: "many consumer and producer streams on one broker, and the broker's memory per queued job",
    countsNote,
    streams,
    memory,
  };
}

async function measureStreams(ctx: ScenarioContext): Promise<ScaleStreamsResult> {
  const sizes = ctx.settings.sizes.scale;
  const jobs = sizes.producerStreams * sizes.jobsPerProducer;
  const started = performance.now();
  const deadline = started + sizes.timeLimitMs;
  const broker = await startBroker(ctx.group, { name: "broker-scale", capacity: sizes.capacity });
  const timeoutArgs = ["--timeout-ms", String(sizes.timeLimitMs)];

  const consumers = startWorkers(ctx, broker, "consume", sizes.consumerStreams, sizes.workersPerRole, timeoutArgs);
  await Promise.all(consumers.map((worker) => worker.waitFor("ready", startTimeoutMs)));
  await pollUntil(
    `${sizes.consumerStreams} consumer streams to attach`,
    async () => {
      const { stats } = await broker.client.getStats({}, { timeoutMs: 10_000 });
      return (stats?.consumersConnected ?? 0) >= sizes.consumerStreams;
    },
    Math.max(startTimeoutMs, sizes.timeLimitMs / 4),
    100,
  );
  const watcher = new GaugeWatcher(broker.client);
  const publishArgs = [
    ...timeoutArgs,
    "--jobs",
    String(sizes.jobsPerProducer),
    "--batch-size",
    String(sizes.batchSize),
    "--payload-bytes",
    String(ctx.settings.payloadBytes),
  ];
  const producers = startWorkers(ctx, broker, "publish", sizes.producerStreams, sizes.workersPerRole, publishArgs);
  const progress = new Progress("scale streams", () => {
    const g = watcher.latest;
    return g === undefined ? "no gauges yet" : `${g.created} created, ${g.processed} of ${jobs} processed, ${g.consumersConnected} consumers`;
  });

  let firstAt = performance.now();
  let endAt: number;
  let stoppedBy: "count" | "time" = "count";
  try {
    firstAt = await watcher.until("the first accepted job", (g) => g.created > 0n, deadline - performance.now());
    endAt = await watcher.until(`${jobs} processed jobs`, (g) => g.processed >= BigInt(jobs), deadline - performance.now());
  } catch (err) {
    note(`[scale] stopped by the time bound: ${(err as Error).message}`);
    stoppedBy = "time";
    endAt = performance.now();
  } finally {
    progress.stop();
  }
  const processedAtEnd = stoppedBy === "count" ? jobs : Number(watcher.latest?.processed ?? 0n);
  await watcher.stop();

  const { stats } = await broker.client.getStats({}, { timeoutMs: 10_000 });
  const perConsumer = consumerCounts(stats?.consumers ?? [], sizes.consumerStreams);
  // Closing the queue lets the broker end every consumer stream with OK once nothing is in flight.
  await broker.client.closeQueue({}, { timeoutMs: 10_000 });
  const reports = await Promise.all([...producers, ...consumers].map((worker) => doneOrStop(worker, 30_000)));
  const statuses: Record<string, number> = {};
  for (const report of reports) {
    for (const [name, count] of Object.entries((report?.statuses ?? {}) as Record<string, number>)) {
      statuses[name] = (statuses[name] ?? 0) + count;
    }
  }
  const workerExitCodes = await Promise.all([...producers, ...consumers].map((worker) => worker.exited));
  const failedStreams = Object.entries(statuses).reduce((sum, [name, count]) => sum + (name === "OK" ? 0 : count), 0);
  const missingReports = reports.filter((report) => report === undefined).length;
  const failedWorkers = workerExitCodes.filter((code) => code !== 0).length;
  const rejectedResults = Number(stats?.rejectedResults ?? 0n);
  const elapsedMs = endAt - firstAt;
  return {
    consumerStreams: sizes.consumerStreams,
    producerStreams: sizes.producerStreams,
    workersPerRole: sizes.workersPerRole,
    jobsPerProducer: sizes.jobsPerProducer,
    batchSize: sizes.batchSize,
    capacity: sizes.capacity,
    jobs,
    processed: processedAtEnd,
    elapsedMs,
    jobsPerSecond: elapsedMs > 0 ? (processedAtEnd * 1000) / elapsedMs : 0,
    stoppedBy,
    statusCodeDistribution: statuses,
    workerExitCodes,
    redelivered: Number(stats?.redelivered ?? 0n),
    rejectedResults,
    errors: atMost(failedStreams + missingReports + failedWorkers + rejectedResults, 0),
    share: {
      meanJobs: meanOf(perConsumer),
      minJobs: Math.min(...perConsumer),
      maxJobs: Math.max(...perConsumer),
      maxDeviationPercent: atMost(maxDeviationPercent(perConsumer), 10),
      perWorkerMeanJobs: workerParts(perConsumer, sizes.consumerStreams, sizes.workersPerRole).map(meanOf),
      maxDeviationWithinWorkerPercent: Math.max(
        ...workerParts(perConsumer, sizes.consumerStreams, sizes.workersPerRole).map((part) => maxDeviationPercent(part)),
      ),
      perConsumer,
    },
  };
}

/** Starts `workers` client processes that split `streams` streams between them. */
function startWorkers(
  ctx: ScenarioContext,
  broker: StartedBroker,
  role: "consume" | "publish",
  streams: number,
  workers: number,
  extraArgs: string[],
): BenchChild[] {
  const perWorker = Math.ceil(streams / workers);
  const started: BenchChild[] = [];
  for (let first = 1, w = 1; first <= streams; first += perWorker, w++) {
    const count = Math.min(perWorker, streams - first + 1);
    started.push(
      ctx.group.start({
        name: `scale-${role}-${w}`,
        script: benchScript("workers/scale-worker.js"),
        args: ["--role", role, "--broker", broker.address, "--streams", String(count), "--first-index", String(first), ...extraArgs],
      }),
    );
  }
  return started;
}

/** Splits consumer counts by client process, the way startWorkers splits the streams. */
function workerParts(perConsumer: number[], streams: number, workers: number): number[][] {
  const perWorker = Math.ceil(streams / workers);
  const parts: number[][] = [];
  for (let first = 0; first < streams; first += perWorker) {
    parts.push(perConsumer.slice(first, first + perWorker));
  }
  return parts;
}

function meanOf(counts: number[]): number {
  return counts.reduce((sum, n) => sum + n, 0) / Math.max(1, counts.length);
}

/** Returns the largest distance of one count from the mean, in % of the mean, or 0 when the mean is 0. */
function maxDeviationPercent(counts: number[]): number {
  const mean = meanOf(counts);
  return mean > 0 ? (Math.max(...counts.map((n) => Math.abs(n - mean))) / mean) * 100 : 0;
}

/** Jobs processed per consumer stream, from GetStats, in consumer index order; a missing consumer counts 0. */
function consumerCounts(consumers: readonly { consumerId: string; processed: bigint }[], streams: number): number[] {
  const counts = new Array<number>(streams).fill(0);
  for (const consumer of consumers) {
    const match = /^scale-consumer-(\d+)$/.exec(consumer.consumerId);
    if (match !== null) {
      counts[Number(match[1]) - 1] = Number(consumer.processed);
    }
  }
  return counts;
}

/** Waits for a worker's "done" report; a worker that sends none in time gets a "stop" message, and the result is undefined. */
async function doneOrStop(worker: BenchChild, timeoutMs: number): Promise<ChildMessage | undefined> {
  try {
    return await worker.waitFor("done", timeoutMs);
  } catch (err) {
    note(`[scale] ${(err as Error).message}`);
    worker.send({ type: "stop" });
    return undefined;
  }
}

async function measureQueuedMemory(ctx: ScenarioContext): Promise<ScaleMemoryResult> {
  const sizes = ctx.settings.sizes.scale;
  const payloadBytes = ctx.settings.payloadBytes;
  const queuedJobs = sizes.queuedJobs;
  const jobsPerStream = 10_000;
  const broker = await startBroker(ctx.group, { name: "broker-memory", capacity: queuedJobs, gcHook: true });
  const before = await measureMemory(broker);

  const payload = payloadOf(payloadBytes);
  const publish = await runLoad({
    label: "scale memory publish",
    concurrency: 4,
    count: Math.ceil(queuedJobs / jobsPerStream),
    timeLimitMs: sizes.memoryTimeLimitMs,
    call: async (index) => {
      const jobs = Math.min(jobsPerStream, queuedJobs - index * jobsPerStream);
      await broker.client.publish(publishRequests(`bench-memory-${index + 1}`, jobs, sizes.memoryBatchSize, payload), {
        timeoutMs: sizes.memoryTimeLimitMs,
      });
    },
  });
  const { stats } = await broker.client.getStats({}, { timeoutMs: 10_000 });
  const queuedAfter = Number(stats?.queued ?? 0n);
  const after = await measureMemory(broker);
  const perJob = (growth: number): number => (queuedAfter > 0 ? growth / queuedAfter : 0);
  return {
    queuedJobs,
    capacity: queuedJobs,
    payloadBytes,
    batchSize: sizes.memoryBatchSize,
    publish: publish.recorder.summarize(publish.elapsedMs),
    publishStoppedBy: publish.stoppedBy,
    queuedAfter,
    before,
    after,
    rssBytesPerJob: atMost(perJob(after.rssBytes - before.rssBytes) - payloadBytes, 300),
    heapBytesPerJob: perJob(after.heapUsedBytes - before.heapUsedBytes),
    externalBytesPerJob: perJob(after.externalBytes - before.externalBytes),
  };
}
