import { AggregatorService, connectTo, msOfDuration } from "@mpmc/common";
import { cpuTimeMs } from "../proc.js";
import {
  listProfiles,
  monotonicMicros,
  profileOfProcess,
  summarizeProfile,
  type ProfileSummary,
  type ProfileWindow,
} from "../profile-summary.js";
import { benchScript, type BenchChild } from "../processes.js";
import { Progress, note, perSecond } from "../progress.js";
import {
  GaugeWatcher,
  pollUntil,
  startAggregator,
  startBroker,
  startConsumers,
  startProducers,
  startTimeoutMs,
} from "../services.js";
import type { Sizes } from "../settings.js";
import { atLeast, type TargetCheck } from "../targets.js";
import { cpuMsPer, stopGraceMs, type ScenarioContext } from "./context.js";

/** The pipeline's shape, shared by the pipeline and relay scenarios so both carry the same traffic. */
export interface PipelineShape {
  jobs: number;
  producers: number;
  consumers: number;
  credit: number;
  /** Jobs per Publish request of each producer. */
  batchSize: number;
  payloadBytes: number;
  handler: string;
}

export interface PipelineResult {
  description: string;
  shape: PipelineShape & { capacity: number };
  /** Jobs processed from the first accepted job to the last processed one. */
  jobsPerSecond: number;
  elapsedMs: number;
  processed: number;
  stoppedBy: "count" | "time";
  timing: string;
  queueWaitMs: { p50: number; p90: number; p99: number; max: number };
  brokerCpuMs: number;
  brokerCpuMsPerJob: number;
  /** The aggregator's count of results; equal to processed when every result reached it. */
  aggregatorResults: number;
  duplicateResults: number;
  redelivered: number;
  rejectedResults: number;
  producerExitCodes: (number | string)[];
  /** Warning and error log lines of every child process. */
  childWarnings: number;
  childErrors: number;
  /** The monotonic clock span of the load, for cutting the broker's profile to it. */
  loadWindow: ProfileWindow;
  /** The broker's V8 CPU profile, when --cpu-prof was given. */
  cpuProfile: string | undefined;
  /** The profile's top self-time functions and categories during the load. */
  cpuProfileSummary: ProfileSummary | undefined;
}

export interface RelayResult {
  description: string;
  shape: PipelineShape;
  jobsPerSecond: number;
  elapsedMs: number;
  /** Jobs acked by the consumers, as the relay counted them. */
  acked: number;
  stoppedBy: "count" | "time";
  timing: string;
  relayCpuMs: number;
  relayCpuMsPerJob: number;
  producerExitCodes: (number | string)[];
  childWarnings: number;
  childErrors: number;
  /** Pipeline jobs per second over relay jobs per second. */
  ratio: TargetCheck;
}

export function pipelineShapeOf(sizes: Sizes, payloadBytes: number): PipelineShape {
  const p = sizes.pipeline;
  return {
    jobs: p.jobs,
    producers: p.producers,
    consumers: p.consumers,
    credit: p.credit,
    batchSize: p.batchSize,
    payloadBytes,
    handler: "bench/dist/noop-handler.js (returns data * 2 at once)",
  };
}

/**
 * The whole pipeline as separate processes: producers, the broker, consumers
 * with a no-op handler, and the aggregator. It measures jobs per second from
 * the first accepted job until the broker has processed the fixed job count,
 * the queue wait the broker reports, and the broker's CPU time per job.
 */
export async function runPipelineScenario(ctx: ScenarioContext): Promise<PipelineResult> {
  const profileDir = ctx.settings.cpuProfileDir;
  const profilesBefore = profileDir === undefined ? new Set<string>() : new Set(listProfiles(profileDir));
  let brokerPid = 0;
  let result: PipelineResult;
  try {
    result = await measurePipeline(ctx, (pid) => {
      brokerPid = pid;
    });
  } finally {
    // The broker writes its CPU profile when it exits after SIGTERM, so the profile exists only after this.
    await ctx.group.stopAll(stopGraceMs);
  }
  if (profileDir !== undefined) {
    result.cpuProfile = profileOfProcess(profileDir, brokerPid, profilesBefore);
    if (result.cpuProfile === undefined) {
      note(`[pipeline] the broker (pid ${brokerPid}) wrote no CPU profile to ${profileDir}`);
    } else {
      result.cpuProfileSummary = summarizeProfile(result.cpuProfile, 25, result.loadWindow);
    }
  }
  return result;
}

