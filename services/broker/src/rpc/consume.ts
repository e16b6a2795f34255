import { create } from "@bufbuild/protobuf";
import type { handleBidiStreamingCall } from "@grpc/grpc-js";
import {
  ConsumeResponseSchema,
  MpmcError,
  msOfDuration,
  toServiceError,
  writeEncoded,
  type Ack,
  type ConsumeRequest,
  type ConsumeResponse,
} from "@mpmc/common";
import type { AckInput, ConsumerSink, Lease, LeaseRef, Rejection } from "../core/types.js";
import type { RpcContext } from "./context.js";
import { encodeDeliveryBatch } from "./wire.js";
import { extensionMsOf, idNumberOf, requireId } from "./validate.js";

type ConsumeCall = Parameters<handleBidiStreamingCall<ConsumeRequest, ConsumeResponse>>[0];

/**
 * One consumer stream. The stream's life is a small state machine:
 * awaiting-hello, then attached (the core delivers jobs), then closed. Whatever
 * closes it (the consumer ending its side, a cancellation, an invalid request,
 * the queue draining), the session is detached exactly once, so every job the
 * consumer still held goes back to the queue.
 */
class ConsumeStream {
  private state: "awaiting-hello" | "attached" | "closed" = "awaiting-hello";
  private sessionId = 0;
  private consumerId = "";
  private waitingForDrain = false;

  constructor(
    private readonly ctx: RpcContext,
    private readonly call: ConsumeCall,
  ) {}

  private readonly endWith = (err: MpmcError): void => this.close(err);

  start(): void {
    this.ctx.openStreams.add(this.endWith);
    this.call.on("data", (request: ConsumeRequest) => this.guard(() => this.onRequest(request)));
    // The consumer ended its side: it sends nothing more, so it cannot settle what it holds.
    this.call.on("end", () => this.close(undefined));
    this.call.on("cancelled", () => this.close(undefined, "cancelled"));
    this.call.on("error", (err: Error) => this.close(undefined, err.message));
  }

  private readonly sink: ConsumerSink = {
    deliver: (leases: readonly Lease[]) => {
      this.write(encodeDeliveryBatch(leases));
    },
    end: () => {
      this.ctx.logger.info({ consumerId: this.consumerId }, "queue drained, ending consumer stream");
      this.close(undefined);
    },
  };

  private onRequest(request: ConsumeRequest): void {
    if (this.state === "closed") {
      return;
    }
    const kind = request.kind;
    switch (kind.case) {
      case "hello": {
        if (this.state !== "awaiting-hello") {
          throw new MpmcError("invalid_argument", "hello must be sent once, as the first request of the stream");
        }
        const consumerId = requireId("hello.consumer_id", kind.value.consumerId);
        if (kind.value.credit === 0) {
          throw new MpmcError("invalid_argument", "hello.credit must be at least 1");
        }
        this.consumerId = consumerId;
        const sessionId = this.ctx.core.attach(consumerId, kind.value.credit, this.sink);
        if (sessionId === 0) {
          // The queue had drained: attach() ended the stream and kept no session.
          return;
        }
        this.sessionId = sessionId;
        this.state = "attached";
        this.ctx.logger.info({ consumerId, credit: kind.value.credit }, "consumer connected");
        return;
      }
      case "acks": {
        this.requireAttached("acks");
        this.checkBatchSize("acks.acks", kind.value.acks.length);
        const acks = kind.value.acks.map((ack, i) => ackInputOf(`acks.acks[${i}]`, ack));
        this.reportRejections(this.ctx.core.acknowledge(this.sessionId, acks));
        return;
      }
      case "release": {
        this.requireAttached("release");
        this.checkBatchSize("release.leases", kind.value.leases.length);
        const refs = kind.value.leases.map((ref, i) => leaseRefOf(`release.leases[${i}]`, ref));
        this.reportRejections(this.ctx.core.release(this.sessionId, refs));
        return;
      }
      case "nacks": {
        this.requireAttached("nacks");
        this.checkBatchSize("nacks.nacks", kind.value.nacks.length);
        const nacks = kind.value.nacks.map((nack, i) => ({
          ...leaseRefOf(`nacks.nacks[${i}]`, nack),
          error: nack.error.slice(0, 1_024),
          permanent: nack.permanent,
        }));
        for (const nack of nacks) {
          this.ctx.logger.warn(
            { consumerId: this.consumerId, jobId: nack.jobId, error: nack.error, permanent: nack.permanent },
            "handler failed",
          );
        }
        this.reportRejections(this.ctx.core.nack(this.sessionId, nacks));
        return;
      }
      case "extend": {
        this.requireAttached("extend");
        this.checkBatchSize("extend.extensions", kind.value.extensions.length);
        const extensions = kind.value.extensions.map((extension, i) => ({
          ...leaseRefOf(`extend.extensions[${i}]`, extension),
          extensionMs: extensionMsOf(`extend.extensions[${i}].extension`, extension.extension),
        }));
        this.reportRejections(this.ctx.core.extend(this.sessionId, extensions));
        return;
      }
      case "stop": {
        this.requireAttached("stop");
        this.ctx.core.stopConsuming(this.sessionId);
        this.ctx.logger.info({ consumerId: this.consumerId }, "consumer stopping, no more deliveries");
        return;
      }
      case undefined:
        throw new MpmcError("invalid_argument", "request has no kind: set one of hello, acks, nacks, extend, release or stop");
    }
  }

