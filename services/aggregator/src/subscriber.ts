import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { BrokerService, Logger, Result } from "@mpmc/common";
import type { Aggregation } from "./aggregation.js";

export interface SubscriberOptions {
  subscriberId: string;
  progressEvery: number;
  logger: Logger;
  /** Called with every result after the aggregation has counted it. */
  onResult?: (result: Result) => void;
}

const retryMinMs = 200;
const retryMaxMs = 5_000;

/**
 * Feeds the aggregation from the broker's result stream until the broker sends
 * the final stats. A failed stream is opened again after a backoff with
 * jitter, resuming after the last result seen, so an aggregator started
 * before the broker, or cut off from it, catches up by itself without gaps
 * while the broker still keeps the results it missed.
 */
export async function followResults(
  client: Client<typeof BrokerService>,
  aggregation: Aggregation,
  options: SubscriberOptions,
  signal: AbortSignal,
): Promise<void> {
  const { logger } = options;
  let delayMs = retryMinMs;
  let resumeFromNow = false;
  while (!signal.aborted && !aggregation.finished) {
    try {
      // Resume after the last result seen; the first time, from the oldest result the broker keeps.
      const afterSequence = resumeFromNow ? undefined : BigInt(aggregation.lastSequence);
      const stream = client.subscribeResults({ subscriberId: options.subscriberId, afterSequence }, { signal });
      resumeFromNow = false;
      for await (const response of stream) {
        delayMs = retryMinMs;
        const kind = response.kind;
        switch (kind.case) {
          case "results":
            for (const result of kind.value.results) {
              aggregation.add(result);
              options.onResult?.(result);
              if (aggregation.results % options.progressEvery === 0) {
                logger.info(
                  { results: aggregation.results, averageProcessingMs: round(aggregation.averageProcessingMs) },
                  "aggregator progress",
                );
              }
            }
            break;
          case "finalStats":
            aggregation.finish(kind.value);
            break;
          case undefined:
            break;
        }
      }
      if (!aggregation.finished) {
        logger.warn("result stream ended without final stats; subscribing again");
      }
    } catch (err) {
      if (signal.aborted) {
        return;
      }
      if (ConnectError.from(err).code === Code.OutOfRange) {
        // The results after our cursor are gone; count the gap when the next result arrives.
        logger.error({ err, lastSequence: aggregation.lastSequence }, "results missed: the broker no longer keeps them; following new results");
        resumeFromNow = true;
        continue;
      }
      logger.warn({ err, retryInMs: delayMs, lastSequence: aggregation.lastSequence }, "result stream failed; resuming after the last result seen");
      await sleep(delayMs * (0.5 + Math.random()), undefined, { signal }).catch(() => {});
      delayMs = Math.min(retryMaxMs, delayMs * 2);
    }
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