export async function measurePipeline(
  ctx: ScenarioContext,
  onBrokerStarted: (pid: number) => void,
  brokerOptions: { dataDir?: string; profile?: boolean } = {},
): Promise<PipelineResult> {
  const sizes = ctx.settings.sizes.pipeline;
  const shape = pipelineShapeOf(ctx.settings.sizes, ctx.settings.payloadBytes);
  const profileDir = brokerOptions.profile === false ? undefined : ctx.settings.cpuProfileDir;
  const children: BenchChild[] = [];
  const broker = await startBroker(ctx.group, { capacity: sizes.capacity, cpuProfileDir: profileDir, dataDir: brokerOptions.dataDir });
  const brokerPid = broker.child.pid;
  onBrokerStarted(brokerPid);
  const aggregator = await startAggregator(ctx.group, broker.address);
  children.push(broker.child, aggregator.child, ...startConsumers(ctx.group, broker.address, { count: shape.consumers, credit: shape.credit }));
  await pollUntil(
    `${shape.consumers} consumers and the aggregator to connect`,
    async () => {
      const { stats } = await broker.client.getStats({}, { timeoutMs: 5_000 });
      return (stats?.consumersConnected ?? 0) >= shape.consumers && (stats?.subscribersConnected ?? 0) >= 1;
    },
    startTimeoutMs,
  );
  const watcher = new GaugeWatcher(broker.client);
  await watcher.until("the first WatchStats message", () => true, startTimeoutMs);

  const cpuBefore = cpuTimeMs(brokerPid);
  const windowStart = monotonicMicros();
  const producers = startProducers(ctx.group, broker.address, { ...shape, count: shape.producers, jobsPerProducer: jobsPerProducer(shape) });
  children.push(...producers);
  const started = performance.now();
  const progress = new Progress("pipeline", () => {
    const g = watcher.latest;
    return g === undefined ? "no gauges yet" : `${g.created} created, ${g.processed} processed, ${g.queued} queued, ${g.inFlight} in flight`;
  });
  let firstAt = started;
  let endAt: number;
  let stoppedBy: "count" | "time" = "count";
  try {
    firstAt = await watcher.until("the first accepted job", (g) => g.created > 0n, sizes.timeLimitMs);
    endAt = await watcher.until(`${shape.jobs} processed jobs`, (g) => g.processed >= BigInt(shape.jobs), started + sizes.timeLimitMs - performance.now());
  } catch (err) {
    note(`[pipeline] stopped by the time bound: ${(err as Error).message}`);
    stoppedBy = "time";
    endAt = performance.now();
  } finally {
    progress.stop();
  }
  const brokerCpuMs = cpuTimeMs(brokerPid) - cpuBefore;
  const loadWindow = { startMicros: windowStart, endMicros: monotonicMicros() };
  // With the time bound hit, the rate counts the jobs processed by then, not those finished while stopping.
  const processed = stoppedBy === "count" ? shape.jobs : Number(watcher.latest?.processed ?? 0n);
  await watcher.stop();

  const { stats } = await broker.client.getStats({}, { timeoutMs: 10_000 });
  const producerExitCodes = await exitCodesOf(producers, 15_000);
  const summary = await aggregatorSummary(aggregator.address, processed);
  const elapsedMs = endAt - firstAt;
  const queueWait = stats?.queueWait;
  return {
    description: "producers -> broker -> consumers (no-op handler) -> aggregator, each a separate process",
    shape: { ...shape, capacity: sizes.capacity },
    jobsPerSecond: elapsedMs > 0 ? (processed * 1000) / elapsedMs : 0,
    elapsedMs,
    processed,
    stoppedBy,
    timing: "from the first WatchStats message with created > 0 to the first with processed >= jobs; each arrives up to 50 ms late",
    queueWaitMs: {
      p50: msOfDuration(queueWait?.p50),
      p90: msOfDuration(queueWait?.p90),
      p99: msOfDuration(queueWait?.p99),
      max: msOfDuration(queueWait?.max),
    },
    brokerCpuMs,
    brokerCpuMsPerJob: cpuMsPer(brokerCpuMs, processed),
    aggregatorResults: summary.results,
    duplicateResults: summary.duplicates,
    redelivered: Number(stats?.redelivered ?? 0n),
    rejectedResults: Number(stats?.rejectedResults ?? 0n),
    producerExitCodes,
    childWarnings: children.reduce((sum, child) => sum + child.warnings, 0),
    childErrors: children.reduce((sum, child) => sum + child.errors, 0),
    loadWindow,
    cpuProfile: undefined,
    cpuProfileSummary: undefined,
  };
}

function jobsPerProducer(shape: PipelineShape): number {
  if (shape.jobs % shape.producers !== 0) {
    throw new Error(`the pipeline's ${shape.jobs} jobs must split evenly over ${shape.producers} producers`);
  }
  return shape.jobs / shape.producers;
}

