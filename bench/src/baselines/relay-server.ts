import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import {
  Server,
  ServerCredentials,
  status,
  type handleBidiStreamingCall,
  type handleClientStreamingCall,
  type handleUnaryCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import {
  BrokerService,
  ConsumeResponseSchema,
  DeliverySchema,
  GetProducerCursorResponseSchema,
  PublishResponseSchema,
  durationOfMs,
  grpcServiceDefinition,
  timestampOfMs,
  type ConsumeRequest,
  type ConsumeResponse,
  type GetProducerCursorRequest,
  type GetProducerCursorResponse,
  type PublishRequest,
  type PublishResponse,
} from "@mpmc/common";

/**
 * The relay scenario's baseline: a bare grpc-js stream forwarder with no
 * queue logic. It serves the broker's Publish, Consume and GetProducerCursor
 * methods with the same protobuf-es messages, so the unchanged mpmc producer
 * and consumer processes run against it. Each Publish request's jobs go out
 * at once as one delivery batch to the next Consume stream, round robin. It
 * keeps no queue, leases, credit, results or counters beyond what the
 * benchmark reads: it counts the acks, and when `--count` jobs are acked it sends
 * the benchmark a "done" message over IPC. A receiver whose write buffer is full pauses
 * the Publish stream that wrote to it, so memory stays bounded.
 */

const { values } = parseArgs({
  options: {
    receivers: { type: "string" },
    count: { type: "string" },
  },
});
const expectedReceivers = Number(values.receivers);
const expectedAcks = Number(values.count);
if (!(Number.isInteger(expectedReceivers) && expectedReceivers > 0 && Number.isInteger(expectedAcks) && expectedAcks > 0)) {
  process.stderr.write("relay-server: expected --receivers N and --count N, both positive integers\n");
  process.exit(2);
}

/** The lease length written into deliveries, as the broker's default, so consumers see the same messages. */
const leaseMs = 30_000;

type ConsumeCall = Parameters<handleBidiStreamingCall<ConsumeRequest, ConsumeResponse>>[0];

const receivers: ConsumeCall[] = [];
let nextReceiver = 0;
let nextJobId = 1;
let received = 0;
let acked = 0;
let doneSent = false;

const getProducerCursor: handleUnaryCall<GetProducerCursorRequest, GetProducerCursorResponse> = (_call, callback) => {
  callback(null, create(GetProducerCursorResponseSchema, { lastSequence: 0n }));
};

const publish: handleClientStreamingCall<PublishRequest, PublishResponse> = (call, callback) => {
  const response = create(PublishResponseSchema, {});
  call.on("data", (request: PublishRequest) => {
    if (received === 0) {
      process.send?.({ type: "first" });
    }
    const receiver = receivers[nextReceiver++ % receivers.length];
    if (receiver === undefined) {
      // The benchmark starts producers only after every consumer has connected, so this is a setup error.
      callback({ code: status.UNAVAILABLE, details: "no consumer is connected to the relay" });
      call.destroy();
      return;
    }
    const now = Date.now();
    const deliveries = request.jobs.map((spec) => {
      const id = BigInt(nextJobId++);
      return create(DeliverySchema, {
        job: {
          id,
          producerId: request.producerId,
          data: spec.data,
          payload: spec.payload,
          attributes: spec.attributes,
          createdAt: timestampOfMs(now),
          attempt: 1,
          sequence: spec.sequence,
        },
        leaseToken: id,
        leaseDeadline: timestampOfMs(now + leaseMs),
        queueWait: durationOfMs(0),
      });
    });
    received += deliveries.length;
    if (response.firstJobId === 0n) {
      response.firstJobId = deliveries[0]?.leaseToken ?? 0n;
    }
    response.lastJobId = deliveries[deliveries.length - 1]?.leaseToken ?? response.lastJobId;
    response.accepted += BigInt(deliveries.length);
    const writable = receiver.write(create(ConsumeResponseSchema, { kind: { case: "deliveries", value: { deliveries } } }));
    if (!writable) {
      call.pause();
      receiver.once("drain", () => call.resume());
    }
  });
  call.on("end", () => callback(null, response));
  call.on("error", () => {});
};

const consume: handleBidiStreamingCall<ConsumeRequest, ConsumeResponse> = (call) => {
  const detach = (): void => {
    const index = receivers.indexOf(call);
    if (index >= 0) {
      receivers.splice(index, 1);
    }
  };
  call.on("data", (request: ConsumeRequest) => {
    switch (request.kind.case) {
      case "hello":
        receivers.push(call);
        if (receivers.length === expectedReceivers) {
          process.send?.({ type: "ready" });
        }
        return;
      case "acks":
        acked += request.kind.value.acks.length;
        if (acked >= expectedAcks && !doneSent) {
          doneSent = true;
          process.send?.({ type: "done", acked, received });
        }
        return;
      default:
        // Stop, release, nack and extend need queue logic, which the relay does not have.
        return;
    }
  });
  call.on("end", () => {
    detach();
    call.end();
  });
  call.on("cancelled", detach);
  call.on("error", detach);
};

const progress = setInterval(() => process.send?.({ type: "progress", received, acked }), 500);
progress.unref();

const server = new Server();
const implementation: UntypedServiceImplementation = { getProducerCursor, publish, consume };
server.addService(grpcServiceDefinition(BrokerService), implementation);
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => {
  if (err !== null) {
    process.stderr.write(`relay-server: cannot listen on 127.0.0.1: ${err.message}\n`);
    process.exit(1);
  }
  process.send?.({ type: "listening", port });
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    server.forceShutdown();
    process.exit(0);
  });
}
process.on("disconnect", () => process.exit(0));
