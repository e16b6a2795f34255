import { create } from "@bufbuild/protobuf";
import type { handleServerStreamingCall } from "@grpc/grpc-js";
import {
  msOfDuration,
  toServiceError,
  WatchStatsResponseSchema,
  type MpmcError,
  type WatchStatsRequest,
  type WatchStatsResponse,
} from "@mpmc/common";
import type { RpcContext } from "./context.js";
import { gaugesMessageOf } from "./convert.js";

const defaultIntervalMs = 200;
const minIntervalMs = 50;

/**
 * Pushes the queue's gauges when they change, at most once per interval, so a
 * busy queue costs a watcher a few messages a second rather than one per job.
 * The first message goes out at once. A watcher whose stream is not draining
 * is skipped until it drains, so it only ever sees current values.
 */
export function watchStatsHandler(ctx: RpcContext): handleServerStreamingCall<WatchStatsRequest, WatchStatsResponse> {
  return (call) => {
    const requested = msOfDuration(call.request.minInterval);
    const intervalMs = requested < minIntervalMs ? defaultIntervalMs : requested;
    let timer: NodeJS.Timeout | undefined;
    let lastSentAt = 0;
    let blocked = false;
    let ended = false;

    const send = (): void => {
      timer = undefined;
      if (ended || blocked) {
        return;
      }
      lastSentAt = Date.now();
      const gauges = ctx.core.gauges();
      const writable = call.write(create(WatchStatsResponseSchema, { gauges: gaugesMessageOf(gauges) }));
      if (!writable) {
        blocked = true;
        call.once("drain", () => {
          blocked = false;
          schedule();
        });
      }
      if (gauges.drained) {
        stop();
        call.end();
      }
    };

    const schedule = (): void => {
      if (timer !== undefined || ended) {
        return;
      }
      timer = setTimeout(send, Math.max(0, lastSentAt + intervalMs - Date.now()));
    };

    const unsubscribe = ctx.core.onChange(schedule);
    const stop = (): void => {
      ended = true;
      ctx.openStreams.delete(endWith);
      unsubscribe();
      clearTimeout(timer);
    };
    const endWith = (err: MpmcError): void => {
      if (!ended) {
        stop();
        call.emit("error", toServiceError(err));
      }
    };
    ctx.openStreams.add(endWith);
    call.on("cancelled", stop);
    send();
  };
}
