import { create } from "@bufbuild/protobuf";
import type { Server } from "@grpc/grpc-js";
import { addGrpcService, BrokerService, CloseQueueResponseSchema, GetStatsResponseSchema, requireAdminToken } from "@mpmc/common";
import type { BrokerSnapshot } from "../core/types.js";
import { adminHandlers } from "./admin.js";
import { consumeHandler } from "./consume.js";
import type { RpcContext } from "./context.js";
import { statsMessageOf } from "./convert.js";
import { publishHandler } from "./publish.js";
import { submitHandler } from "./submit.js";
import { subscribeResultsHandler } from "./subscribe-results.js";
import { watchStatsHandler } from "./watch-stats.js";
import { decodePublishRequest } from "./wire.js";

export interface BrokerServiceOptions {
  /** Bearer token that admin RPCs such as CloseQueue require. They are open to every client when it is unset. */
  adminToken?: string | undefined;
  /** Source of the stats that GetStats and CloseQueue return. The core's snapshot is used when it is unset. */
  snapshot?: () => BrokerSnapshot;
}

/** Registers mpmc.v1.BrokerService on a server: a thin shell over the broker core. */
export function addBrokerService(server: Pick<Server, "addService">, ctx: RpcContext, options: BrokerServiceOptions = {}): void {
  const snapshot = options.snapshot ?? (() => ctx.core.snapshot());
  addGrpcService(server, BrokerService, {
    publish: publishHandler(ctx),
    submit: submitHandler(ctx),
    consume: consumeHandler(ctx),
    subscribeResults: subscribeResultsHandler(ctx),
    watchStats: watchStatsHandler(ctx),
    ...adminHandlers(ctx, { adminToken: options.adminToken, logger: ctx.logger }),
    getStats: (_call, callback) => {
      callback(null, create(GetStatsResponseSchema, { stats: statsMessageOf(snapshot()) }));
    },
    closeQueue: requireAdminToken({ adminToken: options.adminToken, logger: ctx.logger }, "CloseQueue", (_call, callback) => {
      const alreadyClosed = ctx.core.close();
      if (!alreadyClosed) {
        ctx.logger.info({ queued: ctx.core.queued, inFlight: ctx.core.inFlight }, "queue closed, draining");
      }
      callback(null, create(CloseQueueResponseSchema, { alreadyClosed, stats: statsMessageOf(snapshot()) }));
    }),
  }, {
    // Publish carries every job in; its requests skip protobuf-es reflection.
    publish: decodePublishRequest,
  });
}