  private requireAttached(kind: string): void {
    if (this.state !== "attached") {
      throw new MpmcError("invalid_argument", `${kind} sent before hello: the first request must be a hello`);
    }
  }

  private checkBatchSize(field: string, size: number): void {
    if (size > this.ctx.limits.maxBatchAcks) {
      throw new MpmcError("resource_exhausted", `${field} has ${size} entries, over the limit of ${this.ctx.limits.maxBatchAcks} per request`);
    }
  }

  private reportRejections(rejections: Rejection[]): void {
    if (rejections.length === 0) {
      return;
    }
    this.ctx.logger.warn(
      { consumerId: this.consumerId, rejected: rejections.length, firstJobId: rejections[0]?.jobId, reason: rejections[0]?.reason },
      "rejected results or releases for jobs the consumer does not hold",
    );
    this.write(
      create(ConsumeResponseSchema, {
        kind: {
          case: "rejections",
          value: {
            rejections: rejections.map((r) => ({ jobId: BigInt(r.jobId), leaseToken: BigInt(r.token), reason: r.reason })),
          },
        },
      }),
    );
  }

  /** Writes a message; while the stream's buffer is full the core sends this consumer nothing. */
  private write(message: ConsumeResponse | Uint8Array): void {
    if (this.state === "closed") {
      return;
    }
    const writable = message instanceof Uint8Array ? writeEncoded(this.call, message) : this.call.write(message);
    if (!writable && !this.waitingForDrain) {
      this.waitingForDrain = true;
      this.ctx.core.setWritable(this.sessionId, false);
      this.call.once("drain", () => {
        this.waitingForDrain = false;
        this.ctx.core.setWritable(this.sessionId, true);
      });
    }
  }

  private guard(action: () => void): void {
    try {
      action();
    } catch (err) {
      if (!(err instanceof MpmcError)) {
        this.ctx.logger.error({ err, consumerId: this.consumerId }, "consume request failed");
      }
      this.close(err);
    }
  }

  /** Detaches the session once and ends the stream, with OK or the error's status. */
  private close(err: unknown, reason?: string): void {
    if (this.state === "closed") {
      return;
    }
    const wasAttached = this.state === "attached";
    this.state = "closed";
    this.ctx.openStreams.delete(this.endWith);
    if (wasAttached) {
      const requeued = this.ctx.core.detach(this.sessionId);
      this.ctx.logger.info({ consumerId: this.consumerId, requeued, reason }, "consumer disconnected");
    }
    if (reason !== undefined) {
      return;
    }
    if (err === undefined) {
      this.call.end();
    } else {
      this.call.emit("error", toServiceError(err));
    }
  }
}

/** Maximum processing time an ack may report, in ms, because larger values would overflow the totals. */
const maxProcessingMs = 365 * 86_400_000;

function ackInputOf(field: string, ack: Ack): AckInput {
  const processingMs = msOfDuration(ack.processingDuration);
  if (!(processingMs >= 0 && processingMs <= maxProcessingMs)) {
    throw new MpmcError("invalid_argument", `${field}.processing_duration must be from 0 to ${maxProcessingMs / 86_400_000} days`);
  }
  return {
    jobId: idNumberOf(`${field}.job_id`, ack.jobId),
    token: idNumberOf(`${field}.lease_token`, ack.leaseToken),
    output: ack.output,
    processingMs,
  };
}

function leaseRefOf(field: string, ref: { jobId: bigint; leaseToken: bigint }): LeaseRef {
  return { jobId: idNumberOf(`${field}.job_id`, ref.jobId), token: idNumberOf(`${field}.lease_token`, ref.leaseToken) };
}

export function consumeHandler(ctx: RpcContext): handleBidiStreamingCall<ConsumeRequest, ConsumeResponse> {
  return (call) => new ConsumeStream(ctx, call).start();
}
