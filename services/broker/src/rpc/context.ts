import type { Logger, MpmcError } from "@mpmc/common";
import type { BrokerCore } from "../core/broker-core.js";
import type { BrokerStore } from "../storage/store.js";
import type { RequestLimits } from "./limits.js";

/** The dependencies every RPC handler of the broker uses. */
export interface RpcContext {
  readonly core: BrokerCore;
  /** Confirmations wait for it: a job, result or cursor is reported once the store has committed it. */
  readonly store: BrokerStore;
  readonly limits: RequestLimits;
  readonly logger: Logger;
  /** Results the broker keeps for subscribers that resume or read slowly. */
  readonly resultWindow: number;
  /** Ends each open stream with the given error; streams add themselves and remove themselves when they end. */
  readonly openStreams: Set<(err: MpmcError) => void>;
}

/** Returns an AbortSignal that aborts when the client or the server cancels the call. */
export function cancellationSignal(call: { on(event: "cancelled", listener: () => void): unknown }): AbortSignal {
  const controller = new AbortController();
  call.on("cancelled", () => controller.abort());
  return controller.signal;
}
