import { create } from "@bufbuild/protobuf";
import type { handleServerStreamingCall } from "@grpc/grpc-js";
import {
  MpmcError,
  SubscribeResultsResponseSchema,
  toServiceError,
  type SubscribeResultsRequest,
  type SubscribeResultsResponse,
} from "@mpmc/common";
import type { BrokerSnapshot, ResultRecord, ResultSink } from "../core/types.js";
import type { RpcContext } from "./context.js";
import { resultMessageOf, statsMessageOf } from "./convert.js";

/**
 * Streams results to one subscriber. Writes wait for the stream to drain, and
 * while they wait the results queue up here, up to a bound. A subscriber that
 * falls further behind is ended with RESOURCE_EXHAUSTED, so a slow reader never
 * holds up the consumers or grows the broker's memory without limit.
 */
export function subscribeResultsHandler(
  ctx: RpcContext,
): handleServerStreamingCall<SubscribeResultsRequest, SubscribeResultsResponse> {
  return (call) => {
    const subscriberId = call.request.subscriberId || call.getPeer();
    const backlog: SubscribeResultsResponse[] = [];
    let backlogResults = 0;
    let waitingForDrain = false;
    let ended = false;
    let finalStats: BrokerSnapshot | undefined;

    const end = (err?: unknown): void => {
      if (ended) {
        return;
      }
      ended = true;
      unsubscribe();
      if (err === undefined) {
        call.end();
      } else {
        call.emit("error", toServiceError(err));
      }
    };

    const flush = (): void => {
      while (!ended && backlog.length > 0) {
        const message = backlog.shift() as SubscribeResultsResponse;
        if (message.kind.case === "results") {
          backlogResults -= message.kind.value.results.length;
        }
        if (!call.write(message)) {
          waitingForDrain = true;
          call.once("drain", () => {
            waitingForDrain = false;
            flush();
          });
          return;
        }
      }
      if (finalStats !== undefined && backlog.length === 0) {
        end();
      }
    };

    const sink: ResultSink = {
      results(batch: readonly ResultRecord[]) {
        if (ended) {
          return;
        }
        backlog.push(
          create(SubscribeResultsResponseSchema, {
            kind: { case: "results", value: { results: batch.map(resultMessageOf) } },
          }),
        );
        backlogResults += batch.length;
        if (backlogResults > ctx.maxSubscriberBacklog) {
          ctx.logger.warn({ subscriberId, backlog: backlogResults }, "ending a result subscriber that fell behind");
          end(
            new MpmcError(
              "resource_exhausted",
              `subscriber fell behind by more than ${ctx.maxSubscriberBacklog} results (max-subscriber-backlog); resubscribe and read faster`,
            ),
          );
          return;
        }
        if (!waitingForDrain) {
          flush();
        }
      },
      finish(stats: BrokerSnapshot) {
        if (ended) {
          return;
        }
        finalStats = stats;
        backlog.push(create(SubscribeResultsResponseSchema, { kind: { case: "finalStats", value: statsMessageOf(stats) } }));
        if (!waitingForDrain) {
          flush();
        }
      },
    };

    let unsubscribe: () => void = () => {};
    call.on("cancelled", () => {
      ended = true;
      unsubscribe();
    });
    unsubscribe = ctx.core.subscribe(sink);
    if (ended) {
      unsubscribe();
    }
    ctx.logger.info({ subscriberId }, "result subscriber connected");
  };
}
