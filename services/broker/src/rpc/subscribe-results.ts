import { create } from "@bufbuild/protobuf";
import type { handleServerStreamingCall } from "@grpc/grpc-js";
import {
  MpmcError,
  SubscribeResultsResponseSchema,
  toServiceError,
  writeEncoded,
  type SubscribeResultsRequest,
  type SubscribeResultsResponse,
} from "@mpmc/common";
import type { BrokerSnapshot, ResultSink } from "../core/types.js";
import type { RpcContext } from "./context.js";
import { statsMessageOf } from "./convert.js";
import { encodeResultBatch } from "./wire.js";

/** Maximum results in one message of the stream. */
const maxBatch = 500;

/**
 * Streams results to one subscriber. Each subscriber keeps only a cursor, the
 * last result_sequence it was sent, and reads from the broker's shared result
 * window whenever its stream can take more. So a slow subscriber never holds
 * up the consumers and costs no memory of its own. One that falls so far
 * behind that the results it needs have left the window is ended with
 * RESOURCE_EXHAUSTED, and can resume from its last sequence while the broker
 * still keeps it.
 */
export function subscribeResultsHandler(
  ctx: RpcContext,
): handleServerStreamingCall<SubscribeResultsRequest, SubscribeResultsResponse> {
  return (call) => {
    const subscriberId = call.request.subscriberId || call.getPeer();
    const { core } = ctx;
    let cursor = call.request.afterSequence === undefined ? core.lastResultSequence : Number(call.request.afterSequence);
    let waitingForDrain = false;
    let ended = false;
    let finalStats: BrokerSnapshot | undefined;

    const end = (err?: unknown): void => {
      if (ended) {
        return;
      }
      ended = true;
      ctx.openStreams.delete(end);
      unsubscribe();
      if (err === undefined) {
        call.end();
      } else {
        call.emit("error", toServiceError(err));
      }
    };

    let waitingForStore = false;

    /** Sends the window's results after the cursor, up to what the store has committed, until the stream pushes back. */
    const flush = (): void => {
      while (!ended && !waitingForDrain) {
        const kept = core.resultsAfter(cursor, maxBatch);
        const committed = ctx.store.committedResultSequence;
        // In memory mode every result counts as committed, so the batch is not copied.
        const batch = committed >= core.lastResultSequence ? kept : kept?.filter((result) => result.sequence <= committed);
        if (batch !== undefined && kept !== undefined && batch.length < kept.length && !waitingForStore) {
          // Results settle before they are durable; send the rest once the store commits them.
          waitingForStore = true;
          ctx.store.flush().then(
            () => {
              waitingForStore = false;
              flush();
            },
            () => {
              // The commit failed; the store retries it, so look again shortly.
              setTimeout(() => {
                waitingForStore = false;
                flush();
              }, 500).unref();
            },
          );
        }
        if (batch === undefined) {
          ctx.logger.warn({ subscriberId, cursor, firstKept: core.firstKeptResultSequence }, "ending a result subscriber that fell behind");
          end(
            new MpmcError(
              "resource_exhausted",
              `subscriber fell behind: results after ${cursor} are no longer kept (the broker keeps the last ${ctx.resultWindow}, result-window); resubscribe`,
            ),
          );
          return;
        }
        if (batch.length === 0) {
          if (finalStats !== undefined && cursor >= core.lastResultSequence) {
            call.write(create(SubscribeResultsResponseSchema, { kind: { case: "finalStats", value: statsMessageOf(finalStats) } }));
            end();
          }
          return;
        }
        const encoded = encodeResultBatch(batch);
        cursor = (batch[batch.length - 1] as { sequence: number }).sequence;
        const writable = writeEncoded(call, encoded);
        if (!writable) {
          waitingForDrain = true;
          call.once("drain", () => {
            waitingForDrain = false;
            flush();
          });
        }
      }
    };

    const sink: ResultSink = {
      results: () => flush(),
      finish(stats: BrokerSnapshot) {
        finalStats = stats;
        flush();
      },
    };

    const afterSequence = call.request.afterSequence;
    if (afterSequence !== undefined && afterSequence > BigInt(core.lastResultSequence)) {
      // A cursor from the future means another broker, or one that lost results in a restart.
      call.emit(
        "error",
        toServiceError(
          new MpmcError(
            "out_of_range",
            `after_sequence ${afterSequence} is past the newest result, ${core.lastResultSequence}; subscribe without after_sequence`,
          ),
        ),
      );
      return;
    }
    if (afterSequence !== undefined && core.resultsAfter(Number(afterSequence), 0) === undefined) {
      call.emit(
        "error",
        toServiceError(
          new MpmcError(
            "out_of_range",
            `after_sequence ${afterSequence} is too old: the oldest result kept is ${core.firstKeptResultSequence}; subscribe without after_sequence`,
          ),
        ),
      );
      return;
    }
    let unsubscribe: () => void = () => {};
    call.on("cancelled", () => {
      ended = true;
      ctx.openStreams.delete(end);
      unsubscribe();
    });
    ctx.openStreams.add(end);
    unsubscribe = core.subscribe(sink);
    ctx.logger.info({ subscriberId, afterSequence: afterSequence === undefined ? undefined : Number(afterSequence) }, "result subscriber connected");
    flush();
  };
}
