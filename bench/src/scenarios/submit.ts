import { create, toBinary } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { BrokerService, SubmitRequestSchema, SubmitResponseSchema, connectTo, type SubmitRequest } from "@mpmc/common";
import { payloadOf } from "../jobs.js";
import { LatencyRecorder, type LoadSummary } from "../latency.js";
import { runLoad } from "../load.js";
import { cpuTimeMs, ownCpuTimeMs } from "../proc.js";
import { benchScript, type BenchChild } from "../processes.js";
import { note } from "../progress.js";
import { startBroker, startTimeoutMs } from "../services.js";
import { atLeast, type TargetCheck } from "../targets.js";
import { cpuMsPer, stopGraceMs, type ScenarioContext } from "./context.js";

export interface SubmitTargetResult {
  summary: LoadSummary;
  /** "count" when every round made all its calls, "time" when a time bound cut one short. */
  stoppedBy: "count" | "time";
  /** CPU time of the server process per call, from /proc/PID/stat. */
  serverCpuMsPerCall: number;
  /** CPU time of the benchmark process, the client, per call. */
  clientCpuMsPerCall: number;
}

export interface SubmitResult {
  description: string;
  concurrency: number;
  callsPerRound: number;
  warmupCalls: number;
  rounds: number;
  requestBytes: number;
  responseBytes: number;
  queueSetup: string;
  mpmc: SubmitTargetResult;
  echo: SubmitTargetResult;
  /** The broker's queued count after the run, which shows that the queue never filled. */
  brokerQueuedAfter: number;
  brokerCapacity: number;
  ratio: TargetCheck;
  /**
   * An estimate of the ratio were the servers the bottleneck: echo server CPU
   * per call over broker CPU per call. On 2 cores the client often is.
   */
  serverCpuRatio: number;
}

interface Target {
  name: "mpmc" | "echo";
  child: BenchChild;
  client: Client<typeof BrokerService>;
  recorder: LatencyRecorder;
  elapsedMs: number;
  serverCpuMs: number;
  clientCpuMs: number;
  stoppedBy: "count" | "time";
}

/**
 * Unary Submit at a fixed concurrency against an mpmc broker and against a
 * bare grpc-js echo server with the same request and response bytes, in
 * alternating rounds so both see the same machine noise. One Connect client
 * drives both, so the client's cost is the same and the ratio compares the
 * servers. The broker has no consumers: its capacity fits every job of the
 * run, so the queue never fills and Submit never waits for room.
 */
export async function runSubmitScenario(ctx: ScenarioContext): Promise<SubmitResult> {
  const { sizes, concurrency, payloadBytes } = ctx.settings;
  const { calls, warmupCalls, rounds, timeLimitMs } = sizes.submit;
  const capacity = (calls + warmupCalls) * rounds + 1_000;
  const payload = payloadOf(payloadBytes);
  let sequence = 0;
  const request = (): SubmitRequest =>
    create(SubmitRequestSchema, { producerId: "bench-submit", job: { data: 21n, payload, sequence: BigInt(++sequence) } });

  try {
    const broker = await startBroker(ctx.group, { capacity });
    // A real response of the broker becomes the echo server's fixed response, so both send the same bytes.
    const sample = await broker.client.submit(request(), { timeoutMs: 10_000 });
    const responseBytes = toBinary(SubmitResponseSchema, sample);
    const requestBytes = toBinary(SubmitRequestSchema, request()).length;
    const echoChild = ctx.group.start({
      name: "echo-server",
      script: benchScript("baselines/echo-server.js"),
      args: ["--response-base64", Buffer.from(responseBytes).toString("base64")],
    });
    const { port } = await echoChild.waitFor("listening", startTimeoutMs);
    const targets: Target[] = [
      newTarget("mpmc", broker.child, broker.client),
      newTarget("echo", echoChild, connectTo(BrokerService, `127.0.0.1:${String(port)}`)),
    ];

    for (const target of targets) {
      note(`[submit ${target.name}] warm-up: ${warmupCalls} calls`);
      await runLoad({
        label: `submit ${target.name} warm-up`,
        concurrency,
        count: warmupCalls,
        timeLimitMs,
        progress: false,
        call: () => target.client.submit(request(), { timeoutMs: 10_000 }).then(() => {}),
      });
    }
    for (let round = 0; round < rounds; round++) {
      // Alternate the order so neither server always runs first.
      const order = round % 2 === 0 ? targets : [...targets].reverse();
      for (const target of order) {
        await measureRound(target, round, { calls, concurrency, timeLimitMs, request });
      }
    }

    const { stats } = await broker.client.getStats({}, { timeoutMs: 10_000 });
    const [mpmc, echo] = targets.map(resultOf) as [SubmitTargetResult, SubmitTargetResult];
    return {
      description: "unary Submit through one Connect client, against the mpmc broker and a bare grpc-js server",
      concurrency,
      callsPerRound: calls,
      warmupCalls,
      rounds,
      requestBytes,
      responseBytes: responseBytes.length,
      queueSetup: `no consumers; capacity ${capacity} fits every job of the run, so the queue never fills`,
      mpmc,
      echo,
      brokerQueuedAfter: Number(stats?.queued ?? 0n),
      brokerCapacity: capacity,
      ratio: atLeast(echo.summary.rps > 0 ? mpmc.summary.rps / echo.summary.rps : 0, 0.8),
      serverCpuRatio: mpmc.serverCpuMsPerCall > 0 ? echo.serverCpuMsPerCall / mpmc.serverCpuMsPerCall : 0,
    };
  } finally {
    await ctx.group.stopAll(stopGraceMs);
  }
}

function newTarget(name: Target["name"], child: BenchChild, client: Client<typeof BrokerService>): Target {
  return { name, child, client, recorder: new LatencyRecorder(), elapsedMs: 0, serverCpuMs: 0, clientCpuMs: 0, stoppedBy: "count" };
}

async function measureRound(
  target: Target,
  round: number,
  options: { calls: number; concurrency: number; timeLimitMs: number; request: () => SubmitRequest },
): Promise<void> {
  const serverCpuBefore = cpuTimeMs(target.child.pid);
  const clientCpuBefore = ownCpuTimeMs();
  const result = await runLoad({
    label: `submit ${target.name} round ${round + 1}`,
    concurrency: options.concurrency,
    count: options.calls,
    timeLimitMs: options.timeLimitMs,
    call: () => target.client.submit(options.request(), { timeoutMs: 10_000 }).then(() => {}),
  });
  target.serverCpuMs += cpuTimeMs(target.child.pid) - serverCpuBefore;
  target.clientCpuMs += ownCpuTimeMs() - clientCpuBefore;
  target.elapsedMs += result.elapsedMs;
  target.recorder.add(result.recorder);
  if (result.stoppedBy === "time") {
    target.stoppedBy = "time";
  }
}

function resultOf(target: Target): SubmitTargetResult {
  const summary = target.recorder.summarize(target.elapsedMs);
  return {
    summary,
    stoppedBy: target.stoppedBy,
    serverCpuMsPerCall: cpuMsPer(target.serverCpuMs, summary.count),
    clientCpuMsPerCall: cpuMsPer(target.clientCpuMs, summary.count),
  };
}
