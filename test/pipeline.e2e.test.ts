import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";

interface ResultLine {
  jobId: string;
  consumerId: string;
  producerId: string;
  data?: string;
  output?: string;
}

/** Process ids of live processes whose environment contains marker=1. */
async function processesWithMarker(marker: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const environ = await readFile(`/proc/${entry}/environ`, "latin1").catch(() => "");
    if (environ.split("\0").includes(`${marker}=1`)) {
      pids.push(Number(entry));
    }
  }
  return pids;
}

describe("mpmc run", () => {
  let run: CliProcess | undefined;
  let dir: string | undefined;

  afterEach(async () => {
    killIfRunning(run);
    if (dir !== undefined) {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("processes every job exactly once across real processes", async () => {
    dir = await mkdtemp(join(tmpdir(), "mpmc-e2e-"));
    const reportFile = join(dir, "report.json");
    const resultsFile = join(dir, "results.ndjson");
    run = startCli([
      "run",
      "--producers", "3",
      "--consumers", "4",
      "--duration", "1s",
      "--pause-ms", "5-20",
      "--work-ms", "5-20",
      "--log-level", "warn",
      "--report", reportFile,
      "--results-file", resultsFile,
    ]);
    const code = await run.exited;
    expect(run.stderr()).toBe("");
    expect(code).toBe(0);

    const report = JSON.parse(await readFile(reportFile, "utf8")) as {
      ok: boolean;
      problems: string[];
      stats: { created: string; processed: string; inFlight?: string; queued?: string; consumers: { consumerId: string }[] };
      summary: { results: string; duplicateResults?: string; consumers: { consumerId: string; results: string }[] };
    };
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    const created = Number(report.stats.created);
    expect(created).toBeGreaterThan(0);
    expect(Number(report.stats.processed)).toBe(created);
    // protobuf JSON leaves out fields that are zero.
    expect(report.stats.inFlight).toBeUndefined();
    expect(report.stats.queued).toBeUndefined();
    expect(report.summary.duplicateResults).toBeUndefined();
    expect(report.summary.consumers.map((c) => c.consumerId).sort()).toEqual([
      "consumer-1",
      "consumer-2",
      "consumer-3",
      "consumer-4",
    ]);

    const lines = (await readFile(resultsFile, "utf8")).trim().split("\n").map((line) => JSON.parse(line) as ResultLine);
    expect(lines).toHaveLength(created);
    const ids = new Set(lines.map((line) => line.jobId));
    expect(ids.size).toBe(created);
    for (const line of lines) {
      expect(BigInt(line.output ?? "0")).toBe(BigInt(line.data ?? "0") * 2n);
    }
    expect(new Set(lines.map((line) => line.producerId))).toEqual(new Set(["producer-1", "producer-2", "producer-3"]));

    const stages = ["all producers finished", "queue closed", "all consumers finished", "result aggregator finished", "aggregator and broker stopped"];
    const positions = stages.map((stage) => run?.stdout().indexOf(`✓ ${stage}`) ?? -1);
    expect(positions.every((p) => p >= 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(run.stdout()).toContain("Pipeline complete: every job processed exactly once.");
  });

  it("stops every child process on SIGINT", async () => {
    const marker = `MPMC_TEST_RUN_${process.pid}_${Date.now()}`;
    run = startCli(["run", "--producers", "2", "--consumers", "2", "--duration", "60s", "--log-level", "warn"], { [marker]: "1" });
    await waitFor("the producers to start", () => run?.stdout().includes("Starting producers"), 30_000);
    // Broker, aggregator, two consumers and two producers, besides run itself.
    await waitFor("six child processes", async () => (await processesWithMarker(marker)).length >= 7, 30_000);
    await sleep(200);
    run.child.kill("SIGINT");
    expect(await run.exited).toBe(130);
    await waitFor("every child process to exit", async () => (await processesWithMarker(marker)).length === 0, 15_000);
  });
});
