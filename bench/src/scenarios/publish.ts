import { payloadOf, publishRequests } from "../jobs.js";
import type { LoadSummary } from "../latency.js";
import { runLoad } from "../load.js";
import { cpuTimeMs, ownCpuTimeMs } from "../proc.js";
import { listProfiles, monotonicMicros, profileOfProcess, summarizeProfile, type ProfileSummary } from "../profile-summary.js";
import { startBroker } from "../services.js";
import { atLeast, type TargetCheck } from "../targets.js";
import { cpuMsPer, stopGraceMs, type ScenarioContext } from "./context.js";

export interface PublishBatchResult {
  batchSize: number;
  /** Jobs the broker counted as accepted in its Publish responses. */
  jobsAccepted: number;
  jobsPerSecond: number;
  /** One call is one Publish stream of jobsPerStream jobs; its latency is the whole stream's. */
  streams: LoadSummary;
  stoppedBy: "count" | "time";
  brokerCpuMsPerJob: number;
  clientCpuMsPerJob: number;
  /** The broker's V8 CPU profile and its summary over the load, when --cpu-prof was given. */
  cpuProfile: string | undefined;
  cpuProfileSummary: ProfileSummary | undefined;
}

export interface PublishResult {
  description: string;
  jobsPerBatchSize: number;
  jobsPerStream: number;
  concurrentStreams: number;
  queueSetup: string;
  batches: PublishBatchResult[];
  /** Jobs per second at batch size 100 over batch size 1. */
  ratio: TargetCheck;
}

/**
 * Publish client streams at each batch size (jobs per request), a fresh
 * broker for each so that a heap full of earlier jobs does not slow the later
 * sizes.
 */
export async function runPublishScenario(ctx: ScenarioContext): Promise<PublishResult> {
  const { jobs, jobsPerStream, streams, batchSizes, timeLimitMs } = ctx.settings.sizes.publish;
  const payload = payloadOf(ctx.settings.payloadBytes);
  const capacity = jobs + 1_000;
  const batches: PublishBatchResult[] = [];
  const profileWindows = new Map<number, { startMicros: number; endMicros: number }>();
  const profileDir = ctx.settings.cpuProfileDir;
  for (const batchSize of batchSizes) {
    const profilesBefore = new Set(profileDir === undefined ? [] : listProfiles(profileDir));
    let brokerPid = 0;
    try {
      const broker = await startBroker(ctx.group, { capacity, cpuProfileDir: profileDir });
      brokerPid = broker.child.pid;
      const calls = Math.ceil(jobs / jobsPerStream);
      let accepted = 0;
      const brokerCpuBefore = cpuTimeMs(broker.child.pid);
      const clientCpuBefore = ownCpuTimeMs();
      const windowStart = monotonicMicros();
      const result = await runLoad({
        label: `publish batch ${batchSize}`,
        concurrency: streams,
        count: calls,
        timeLimitMs,
        call: async (index) => {
          const jobsInStream = Math.min(jobsPerStream, jobs - index * jobsPerStream);
          const response = await broker.client.publish(publishRequests(`bench-publish-${index + 1}`, jobsInStream, batchSize, payload), {
            timeoutMs: timeLimitMs,
          });
          accepted += Number(response.accepted);
        },
      });
      const brokerCpuMs = cpuTimeMs(broker.child.pid) - brokerCpuBefore;
      const window = { startMicros: windowStart, endMicros: monotonicMicros() };
      const clientCpuMs = ownCpuTimeMs() - clientCpuBefore;
      batches.push({
        batchSize,
        jobsAccepted: accepted,
        jobsPerSecond: result.elapsedMs > 0 ? (accepted * 1000) / result.elapsedMs : 0,
        streams: result.recorder.summarize(result.elapsedMs),
        stoppedBy: result.stoppedBy,
        brokerCpuMsPerJob: cpuMsPer(brokerCpuMs, accepted),
        clientCpuMsPerJob: cpuMsPer(clientCpuMs, accepted),
        cpuProfile: undefined,
        cpuProfileSummary: undefined,
      });
      profileWindows.set(batchSize, window);
    } finally {
      // The broker writes its profile as it exits.
      await ctx.group.stopAll(stopGraceMs);
    }
    const batch = batches.find((b) => b.batchSize === batchSize);
    if (profileDir !== undefined && batch !== undefined) {
      batch.cpuProfile = profileOfProcess(profileDir, brokerPid, profilesBefore);
      batch.cpuProfileSummary = batch.cpuProfile === undefined ? undefined : summarizeProfile(batch.cpuProfile, 15, profileWindows.get(batchSize));
    }
  }
  const rateAt = (size: number): number => batches.find((b) => b.batchSize === size)?.jobsPerSecond ?? 0;
  return {
    description: "client-streaming Publish at several batch sizes, jobs per second accepted",
    jobsPerBatchSize: jobs,
    jobsPerStream,
    concurrentStreams: streams,
    queueSetup: `no consumers; a fresh broker per batch size with capacity ${capacity}, so the queue never fills`,
    batches,
    ratio: atLeast(rateAt(1) > 0 ? rateAt(100) / rateAt(1) : 0, 10),
  };
}
