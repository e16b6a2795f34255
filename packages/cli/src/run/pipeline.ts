import { writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { AggregatorService, BrokerService, adminTokenHeaders, connectTo, type Logger } from "@mpmc/common";
import { Child } from "./children.js";
import { findProblems, formatReport, reportJson, type RunReport, type Stage } from "./report.js";
import type { RunSettings } from "./settings.js";

const stopGraceMs = 10_000;

/**
 * `mpmc run`: the whole pipeline as separate processes over loopback. It
 * starts the broker, the aggregator and the consumers, then the producers;
 * when the producers are done it closes the queue, waits for the consumers to
 * drain it and for the aggregator's final totals, and prints the report.
 */
export class Pipeline {
  private readonly children: Child[] = [];
  private readonly stages: Stage[] = [];
  private readonly started = performance.now();

  constructor(
    private readonly entry: string,
    private readonly settings: RunSettings,
    private readonly logger: Logger,
  ) {}

  async run(): Promise<RunReport> {
    const s = this.settings;
    const logArgs = ["--log-level", s.logLevel, "--log-format", s.logFormat];
    // Each child serves metrics on a free loopback port, because the fixed default ports would collide between consumers.
    const metricsArgs = ["--metrics-port", "0", "--metrics-host", "127.0.0.1"];
    this.say(`Configuration: ${s.producers} producers, ${s.consumers} consumers, capacity ${s.capacity}, ` +
      (s.count === undefined ? `duration ${s.duration / 1000} s` : `${s.count} jobs per producer`));

    const broker = this.spawn("broker", ["broker", "--host", "127.0.0.1", "--port", "0", "--capacity", String(s.capacity), ...logArgs, ...metricsArgs]);
    const { port: brokerPort } = await broker.waitFor("listening");
    const brokerAddress = `127.0.0.1:${brokerPort}`;
    const brokerClient = connectTo(BrokerService, brokerAddress);

    const aggregatorArgs = ["aggregator", "--host", "127.0.0.1", "--port", "0", "--broker", brokerAddress, ...logArgs, ...metricsArgs];
    if (s.resultsFile !== undefined) {
      aggregatorArgs.push("--results-file", s.resultsFile);
    }
    const aggregator = this.spawn("aggregator", aggregatorArgs);
    const { port: aggregatorPort } = await aggregator.waitFor("listening");
    const aggregatorFinished = aggregator.waitFor("finished");
    // Reported later; this keeps an early rejection from going unhandled.
    aggregatorFinished.catch(() => {});

    this.say("Starting consumers...");
    const consumerArgs = ["--broker", brokerAddress, "--credit", String(s.credit), "--work-ms", `${s.workMs.minMs}-${s.workMs.maxMs}`];
    if (s.handler !== undefined) {
      consumerArgs.push("--handler", s.handler);
    }
    const consumers = Array.from({ length: s.consumers }, (_, i) =>
      this.spawn(`consumer-${i + 1}`, ["consumer", "--id", `consumer-${i + 1}`, ...consumerArgs, ...logArgs, ...metricsArgs]),
    );
    await this.waitForConsumers(brokerClient, s.consumers);

    this.say("Starting producers...");
    const producerArgs = ["--broker", brokerAddress, "--pause-ms", `${s.pauseMs.minMs}-${s.pauseMs.maxMs}`, "--duration", `${s.duration}ms`];
    if (s.count !== undefined) {
      producerArgs.push("--count", String(s.count));
    }
    if (s.rate !== undefined) {
      producerArgs.push("--rate", String(s.rate));
    }
    const producers = Array.from({ length: s.producers }, (_, i) =>
      this.spawn(`producer-${i + 1}`, ["producer", "--id", `producer-${i + 1}`, ...producerArgs, ...logArgs, ...metricsArgs]),
    );
    await this.expectExitZero(producers);
    this.stage("all producers finished");

    // The forked broker inherits MPMC_ADMIN_TOKEN from this process, and then requires it on CloseQueue.
    const adminToken = process.env.MPMC_ADMIN_TOKEN;
    const headers = adminTokenHeaders(adminToken);
    const closed = await brokerClient.closeQueue({}, { timeoutMs: 10_000, headers });
    this.stage(`queue closed with ${closed.stats?.queued ?? 0} queued and ${closed.stats?.inFlight ?? 0} in flight`);

    await this.expectExitZero(consumers);
    this.stage("all consumers finished");

    await aggregatorFinished;
    this.stage("result aggregator finished");

    const { summary } = await connectTo(AggregatorService, `127.0.0.1:${aggregatorPort}`).getSummary({}, { timeoutMs: 10_000 });
    const { stats } = await brokerClient.getStats({}, { timeoutMs: 10_000 });
    if (summary === undefined || stats === undefined) {
      throw new Error("the aggregator or the broker returned an empty response");
    }

    await this.expectExitZero([aggregator], true);
    await this.expectExitZero([broker], true);
    this.stage("aggregator and broker stopped");

    const problems = findProblems(stats, summary);
    const report: RunReport = { ok: problems.length === 0, problems, stages: this.stages, stats, summary };
    process.stdout.write(formatReport(report));
    if (s.report !== undefined) {
      await writeFile(s.report, reportJson(report) + "\n");
      this.say(`Report written to ${s.report}`);
    }
    return report;
  }

  /** Stops every child still running: SIGTERM, then SIGKILL after a grace period. */
  async stopAll(): Promise<void> {
    await Promise.all(this.children.map((child) => child.stop(stopGraceMs)));
  }

  private spawn(name: string, args: string[]): Child {
    const child = new Child(name, this.entry, args);
    this.children.push(child);
    return child;
  }

  /**
   * Waits until every consumer and the aggregator's result stream are
   * connected, so the first jobs spread over all consumers and no result is
   * settled before the aggregator subscribes.
   */
  private async waitForConsumers(client: ReturnType<typeof connectTo<typeof BrokerService>>, expected: number): Promise<void> {
    for (let attempt = 0; attempt < 200; attempt++) {
      const { stats } = await client.getStats({}, { timeoutMs: 5_000 });
      if ((stats?.consumersConnected ?? 0) >= expected && (stats?.subscribersConnected ?? 0) >= 1) {
        return;
      }
      await sleep(50);
    }
    throw new Error(`the ${expected} consumers and the aggregator did not all connect within 10 s`);
  }

  private async expectExitZero(children: Child[], stop = false): Promise<void> {
    const codes = await Promise.all(children.map((child) => (stop ? child.stop(stopGraceMs) : child.exited)));
    const failed = children.filter((_, i) => codes[i] !== 0).map((child, i) => `${child.name} (${codes[i]})`);
    if (failed.length > 0) {
      throw new Error(`processes exited with an error: ${failed.join(", ")}`);
    }
  }

  private stage(name: string): void {
    const atMs = performance.now() - this.started;
    this.stages.push({ name, atMs });
    this.say(`✓ ${name} (${(atMs / 1000).toFixed(2)} s)`);
  }

  private say(line: string): void {
    this.logger.debug({ line }, "run progress");
    process.stdout.write(`${line}\n`);
  }
}
