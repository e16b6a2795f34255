#!/usr/bin/env node
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { resolve } from "node:path";
import { Command, Option } from "commander";
import { integerIn } from "@mpmc/common";
import { ProcessGroup } from "./processes.js";
import { note } from "./progress.js";
import { formatReport, machineInfo, targetsOf, type ScenarioResults } from "./report.js";
import type { ScenarioContext } from "./scenarios/context.js";
import { runPipelineScenario, runRelayScenario } from "./scenarios/pipeline.js";
import { runDurableScenario } from "./scenarios/durable.js";
import { runPublishScenario } from "./scenarios/publish.js";
import { runScaleScenario } from "./scenarios/scale.js";
import { runSubmitScenario } from "./scenarios/submit.js";
import { fullSizes, quickSizes, scenarioNames, type BenchSettings, type ScenarioName } from "./settings.js";

interface CommandOptions {
  quick: boolean;
  scenario: ScenarioName | undefined;
  out: string | undefined;
  cpuProf: string | undefined;
  concurrency: number;
  payloadBytes: number;
}

const program = new Command("mpmc-bench")
  .description(
    "Load-test mpmc against grpc-js baselines on 127.0.0.1 and report as ghz does. Every server runs in a child process that is stopped at the end.",
  )
  .addOption(new Option("--quick", "run each scenario in a few seconds with smaller counts").default(false))
  .addOption(new Option("--scenario <name>", "run one scenario; relay also runs pipeline, its reference").choices([...scenarioNames]))
  .addOption(new Option("--out <file>", "also write the results as JSON to this file"))
  .addOption(new Option("--cpu-prof <dir>", "write a V8 CPU profile of the pipeline scenario's broker to this directory"))
  .addOption(new Option("--concurrency <calls>", "unary Submit calls in flight").default(50).argParser(integerIn(1, 10_000)))
  .addOption(new Option("--payload-bytes <bytes>", "payload size of every job").default(16).argParser(integerIn(0, 1_048_576)))
  .showHelpAfterError();

const group = new ProcessGroup();
let interrupted = false;

/** Ctrl-C or SIGTERM stops every child, then exits with 130; a second signal kills them at once. */
function onSignal(signal: NodeJS.Signals): void {
  if (interrupted) {
    group.killAll();
    process.exit(130);
  }
  interrupted = true;
  note(`${signal}: stopping every process the benchmark started`);
  void group.stopAll(3_000).then(() => process.exit(130));
}
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// Last resort for an exit on any other path: no child outlives the benchmark.
process.on("exit", () => group.killAll());

/** Returns the commit the benchmark ran on, and how many files differed from it; undefined outside a git checkout. */
function sourceVersion(): { commit: string; changedFiles: number } | undefined {
  try {
    const git = (...args: string[]): string => execFileSync("git", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return { commit: git("rev-parse", "HEAD").trim(), changedFiles: git("status", "--porcelain").split("\n").filter(Boolean).length };
  } catch {
    return undefined;
  }
}

async function main(options: CommandOptions): Promise<number> {
  const cpuProfileDir = options.cpuProf === undefined ? undefined : resolve(options.cpuProf);
  if (cpuProfileDir !== undefined) {
    mkdirSync(cpuProfileDir, { recursive: true });
  }
  const settings: BenchSettings = {
    quick: options.quick,
    sizes: options.quick ? quickSizes : fullSizes,
    concurrency: options.concurrency,
    payloadBytes: options.payloadBytes,
    cpuProfileDir,
  };
  const ctx: ScenarioContext = { group, settings };
  const machine = machineInfo();
  const startedAt = new Date().toISOString();
  const selected = options.scenario === undefined ? scenarioNames : [options.scenario];
  const results: ScenarioResults = {};
  const failures: { scenario: string; error: string }[] = [];

  const attempt = async (scenario: string, run: () => Promise<void>): Promise<void> => {
    note(`== ${scenario}`);
    try {
      await run();
    } catch (err) {
      failures.push({ scenario, error: err instanceof Error ? err.message : String(err) });
      note(`!! ${scenario} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  };
  for (const scenario of selected) {
    if (interrupted) {
      break;
    }
    switch (scenario) {
      case "submit":
        await attempt(scenario, async () => {
          results.submit = await runSubmitScenario(ctx);
        });
        break;
      case "publish":
        await attempt(scenario, async () => {
          results.publish = await runPublishScenario(ctx);
        });
        break;
      case "pipeline":
        await attempt(scenario, async () => {
          results.pipeline = await runPipelineScenario(ctx);
        });
        break;
      case "relay":
        if (results.pipeline === undefined && !selected.includes("pipeline")) {
          await attempt("pipeline", async () => {
            results.pipeline = await runPipelineScenario(ctx);
          });
        }
        await attempt(scenario, async () => {
          if (results.pipeline === undefined) {
            throw new Error("the pipeline scenario, the relay's reference, did not complete");
          }
          results.relay = await runRelayScenario(ctx, results.pipeline.jobsPerSecond);
        });
        break;
      case "durable":
        if (results.pipeline === undefined && !selected.includes("pipeline")) {
          await attempt("pipeline", async () => {
            results.pipeline = await runPipelineScenario(ctx);
          });
        }
        await attempt(scenario, async () => {
          if (results.pipeline === undefined) {
            throw new Error("the pipeline scenario, durable mode's reference, did not complete");
          }
          results.durable = await runDurableScenario(ctx, results.pipeline.jobsPerSecond);
        });
        break;
      case "scale":
        await attempt(scenario, async () => {
          results.scale = await runScaleScenario(ctx);
        });
        break;
    }
  }
  await group.stopAll(10_000);

  process.stdout.write(formatReport(results, machine, settings.quick, failures));
  if (options.out !== undefined) {
    const report = {
      benchmark: "mpmc",
      command: ["node", "bench/dist/main.js", ...process.argv.slice(2)].join(" "),
      startedAt,
      finishedAt: new Date().toISOString(),
      quick: settings.quick,
      settings: { concurrency: settings.concurrency, payloadBytes: settings.payloadBytes, sizes: settings.sizes },
      machine,
      loadAverageAtEnd: loadavg(),
      source: sourceVersion(),
      scenarios: results,
      targets: targetsOf(results),
      failures,
    };
    await writeFile(options.out, JSON.stringify(report, null, 2) + "\n");
    note(`results written to ${options.out}`);
  }
  return failures.length === 0 ? 0 : 1;
}

program.action(async (options: CommandOptions) => {
  // Exit at once: the clients' HTTP/2 sessions would keep the event loop alive.
  process.exit(await main(options));
});
program.parseAsync().catch(async (err: unknown) => {
  process.stderr.write(`mpmc-bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  await group.stopAll(3_000);
  process.exit(1);
});
