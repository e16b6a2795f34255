import { toJson } from "@bufbuild/protobuf";
import { AggregatorSummarySchema, BrokerStatsSchema, msOfDuration, type AggregatorSummary, type BrokerStats } from "@mpmc/common";

/** A shutdown stage of `mpmc run` and when it finished, in ms since the run started. */
export interface Stage {
  name: string;
  atMs: number;
}

export interface RunReport {
  ok: boolean;
  /** Reasons why ok is false; empty when ok. */
  problems: string[];
  stages: Stage[];
  stats: BrokerStats;
  summary: AggregatorSummary;
}

/**
 * Checks that every accepted job settled exactly once: processed, or moved to
 * the dead letters after failing for good, and that the aggregator saw every
 * result.
 */
export function findProblems(stats: BrokerStats, summary: AggregatorSummary): string[] {
  const problems: string[] = [];
  if (stats.created !== stats.processed + stats.deadLettered) {
    problems.push(`created ${stats.created} != processed ${stats.processed} + dead-lettered ${stats.deadLettered}`);
  }
  if (stats.inFlight !== 0n || stats.queued !== 0n || stats.waitingRetry !== 0n) {
    problems.push(`${stats.inFlight} jobs in flight, ${stats.queued} queued and ${stats.waitingRetry} waiting to retry after the drain`);
  }
  if (summary.missedResults !== 0n) {
    problems.push(`the aggregator missed ${summary.missedResults} results`);
  }
  if (summary.results !== stats.processed) {
    problems.push(`aggregator saw ${summary.results} results, broker processed ${stats.processed}`);
  }
  if (summary.duplicateResults !== 0n) {
    problems.push(`${summary.duplicateResults} jobs had more than one result`);
  }
  return problems;
}

export function formatReport(report: RunReport): string {
  const { stats, summary } = report;
  const ms = (value: number): string => `${value.toFixed(1)} ms`;
  const processed = Number(stats.processed);
  const lines = [
    "",
    "Final report",
    `  Jobs created:      ${stats.created}`,
    `  Jobs processed:    ${stats.processed}`,
    `  Jobs in flight:    ${stats.inFlight}`,
    `  Avg duration:      ${ms(msOfDuration(stats.averageProcessingDuration))}`,
    `  Queue wait:        p50 ${ms(msOfDuration(stats.queueWait?.p50))}, p90 ${ms(msOfDuration(stats.queueWait?.p90))}, p99 ${ms(msOfDuration(stats.queueWait?.p99))}`,
    `  Redelivered:       ${stats.redelivered}, failed attempts ${stats.failedAttempts}, rejected results ${stats.rejectedResults} (${stats.lateResults} late)`,
    `  Dead-lettered:     ${stats.deadLettered}, duplicates refused ${stats.duplicatesRefused}`,
    `  Aggregator:        ${summary.results} results, ${summary.duplicateResults} duplicates`,
    "  Per consumer:",
  ];
  const widest = Math.max(0, ...summary.consumers.map((c) => c.consumerId.length));
  for (const c of summary.consumers) {
    const share = processed === 0 ? 0 : (Number(c.results) / processed) * 100;
    const bar = "#".repeat(Math.round(share / 2));
    lines.push(`    ${c.consumerId.padEnd(widest)}  ${String(c.results).padStart(6)}  ${share.toFixed(1).padStart(5)} %  ${bar}`);
  }
  lines.push("  Shutdown stages:");
  for (const stage of report.stages) {
    lines.push(`    ${(stage.atMs / 1000).toFixed(2).padStart(7)} s  ${stage.name}`);
  }
  const success =
    stats.deadLettered === 0n
      ? "Pipeline complete: every job processed exactly once."
      : `Pipeline complete: every job settled exactly once, ${stats.deadLettered} of them in the dead letters.`;
  lines.push(report.ok ? success : `Pipeline FAILED: ${report.problems.join("; ")}`);
  return lines.join("\n") + "\n";
}

/** Returns the report as JSON, with the messages in protobuf's JSON form. */
export function reportJson(report: RunReport): string {
  return JSON.stringify(
    {
      ok: report.ok,
      problems: report.problems,
      stages: report.stages,
      stats: toJson(BrokerStatsSchema, report.stats),
      summary: toJson(AggregatorSummarySchema, report.summary),
    },
    null,
    2,
  );
}
