import { setTimeout as sleep } from "node:timers/promises";
import type { Client } from "@connectrpc/connect";
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
 * jitter, so an aggregator started before the broker, or cut off from it,
 * catches up by itself.
 */
export async function followResults(
  client: Client<typeof BrokerService>,
  aggregation: Aggregation,
  options: SubscriberOptions,
  signal: AbortSignal,
): Promise<void> {
  const { logger } = options;
  let delayMs = retryMinMs;
  while (!signal.aborted && !aggregation.finished) {
    try {
      const stream = client.subscribeResults({ subscriberId: options.subscriberId }, { signal });
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
      logger.warn({ err, retryInMs: delayMs }, "result stream failed; results settled meanwhile are not seen");
      await sleep(delayMs * (0.5 + Math.random()), undefined, { signal }).catch(() => {});
      delayMs = Math.min(retryMaxMs, delayMs * 2);
    }
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
