import type { Logger } from "@mpmc/common";
import type { BrokerCore } from "../core/broker-core.js";
import type { RequestLimits } from "./limits.js";

/** What every RPC handler of the broker works with. */
export interface RpcContext {
  readonly core: BrokerCore;
  readonly limits: RequestLimits;
  readonly logger: Logger;
  /** Results buffered for one subscriber whose stream is not draining before it is ended. */
  readonly maxSubscriberBacklog: number;
}

/** An AbortSignal that aborts when the call is cancelled by the client or the server. */
export function cancellationSignal(call: { on(event: "cancelled", listener: () => void): unknown }): AbortSignal {
  const controller = new AbortController();
  call.on("cancelled", () => controller.abort());
  return controller.signal;
}
