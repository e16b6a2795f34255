import { ConnectError } from "@connectrpc/connect";
import type { BrokerStats, Result, SubscribeResultsResponse } from "@mpmc/common";
import { expect } from "vitest";
import type { TestBroker } from "./broker.js";

type BrokerClient = TestBroker["client"];

/**
 * Reads one SubscribeResults stream in the background and records what it
 * receives, in order. By default it requests after_sequence 0, so it also
 * receives every result the broker still keeps from before it subscribed.
 * With "now" it leaves after_sequence unset, for results settled from then on.
 */
export class ResultSubscription {
  readonly results: Result[] = [];
  /** The case of every message received, in order. */
  readonly kinds: string[] = [];
  finalStats: BrokerStats | undefined;
  /** Set when the stream ends: "ok", or the error's message. */
  ended: string | undefined;
  /** The error the stream ended with, if any. */
  error: ConnectError | undefined;
  private readonly abort = new AbortController();

  constructor(client: BrokerClient, subscriberId: string, after: bigint | "now" = 0n) {
    const afterSequence = after === "now" ? undefined : after;
    void this.read(client.subscribeResults({ subscriberId, afterSequence }, { signal: this.abort.signal }));
  }

  private async read(responses: AsyncIterable<SubscribeResultsResponse>): Promise<void> {
    try {
      for await (const response of responses) {
        this.kinds.push(response.kind.case ?? "none");
        if (response.kind.case === "results") {
          this.results.push(...response.kind.value.results);
        } else if (response.kind.case === "finalStats") {
          this.finalStats = response.kind.value;
        }
      }
      this.ended = "ok";
    } catch (err) {
      this.error = ConnectError.from(err);
      this.ended = this.error.message;
    }
  }

  cancel(): void {
    this.abort.abort();
  }
}

/**
 * Asserts that the results hold exactly one result for each of the job ids and
 * none for any other job, and that each output is data * 2, as the default
 * handler returns. Returns the results by job id.
 */
export function expectOneResultPerJob(results: readonly Result[], jobIds: readonly bigint[]): Map<bigint, Result> {
  const byJob = new Map<bigint, Result>();
  const repeated: bigint[] = [];
  for (const result of results) {
    if (byJob.has(result.jobId)) {
      repeated.push(result.jobId);
    }
    byJob.set(result.jobId, result);
  }
  expect(repeated, "job ids with more than one result").toEqual([]);
  expect([...byJob.keys()].sort(compareIds), "job ids with a result").toEqual([...jobIds].sort(compareIds));
  const wrongOutputs = results.filter((result) => result.output !== result.data * 2n).map((result) => result.jobId);
  expect(wrongOutputs, "job ids whose output is not data * 2").toEqual([]);
  return byJob;
}

/** Job ids from first to last, both included. */
export function idRange(first: number, last: number): bigint[] {
  return Array.from({ length: last - first + 1 }, (_, i) => BigInt(first + i));
}

function compareIds(a: bigint, b: bigint): number {
  if (a === b) {
    return 0;
  }
  return a < b ? -1 : 1;
}
