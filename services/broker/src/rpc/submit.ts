import { create } from "@bufbuild/protobuf";
import type { handleUnaryCall } from "@grpc/grpc-js";
import { MpmcError, SubmitResponseSchema, toServiceError, type SubmitRequest, type SubmitResponse } from "@mpmc/common";
import { cancellationSignal, type RpcContext } from "./context.js";
import { jobMessageOf } from "./convert.js";
import { requireWritableStore } from "./durability.js";
import { jobInputOf, requireId } from "./validate.js";

/**
 * How long before the call's deadline Submit gives up waiting, so that its
 * RESOURCE_EXHAUSTED reaches the client before the deadline does.
 */
const deadlineMarginMs = 20;

export function submitHandler(ctx: RpcContext): handleUnaryCall<SubmitRequest, SubmitResponse> {
  return (call, callback) => {
    const signal = cancellationSignal(call);
    const request = call.request;

    const run = async (): Promise<SubmitResponse> => {
      const producerId = requireId("producer_id", request.producerId);
      if (request.job === undefined) {
        throw new MpmcError("invalid_argument", "job is required");
      }
      const input = jobInputOf("job", request.job, ctx.limits);
      requireWritableStore(ctx);
      const deadline = call.getDeadline();
      const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
      for (;;) {
        const offered = ctx.core.offer(producerId, [input]);
        const accepted = offered.accepted[0];
        if (accepted !== undefined) {
          // Confirmed only once durable; in memory mode this resolves at once.
          await ctx.store.flush();
          return create(SubmitResponseSchema, { job: jobMessageOf(accepted) });
        }
        if (offered.duplicates > 0) {
          // The first copy may still wait for its commit, so report "duplicate" only once it is durable.
          await ctx.store.flush();
          return create(SubmitResponseSchema, { duplicate: true });
        }
        if (request.noWait) {
          throw new MpmcError("resource_exhausted", `the queue is full (capacity ${ctx.core.capacity}); retry later, or unset no_wait to wait for room`);
        }
        await waitUntil(ctx, signal, deadlineMs);
      }
    };

    run().then(
      (response) => callback(null, response),
      (err: unknown) => {
        if (!(err instanceof MpmcError)) {
          ctx.logger.error({ err, producerId: request.producerId }, "submit failed");
        }
        callback(toServiceError(err));
      },
    );
  };
}

/** Waits for room in the queue, giving up just before the call's deadline. */
async function waitUntil(ctx: RpcContext, signal: AbortSignal, deadlineMs: number): Promise<void> {
  if (!Number.isFinite(deadlineMs)) {
    return ctx.core.waitForRoom(signal);
  }
  const remainingMs = deadlineMs - Date.now() - deadlineMarginMs;
  const timedOut = new MpmcError("resource_exhausted", `the queue stayed full (capacity ${ctx.core.capacity}) until the call's deadline`);
  if (remainingMs <= 0) {
    throw timedOut;
  }
  const timeout = AbortSignal.timeout(remainingMs);
  try {
    await ctx.core.waitForRoom(AbortSignal.any([signal, timeout]));
  } catch (err) {
    if (timeout.aborted && !signal.aborted) {
      throw timedOut;
    }
    throw err;
  }
}
