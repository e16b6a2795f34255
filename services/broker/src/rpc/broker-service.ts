import { create } from "@bufbuild/protobuf";
import type { Server } from "@grpc/grpc-js";
import { addGrpcService, BrokerService, CloseQueueResponseSchema, GetStatsResponseSchema } from "@mpmc/common";
import { consumeHandler } from "./consume.js";
import type { RpcContext } from "./context.js";
import { statsMessageOf } from "./convert.js";
import { publishHandler } from "./publish.js";
import { submitHandler } from "./submit.js";
import { subscribeResultsHandler } from "./subscribe-results.js";

/** Registers mpmc.v1.BrokerService on a server: a thin shell over the broker core. */
export function addBrokerService(server: Pick<Server, "addService">, ctx: RpcContext): void {
  addGrpcService(server, BrokerService, {
    publish: publishHandler(ctx),
    submit: submitHandler(ctx),
    consume: consumeHandler(ctx),
    subscribeResults: subscribeResultsHandler(ctx),
    getStats: (_call, callback) => {
      callback(null, create(GetStatsResponseSchema, { stats: statsMessageOf(ctx.core.snapshot()) }));
    },
    closeQueue: (_call, callback) => {
      const alreadyClosed = ctx.core.close();
      if (!alreadyClosed) {
        ctx.logger.info({ queued: ctx.core.queued, inFlight: ctx.core.inFlight }, "queue closed, draining");
      }
      callback(null, create(CloseQueueResponseSchema, { alreadyClosed, stats: statsMessageOf(ctx.core.snapshot()) }));
    },
  });
}
