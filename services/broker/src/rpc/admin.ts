import { create } from "@bufbuild/protobuf";
import type { handleUnaryCall } from "@grpc/grpc-js";
import {
  GetProducerCursorResponseSchema,
  ListDeadLettersResponseSchema,
  ListLeasesResponseSchema,
  MpmcError,
  PurgeDeadLettersResponseSchema,
  ReleaseLeaseResponseSchema,
  RequeueDeadLettersResponseSchema,
  requireAdminToken,
  toServiceError,
  type AdminAuth,
  type GetProducerCursorRequest,
  type GetProducerCursorResponse,
  type ListDeadLettersRequest,
  type ListDeadLettersResponse,
  type ListLeasesRequest,
  type ListLeasesResponse,
  type PurgeDeadLettersRequest,
  type PurgeDeadLettersResponse,
  type ReleaseLeaseRequest,
  type ReleaseLeaseResponse,
  type RequeueDeadLettersRequest,
  type RequeueDeadLettersResponse,
} from "@mpmc/common";
import type { RpcContext } from "./context.js";
import { deadLetterMessageOf, leaseInfoMessageOf } from "./convert.js";
import { idNumberOf, requireId } from "./validate.js";

/** Introspection and operator RPCs: leases, dead letters and producer cursors. */

const defaultPageSize = 100;
const maxPageSize = 10_000;

/** Runs a unary handler body, turning thrown errors into the call's status. */
function unary<Req, Res>(ctx: RpcContext, rpc: string, body: (request: Req) => Res): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    try {
      callback(null, body(call.request));
    } catch (err) {
      if (!(err instanceof MpmcError)) {
        ctx.logger.error({ err, rpc }, "request failed");
      }
      callback(toServiceError(err));
    }
  };
}

function pageSizeOf(value: number): number {
  if (value > maxPageSize) {
    throw new MpmcError("invalid_argument", `page_size must be at most ${maxPageSize}, got ${value}`);
  }
  return value === 0 ? defaultPageSize : value;
}

/** Returns the job ids a dead-letter request names, or "all"; naming neither is an error. */
function targetsOf(request: { jobIds: bigint[]; all: boolean }): readonly number[] | "all" {
  if (request.all) {
    return "all";
  }
  if (request.jobIds.length === 0) {
    throw new MpmcError("invalid_argument", "job_ids is empty: name the jobs, or set all to true");
  }
  return request.jobIds.map((id, i) => idNumberOf(`job_ids[${i}]`, id));
}

export interface AdminHandlers {
  getProducerCursor: handleUnaryCall<GetProducerCursorRequest, GetProducerCursorResponse>;
  listLeases: handleUnaryCall<ListLeasesRequest, ListLeasesResponse>;
  releaseLease: handleUnaryCall<ReleaseLeaseRequest, ReleaseLeaseResponse>;
  listDeadLetters: handleUnaryCall<ListDeadLettersRequest, ListDeadLettersResponse>;
  requeueDeadLetters: handleUnaryCall<RequeueDeadLettersRequest, RequeueDeadLettersResponse>;
  purgeDeadLetters: handleUnaryCall<PurgeDeadLettersRequest, PurgeDeadLettersResponse>;
}

/** Reads need no token; calls that change jobs (release, requeue, purge) need the admin token when one is set. */
export function adminHandlers(ctx: RpcContext, auth: AdminAuth): AdminHandlers {
  const { core, logger } = ctx;
  return {
    getProducerCursor: (call, callback) => {
      let producerId: string;
      try {
        producerId = requireId("producer_id", call.request.producerId);
      } catch (err) {
        callback(toServiceError(err));
        return;
      }
      // Read the cursor, then wait for the store, so the response names only durable jobs.
      const lastSequence = core.producerCursor(producerId);
      ctx.store.flush().then(
        () => callback(null, create(GetProducerCursorResponseSchema, { lastSequence: BigInt(lastSequence) })),
        (err: unknown) => callback(toServiceError(err)),
      );
    },

    listLeases: unary(ctx, "ListLeases", (request: ListLeasesRequest) => {
      const filter: { consumerId?: string; jobId?: number } = {};
      if (request.consumerId !== "") {
        filter.consumerId = requireId("consumer_id", request.consumerId);
      }
      if (request.jobId !== 0n) {
        filter.jobId = idNumberOf("job_id", request.jobId);
      }
      const leases = core.listLeases(filter, pageSizeOf(request.pageSize));
      return create(ListLeasesResponseSchema, { leases: leases.map(leaseInfoMessageOf) });
    }),

    releaseLease: requireAdminToken(
      auth,
      "ReleaseLease",
      unary(ctx, "ReleaseLease", (request: ReleaseLeaseRequest) => {
        const released = core.releaseLease(idNumberOf("job_id", request.jobId));
        logger.info({ jobId: released.jobId, consumerId: released.consumerId }, "lease released by an operator");
        return create(ReleaseLeaseResponseSchema, { released: leaseInfoMessageOf(released) });
      }),
    ),

    listDeadLetters: unary(ctx, "ListDeadLetters", (request: ListDeadLettersRequest) => {
      const afterJobId = request.afterJobId > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(request.afterJobId);
      const { entries, total } = core.listDeadLetters(afterJobId, pageSizeOf(request.pageSize));
      return create(ListDeadLettersResponseSchema, { deadLetters: entries.map(deadLetterMessageOf), total: BigInt(total) });
    }),

    requeueDeadLetters: requireAdminToken(
      auth,
      "RequeueDeadLetters",
      unary(ctx, "RequeueDeadLetters", (request: RequeueDeadLettersRequest) => {
        const requeued = core.requeueDeadLetters(targetsOf(request));
        logger.info({ requeued }, "dead letters requeued");
        return create(RequeueDeadLettersResponseSchema, { requeued: BigInt(requeued) });
      }),
    ),

    purgeDeadLetters: requireAdminToken(
      auth,
      "PurgeDeadLetters",
      unary(ctx, "PurgeDeadLetters", (request: PurgeDeadLettersRequest) => {
        const purged = core.purgeDeadLetters(targetsOf(request));
        logger.info({ purged }, "dead letters purged");
        return create(PurgeDeadLettersResponseSchema, { purged: BigInt(purged) });
      }),
    ),
  };
}
