import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import {
  BrokerService,
  ConsumeRequestSchema,
  connectTo,
  createSessionManager,
  durationOfMs,
  type ConsumeRequest,
} from "@mpmc/common";
import { payloadOf, publishRequests } from "../jobs.js";
import { statusNameOf } from "../latency.js";

/**
 * One client process of the scale scenario. It opens many Consume or many
 * Publish streams to one broker, all on one shared HTTP/2 connection, and
 * reports to the benchmark over IPC: "ready" once every stream is opened, then
 * "done" with its counts and its streams' gRPC statuses.
 *
 * --role consume: each stream sends a hello with credit 1 and acks every delivery
 *   at once; streams end when the broker ends them after CloseQueue, or when
 *   the benchmark sends {type: "stop"}.
 * --role publish: each stream publishes --jobs numbered jobs in batches of
 *   --batch-size under its own producer id, then ends.
 */

const { values } = parseArgs({
  options: {
    role: { type: "string" },
    broker: { type: "string" },
    streams: { type: "string" },
    "first-index": { type: "string", default: "1" },
    jobs: { type: "string", default: "0" },
    "batch-size": { type: "string", default: "1" },
    "payload-bytes": { type: "string", default: "0" },
    "timeout-ms": { type: "string", default: "600000" },
  },
});

function positiveInteger(name: string, value: string | undefined, min = 1): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min) {
    process.stderr.write(`scale-worker: --${name} must be an integer of at least ${min}, got ${String(value)}\n`);
    process.exit(2);
  }
  return parsed;
}

const broker = values.broker ?? "";
const streams = positiveInteger("streams", values.streams);
const firstIndex = positiveInteger("first-index", values["first-index"]);
const timeoutMs = positiveInteger("timeout-ms", values["timeout-ms"]);
const connection = createSessionManager(broker);
const client = connectTo(BrokerService, broker, undefined, connection);
const statuses = new Map<string, number>();
const countStatus = (name: string): void => {
  statuses.set(name, (statuses.get(name) ?? 0) + 1);
};

/** Every stream's request side, so "stop" can end them all. */
const openRequests: ReturnType<typeof createWritableIterable<ConsumeRequest>>[] = [];

async function consumeOne(index: number): Promise<number> {
  const requests = createWritableIterable<ConsumeRequest>();
  openRequests.push(requests);
  let processed = 0;
  void requests.write(create(ConsumeRequestSchema, { kind: { case: "hello", value: { consumerId: `scale-consumer-${index}`, credit: 1 } } }));
  try {
    for await (const response of client.consume(requests, { timeoutMs })) {
      if (response.kind.case !== "deliveries") {
        continue;
      }
      const acks = response.kind.value.deliveries.map((delivery) => ({
        jobId: delivery.job?.id ?? 0n,
        leaseToken: delivery.leaseToken,
        output: (delivery.job?.data ?? 0n) * 2n,
        processingDuration: durationOfMs(0),
      }));
      processed += acks.length;
      // A write after the broker ended the stream rejects; the stream's own outcome is counted below.
      requests.write(create(ConsumeRequestSchema, { kind: { case: "acks", value: { acks } } })).catch(() => {});
    }
    countStatus("OK");
  } catch (err) {
    countStatus(statusNameOf(err));
  } finally {
    requests.close();
  }
  return processed;
}

async function publishOne(index: number, jobs: number, batchSize: number, payload: Uint8Array): Promise<number> {
  try {
    const response = await client.publish(publishRequests(`scale-producer-${index}`, jobs, batchSize, payload), { timeoutMs });
    countStatus("OK");
    return Number(response.accepted);
  } catch (err) {
    countStatus(statusNameOf(err));
    return 0;
  }
}

async function main(): Promise<void> {
  const indexes = Array.from({ length: streams }, (_, i) => firstIndex + i);
  let outcome: Promise<number[]>;
  if (values.role === "consume") {
    outcome = Promise.all(indexes.map((index) => consumeOne(index)));
  } else if (values.role === "publish") {
    const jobs = positiveInteger("jobs", values.jobs);
    const batchSize = positiveInteger("batch-size", values["batch-size"]);
    const payload = payloadOf(positiveInteger("payload-bytes", values["payload-bytes"], 0));
    outcome = Promise.all(indexes.map((index) => publishOne(index, jobs, batchSize, payload)));
  } else {
    process.stderr.write(`scale-worker: --role must be consume or publish, got ${String(values.role)}\n`);
    process.exit(2);
  }
  process.send?.({ type: "ready" });
  const counts = await outcome;
  const total = counts.reduce((sum, count) => sum + count, 0);
  const done = { type: "done", jobs: total, perStream: counts, statuses: Object.fromEntries(statuses) };
  // Exit only once the message is written, because exiting drops unsent IPC messages.
  process.send?.(done, undefined, {}, () => process.exit(0));
}

process.on("message", (message: { type?: string }) => {
  if (message.type === "stop") {
    for (const requests of openRequests) {
      requests.close();
    }
  }
});
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => process.exit(0));
}
process.on("disconnect", () => process.exit(0));

main().catch((err: unknown) => {
  process.stderr.write(`scale-worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