/** Waits for processes that end by themselves; those still running after timeoutMs count as "running". */
async function exitCodesOf(children: BenchChild[], timeoutMs: number): Promise<(number | string)[]> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"running">((resolve) => {
    timer = setTimeout(() => resolve("running"), timeoutMs);
  });
  const codes = await Promise.all(children.map((child) => Promise.race([child.exited, timedOut])));
  clearTimeout(timer);
  return codes;
}

/** Reads the aggregator's totals once it has received `expected` results, or after 10 s. */
async function aggregatorSummary(address: string, expected: number): Promise<{ results: number; duplicates: number }> {
  const client = connectTo(AggregatorService, address);
  let results = 0;
  let duplicates = 0;
  try {
    await pollUntil(
      `the aggregator to receive ${expected} results`,
      async () => {
        const { summary } = await client.getSummary({}, { timeoutMs: 5_000 });
        results = Number(summary?.results ?? 0n);
        duplicates = Number(summary?.duplicateResults ?? 0n);
        return results >= expected;
      },
      10_000,
      100,
    );
  } catch (err) {
    note(`[pipeline] ${(err as Error).message}; reporting the aggregator's count so far`);
  }
  return { results, duplicates };
}

/**
 * Runs the pipeline's traffic through the relay baseline: the same producer and
 * consumer processes with the same settings, against a bare grpc-js stream
 * forwarder instead of the broker, and no aggregator, because the relay has
 * no results to follow.
 */
export async function runRelayScenario(ctx: ScenarioContext, pipelineJobsPerSecond: number): Promise<RelayResult> {
  const sizes = ctx.settings.sizes.pipeline;
  const shape = pipelineShapeOf(ctx.settings.sizes, ctx.settings.payloadBytes);
  const children: BenchChild[] = [];
  try {
    const relay = ctx.group.start({
      name: "relay-server",
      script: benchScript("baselines/relay-server.js"),
      args: ["--receivers", String(shape.consumers), "--count", String(shape.jobs)],
    });
    let acked = 0;
    relay.onMessage("progress", (message) => {
      acked = Number(message.acked);
    });
    const { port } = await relay.waitFor("listening", startTimeoutMs);
    const address = `127.0.0.1:${String(port)}`;
    children.push(relay, ...startConsumers(ctx.group, address, { count: shape.consumers, credit: shape.credit }));
    await relay.waitFor("ready", startTimeoutMs);

    const cpuBefore = cpuTimeMs(relay.pid);
    const producers = startProducers(ctx.group, address, { ...shape, count: shape.producers, jobsPerProducer: jobsPerProducer(shape) });
    children.push(...producers);
    const started = performance.now();
    const progress = new Progress("relay", () => `${acked} acked, ${perSecond(acked, performance.now() - started)} since the producers started`);
    let firstAt = started;
    let endAt: number;
    let stoppedBy: "count" | "time" = "count";
    try {
      await relay.waitFor("first", sizes.timeLimitMs);
      firstAt = performance.now();
      const done = await relay.waitFor("done", started + sizes.timeLimitMs - performance.now());
      endAt = performance.now();
      acked = Number(done.acked);
    } catch (err) {
      note(`[relay] stopped by the time bound: ${(err as Error).message}`);
      stoppedBy = "time";
      endAt = performance.now();
    } finally {
      progress.stop();
    }
    const relayCpuMs = cpuTimeMs(relay.pid) - cpuBefore;
    const producerExitCodes = await exitCodesOf(producers, 15_000);
    const elapsedMs = endAt - firstAt;
    const jobsPerSecond = elapsedMs > 0 ? (acked * 1000) / elapsedMs : 0;
    return {
      description: "the pipeline's producers and consumers against a bare grpc-js forwarder: Publish in, Consume out round robin, no queue",
      shape,
      jobsPerSecond,
      elapsedMs,
      acked,
      stoppedBy,
      timing: "from the relay's IPC message on the first Publish request to its message when the last job is acked",
      relayCpuMs,
      relayCpuMsPerJob: cpuMsPer(relayCpuMs, acked),
      producerExitCodes,
      childWarnings: children.reduce((sum, child) => sum + child.warnings, 0),
      childErrors: children.reduce((sum, child) => sum + child.errors, 0),
      ratio: atLeast(jobsPerSecond > 0 ? pipelineJobsPerSecond / jobsPerSecond : 0, 0.7),
    };
  } finally {
    await ctx.group.stopAll(stopGraceMs);
  }
}
