import { spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const benchEntry = fileURLToPath(new URL("../bench/dist/main.js", import.meta.url));

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

interface BatchJson {
  batchSize: number;
  jobsAccepted: number;
  jobsPerSecond: number;
  brokerCpuMsPerJob: number;
  stoppedBy: string;
  streams: { count: number; errors: number; statusCodeDistribution: Record<string, number>; histogram: unknown[]; p50Ms: number; p99Ms: number };
}

// The benchmark only reports; these checks read the shape and the counts, never a speed.
describe("npm run bench", () => {
  let dir: string | undefined;

  afterEach(async () => {
    if (dir !== undefined) {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("writes the publish scenario's JSON", async () => {
    dir = await mkdtemp(join(tmpdir(), "mpmc-bench-"));
    const out = join(dir, "bench.json");
    const marker = `MPMC_BENCH_TEST_${process.pid}`;
    const child = spawn(process.execPath, [benchEntry, "--quick", "--scenario", "publish", "--out", out], {
      env: { ...process.env, [marker]: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on("exit", (exitCode) => resolve(exitCode)));
    expect(code, stderr).toBe(0);
    expect(stdout).toContain("== publish");

    const report = JSON.parse(await readFile(out, "utf8")) as Record<string, any>;
    expect(report.benchmark).toBe("mpmc");
    expect(report.quick).toBe(true);
    expect(report.failures).toEqual([]);
    expect(report.machine.cpuCount).toBeGreaterThan(0);
    expect(typeof report.machine.cpuModel).toBe("string");
    expect(report.machine.totalMemoryBytes).toBeGreaterThan(0);
    expect(report.machine.nodeVersion).toBe(process.version);

    const publish = report.scenarios.publish;
    expect(Object.keys(report.scenarios)).toEqual(["publish"]);
    const batches = publish.batches as BatchJson[];
    expect(batches.map((b) => b.batchSize)).toEqual([1, 10, 100]);
    for (const batch of batches) {
      expect(batch.jobsAccepted).toBe(publish.jobsPerBatchSize);
      expect(batch.jobsPerSecond).toBeGreaterThan(0);
      expect(batch.stoppedBy).toBe("count");
      expect(batch.streams.count).toBeGreaterThan(0);
      expect(batch.streams.errors).toBe(0);
      expect(Object.keys(batch.streams.statusCodeDistribution)).toEqual(["OK"]);
      expect(batch.streams.histogram).toHaveLength(10);
      expect(batch.streams.p99Ms).toBeGreaterThanOrEqual(batch.streams.p50Ms);
    }

    expect(publish.ratio).toEqual({
      value: expect.any(Number),
      target: 10,
      comparison: ">=",
      met: expect.any(Boolean),
    });
    expect(report.targets.map((t: { name: string }) => t.name)).toEqual(["publish.ratio"]);

    // Every broker the benchmark started has exited with it.
    expect(await processesWithMarker(marker)).toEqual([]);
  }, 120_000);
});
