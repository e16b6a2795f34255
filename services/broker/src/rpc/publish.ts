import { create } from "@bufbuild/protobuf";
import type { handleClientStreamingCall } from "@grpc/grpc-js";
import { MpmcError, PublishResponseSchema, toServiceError, type PublishRequest, type PublishResponse } from "@mpmc/common";
import { cancellationSignal, type RpcContext } from "./context.js";
import { requireWritableStore } from "./durability.js";
import { jobInputsOf, requireId } from "./validate.js";
import type { PublishRequestFields } from "./wire.js";

/**
 * Publish reads one request at a time and does not read the next until every
 * job of the current one is in the queue. While it waits for room, unread
 * messages stay in grpc-js and HTTP/2 buffers, whose flow-control windows then
 * stop the producer, so the broker keeps at most one batch per stream in memory.
 */
export function publishHandler(ctx: RpcContext): handleClientStreamingCall<PublishRequest, PublishResponse> {
  return (call, callback) => {
    const signal = cancellationSignal(call);
    const response = create(PublishResponseSchema, {});
    let producerId: string | undefined;

    const run = async (): Promise<void> => {
      // Requests arrive decoded by decodePublishRequest (see broker-service.ts), not as protobuf-es messages.
      for await (const request of call as unknown as AsyncIterable<PublishRequestFields>) {
        const id = requireId("producer_id", request.producerId);
        if (producerId === undefined) {
          producerId = id;
          ctx.logger.debug({ producerId }, "publish stream started");
        } else if (id !== producerId) {
          throw new MpmcError("invalid_argument", `producer_id must be the same on every request of a stream, got "${id}" after "${producerId}"`);
        }
        const inputs = jobInputsOf(request.jobs, ctx.limits);
        requireWritableStore(ctx);
        let offset = 0;
        for (;;) {
          const { accepted, duplicates, consumed } = ctx.core.offer(id, offset === 0 ? inputs : inputs.slice(offset));
          if (accepted.length > 0) {
            const first = accepted[0]?.id ?? 0;
            const last = accepted[accepted.length - 1]?.id ?? 0;
            if (response.firstJobId === 0n) {
              response.firstJobId = BigInt(first);
            }
            response.lastJobId = BigInt(last);
            response.accepted += BigInt(accepted.length);
          }
          response.duplicates += BigInt(duplicates);
          offset += consumed;
          if (offset >= inputs.length) {
            break;
          }
          await ctx.core.waitForRoom(signal);
        }
      }
    };

    const finish = async (): Promise<void> => {
      await run();
      // Jobs count as accepted only once they are durable; in memory mode this resolves at once.
      await ctx.store.flush();
    };

    // The broker's shutdown ends a stream that is still open, so the producer reconnects elsewhere.
    let endStream: (err: MpmcError) => void = () => {};
    const endedByBroker = new Promise<never>((_, reject) => {
      endStream = reject;
    });
    endedByBroker.catch(() => {});
    ctx.openStreams.add(endStream);

    Promise.race([finish(), endedByBroker])
      .finally(() => ctx.openStreams.delete(endStream))
      .then(
        () => {
          ctx.logger.debug({ producerId, accepted: Number(response.accepted) }, "publish stream ended");
          callback(null, response);
        },
        (err: unknown) => {
          if (signal.aborted) {
            ctx.logger.info({ producerId, accepted: Number(response.accepted) }, "publish stream cancelled by the producer");
            return;
          }
          // Report how far the stream got, so the producer can tell which jobs are in the queue.
          const accepted =
            `${response.accepted} jobs of this stream were accepted` +
            (response.accepted > 0n ? `, ids ${response.firstJobId} to ${response.lastJobId}` : "") +
            (ctx.store.failure === undefined ? "" : ", but are not yet durable: send them again with the same sequence numbers");
          const error = err instanceof MpmcError ? new MpmcError(err.code, `${err.message}; ${accepted}`) : err;
          if (!(err instanceof MpmcError)) {
            ctx.logger.error({ err, producerId }, "publish failed");
          }
          callback(toServiceError(error));
        },
      );
  };
}
