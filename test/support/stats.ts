import type { BrokerStats, ConsumerStats, ProducerStats } from "@mpmc/common";
import { expect } from "vitest";
import type { TestBroker } from "./broker.js";

type BrokerClient = TestBroker["client"];

export async function statsOf(client: BrokerClient): Promise<BrokerStats> {
  const { stats } = await client.getStats({});
  if (stats === undefined) {
    throw new Error("GetStats returned no stats");
  }
  return stats;
}

export function consumerIn(stats: BrokerStats, consumerId: string): ConsumerStats {
  const consumer = stats.consumers.find((c) => c.consumerId === consumerId);
  if (consumer === undefined) {
    throw new Error(`consumer "${consumerId}" is missing from the stats`);
  }
  return consumer;
}

export function producerIn(stats: BrokerStats, producerId: string): ProducerStats {
  const producer = stats.producers.find((p) => p.producerId === producerId);
  if (producer === undefined) {
    throw new Error(`producer "${producerId}" is missing from the stats`);
  }
  return producer;
}

/** Returns queued + waiting_retry + in_flight + processed + dead_lettered: every job the stats account for. */
export function accountedJobs(stats: BrokerStats): bigint {
  return stats.queued + stats.waitingRetry + stats.inFlight + stats.processed + stats.deadLettered;
}

/** Asserts created == queued + waiting_retry + in_flight + processed + dead_lettered, as stats.proto promises. */
export function expectJobsAccountedFor(stats: BrokerStats): void {
  expect(accountedJobs(stats), "queued + waiting_retry + in_flight + processed + dead_lettered").toBe(stats.created);
}
