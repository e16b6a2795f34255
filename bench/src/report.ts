import { cpus, loadavg, release, totalmem, type } from "node:os";
import type { LoadSummary } from "./latency.js";
import type { DurableResult } from "./scenarios/durable.js";
import type { PipelineResult, RelayResult } from "./scenarios/pipeline.js";
import type { PublishResult } from "./scenarios/publish.js";
import type { ScaleResult } from "./scenarios/scale.js";
import type { SubmitResult } from "./scenarios/submit.js";
import { describeTarget, type TargetCheck } from "./targets.js";

export interface MachineInfo {
  os: string;
  arch: string;
  cpuModel: string;
  cpuCount: number;
  totalMemoryBytes: number;
  nodeVersion: string;
  /** 1, 5 and 15 minute load averages when the run started; above the CPU count means other work competed. */
  loadAverageAtStart: number[];
}

export function machineInfo(): MachineInfo {
  const cores = cpus();
  return {
    os: `${type()} ${release()}`,
    arch: process.arch,
    cpuModel: cores[0]?.model.trim() ?? "unknown",
    cpuCount: cores.length,
    totalMemoryBytes: totalmem(),
    nodeVersion: process.version,
    loadAverageAtStart: loadavg(),
  };
}

export interface ScenarioResults {
  submit?: SubmitResult;
  publish?: PublishResult;
  pipeline?: PipelineResult;
  relay?: RelayResult;
  durable?: DurableResult;
  scale?: ScaleResult;
}

/** One target of the run, named for the report's closing table. */
export interface NamedTarget extends TargetCheck {
  name: string;
  description: string;
}

/** Collects every target the scenarios that ran report on. */
export function targetsOf(results: ScenarioResults): NamedTarget[] {
  const targets: NamedTarget[] = [];
  const add = (name: string, description: string, check: TargetCheck | undefined): void => {
    if (check !== undefined) {
      targets.push({ name, description, ...check });
    }
  };
  add("submit.ratio", "mpmc Submit rps / grpc-js echo rps", results.submit?.ratio);
  add("publish.ratio", "Publish jobs/s at batch 100 / at batch 1", results.publish?.ratio);
  add("relay.ratio", "pipeline jobs/s / relay jobs/s", results.relay?.ratio);
  add("durable.ratio", "durable-mode pipeline jobs/s / memory-mode pipeline jobs/s", results.durable?.ratio);
  add("scale.streams.errors", "failed streams, client processes and rejected results", results.scale?.streams.errors);
  add("scale.streams.share", "largest deviation of one consumer's jobs from the mean, %", results.scale?.streams.share.maxDeviationPercent);
  add("scale.memory.rssBytesPerJob", "broker VmRSS growth per queued job minus its payload, bytes", results.scale?.memory.rssBytesPerJob);
  return targets;
}

const ms = (value: number): string => `${value.toFixed(2)} ms`;
const rate = (value: number): string => value.toFixed(0);

/** Formats a load run as ghz prints its summary. */
export function formatLoad(title: string, s: LoadSummary): string {
  const lines = [
    title,
    "Summary:",
    `  Count:\t${s.count}`,
    `  Total:\t${ms(s.totalMs)}`,
    `  Slowest:\t${ms(s.slowestMs)}`,
    `  Fastest:\t${ms(s.fastestMs)}`,
    `  Average:\t${ms(s.averageMs)}`,
    `  Requests/sec:\t${s.rps.toFixed(2)}`,
    "",
    "Response time histogram:",
  ];
  const largest = Math.max(1, ...s.histogram.map((b) => b.count));
  for (const bucket of s.histogram) {
    const bar = "∎".repeat(Math.round((bucket.count / largest) * 40));
    lines.push(`  ${bucket.markMs.toFixed(3)} [${bucket.count}]\t|${bar}`);
  }
  lines.push("", "Latency distribution:");
  for (const entry of s.latencyDistribution) {
    lines.push(`  ${entry.percentage} % in ${ms(entry.latencyMs)}`);
  }
  lines.push("", "Status code distribution:");
  for (const [status, count] of Object.entries(s.statusCodeDistribution)) {
    lines.push(`  [${status}]\t${count} responses`);
  }
  return lines.join("\n") + "\n";
}

