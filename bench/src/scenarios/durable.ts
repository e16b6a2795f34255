import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { atLeast, type TargetCheck } from "../targets.js";
import type { ScenarioContext } from "./context.js";
import { measurePipeline, type PipelineResult } from "./pipeline.js";

export interface DurableResult {
  description: string;
  /** The pipeline scenario's measurement with the broker in durable mode. */
  pipeline: PipelineResult;
  /** Durable jobs per second over memory-mode jobs per second, from the same run. */
  ratio: TargetCheck;
}

/** Stop grace for the scenario's processes, in ms. */
const stopGraceMs = 10_000;

/**
 * The pipeline scenario again, with the broker started with --data-dir in a
 * fresh temporary folder and its default fsync policy (full), beside the
 * memory-mode pipeline measured earlier in the same run.
 */
export async function runDurableScenario(ctx: ScenarioContext, memoryJobsPerSecond: number): Promise<DurableResult> {
  const dataDir = mkdtempSync(join(tmpdir(), "mpmc-bench-store-"));
  try {
    const pipeline = await measurePipeline(ctx, () => {}, { dataDir, profile: false });
    return {
      description: "the pipeline scenario with the broker in durable mode (--data-dir, --fsync full)",
      pipeline,
      ratio: atLeast(memoryJobsPerSecond > 0 ? pipeline.jobsPerSecond / memoryJobsPerSecond : 0, 0.5),
    };
  } finally {
    await ctx.group.stopAll(stopGraceMs);
    rmSync(dataDir, { recursive: true, force: true });
  }
}