/** Formats the human-readable report: ghz blocks for the load runs and a few lines per scenario. */
export function formatReport(results: ScenarioResults, machine: MachineInfo, quick: boolean, failures: { scenario: string; error: string }[]): string {
  const out: string[] = [];
  out.push(
    `mpmc benchmark${quick ? " (--quick: smaller counts)" : ""} on ${machine.cpuCount} x ${machine.cpuModel}, ` +
      `${(machine.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB, Node ${machine.nodeVersion}, load average ${machine.loadAverageAtStart.map((n) => n.toFixed(2)).join(" ")}`,
    "",
  );
  const { submit, publish, pipeline, relay, durable, scale } = results;
  if (submit !== undefined) {
    out.push(`== submit: ${submit.concurrency} unary calls in flight, ${submit.requestBytes}-byte requests, ${submit.responseBytes}-byte responses; ${submit.queueSetup}`);
    out.push(formatLoad("-- mpmc broker", submit.mpmc.summary));
    out.push(formatLoad("-- grpc-js echo server", submit.echo.summary));
    out.push(
      `server CPU per call: mpmc ${ms(submit.mpmc.serverCpuMsPerCall)}, echo ${ms(submit.echo.serverCpuMsPerCall)}; ` +
        `client CPU per call: ${ms(submit.mpmc.clientCpuMsPerCall)} and ${ms(submit.echo.clientCpuMsPerCall)}`,
    );
    out.push(
      `ratio mpmc rps / echo rps: ${describeTarget(submit.ratio)}; ` +
        `estimate with the servers as the bottleneck (echo CPU per call / mpmc CPU per call): ${submit.serverCpuRatio.toFixed(2)}`,
      "",
    );
  }
  if (publish !== undefined) {
    out.push(`== publish: ${publish.jobsPerBatchSize} jobs per batch size, streams of ${publish.jobsPerStream} jobs, ${publish.concurrentStreams} at once; ${publish.queueSetup}`);
    for (const batch of publish.batches) {
      out.push(
        `batch ${String(batch.batchSize).padStart(3)}: ${rate(batch.jobsPerSecond)} jobs/s, ${batch.jobsAccepted} accepted, ` +
          `stream p50 ${ms(batch.streams.p50Ms)} p99 ${ms(batch.streams.p99Ms)}, ${batch.streams.errors} failed streams, ` +
          `broker CPU ${(batch.brokerCpuMsPerJob * 1000).toFixed(1)} µs/job, stopped by ${batch.stoppedBy}`,
      );
    }
    out.push(`ratio batch-100 / batch-1 jobs/s: ${describeTarget(publish.ratio)}`, "");
  }
  if (pipeline !== undefined) {
    const p = pipeline;
    out.push(
      `== pipeline: ${p.shape.jobs} jobs, ${p.shape.producers} producers (batch ${p.shape.batchSize}), ${p.shape.consumers} consumers (credit ${p.shape.credit}), capacity ${p.shape.capacity}`,
      `${rate(p.jobsPerSecond)} jobs/s end to end (${p.processed} jobs in ${ms(p.elapsedMs)}, stopped by ${p.stoppedBy})`,
      `queue wait p50 ${ms(p.queueWaitMs.p50)}, p90 ${ms(p.queueWaitMs.p90)}, p99 ${ms(p.queueWaitMs.p99)}, max ${ms(p.queueWaitMs.max)}`,
      `broker CPU ${(p.brokerCpuMsPerJob * 1000).toFixed(1)} µs/job (${ms(p.brokerCpuMs)} in all)`,
      `aggregator results ${p.aggregatorResults}, duplicates ${p.duplicateResults}, redelivered ${p.redelivered}, rejected ${p.rejectedResults}, ` +
        `producer exit codes ${p.producerExitCodes.join(" ")}, child log lines: ${p.childWarnings} warnings, ${p.childErrors} errors`,
    );
    if (p.cpuProfileSummary !== undefined) {
      const top = p.cpuProfileSummary.functions.slice(0, 10);
      out.push(`broker CPU profile ${p.cpuProfile ?? ""}, top self time during the load (share of busy time):`);
      for (const entry of p.cpuProfileSummary.categories.slice(0, 6)) {
        out.push(`  ${entry.busyPercent.toFixed(1).padStart(5)} %  ${entry.name}`);
      }
      out.push("  functions:");
      for (const entry of top) {
        out.push(`  ${entry.busyPercent.toFixed(1).padStart(5)} %  ${entry.name}`);
      }
    }
    out.push("");
  }
  if (relay !== undefined) {
    out.push(
      `== relay: the pipeline's traffic through a bare grpc-js forwarder`,
      `${rate(relay.jobsPerSecond)} jobs/s (${relay.acked} jobs acked in ${ms(relay.elapsedMs)}, stopped by ${relay.stoppedBy}), relay CPU ${(relay.relayCpuMsPerJob * 1000).toFixed(1)} µs/job`,
      `producer exit codes ${relay.producerExitCodes.join(" ")}, child log lines: ${relay.childWarnings} warnings, ${relay.childErrors} errors`,
      `ratio pipeline / relay jobs/s: ${describeTarget(relay.ratio)}`,
      "",
    );
  }
  if (durable !== undefined) {
    const d = durable.pipeline;
    out.push(
      `== durable: ${durable.description}`,
      `${rate(d.jobsPerSecond)} jobs/s (${d.processed} jobs in ${ms(d.elapsedMs)}, stopped by ${d.stoppedBy}), broker CPU ${(d.brokerCpuMsPerJob * 1000).toFixed(1)} µs/job`,
      `queue wait p50 ${d.queueWaitMs.p50.toFixed(1)} ms, p99 ${d.queueWaitMs.p99.toFixed(1)} ms; ${d.aggregatorResults} results, ${d.duplicateResults} duplicates`,
      `ratio durable / memory jobs/s: ${describeTarget(durable.ratio)}`,
      "",
    );
  }
  if (scale !== undefined) {
    const s = scale.streams;
    const m = scale.memory;
    out.push(
      `== scale: ${scale.countsNote}`,
      `${s.processed} of ${s.jobs} jobs in ${ms(s.elapsedMs)} (${rate(s.jobsPerSecond)} jobs/s, stopped by ${s.stoppedBy}), statuses ${JSON.stringify(s.statusCodeDistribution)}`,
      `errors: ${describeTarget(s.errors, 0)}`,
      `share per consumer: mean ${s.share.meanJobs.toFixed(1)}, min ${s.share.minJobs}, max ${s.share.maxJobs}, max deviation ${describeTarget(s.share.maxDeviationPercent, 1)} %; ` +
        `mean per client process ${s.share.perWorkerMeanJobs.map((n) => n.toFixed(1)).join(", ")}, ` +
        `max deviation within one process ${s.share.maxDeviationWithinWorkerPercent.toFixed(1)} %`,
      `memory after full GCs: ${m.queuedAfter} queued jobs with ${m.payloadBytes}-byte payloads, VmRSS ${mib(m.before.rssBytes)} -> ${mib(m.after.rssBytes)}, ` +
        `heap used ${mib(m.before.heapUsedBytes)} -> ${mib(m.after.heapUsedBytes)}, external ${mib(m.before.externalBytes)} -> ${mib(m.after.externalBytes)}`,
      `bytes per queued job: VmRSS minus payload ${describeTarget(m.rssBytesPerJob, 0)}; heap ${m.heapBytesPerJob.toFixed(0)}, external ${m.externalBytesPerJob.toFixed(0)}`,
      "",
    );
  }
  for (const failure of failures) {
    out.push(`!! ${failure.scenario} failed: ${failure.error}`);
  }
  return out.join("\n") + "\n";
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
