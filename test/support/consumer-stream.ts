import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import {
  ConsumeRequestSchema,
  durationOfMs,
  type BrokerService,
  type ConsumeRequest,
  type ConsumeResponse,
  type Delivery,
  type Rejection,
} from "@mpmc/common";
import type { Client } from "@connectrpc/connect";

/**
 * A consumer driven by the test, request by request, over a real Consume
 * stream. It records what the broker sends and acknowledges nothing by itself.
 */
export class ScriptedConsumer {
  readonly deliveries: Delivery[] = [];
  readonly rejections: Rejection[] = [];
  /** Set when the broker ends the stream: "ok", or the error's message. */
  ended: string | undefined;
  readonly done: Promise<void>;
  private readonly requests = createWritableIterable<ConsumeRequest>();

  constructor(client: Client<typeof BrokerService>, consumerId: string, credit: number) {
    void this.requests.write(create(ConsumeRequestSchema, { kind: { case: "hello", value: { consumerId, credit } } }));
    this.done = this.read(client.consume(this.requests));
  }

  private async read(responses: AsyncIterable<ConsumeResponse>): Promise<void> {
    try {
      for await (const response of responses) {
        switch (response.kind.case) {
          case "deliveries":
            this.deliveries.push(...response.kind.value.deliveries);
            break;
          case "rejections":
            this.rejections.push(...response.kind.value.rejections);
            break;
          case undefined:
            break;
        }
      }
      this.ended = "ok";
    } catch (err) {
      this.ended = err instanceof Error ? err.message : String(err);
    }
  }

  /** Acknowledges deliveries with output = data * 2. */
  ack(deliveries: Delivery[], processingMs = 1): Promise<void> {
    return this.send({
      case: "acks",
      value: {
        acks: deliveries.map((d) => ({
          jobId: d.job?.id ?? 0n,
          leaseToken: d.leaseToken,
          output: (d.job?.data ?? 0n) * 2n,
          processingDuration: durationOfMs(processingMs),
        })),
      },
    });
  }

  send(kind: MessageInitShape<typeof ConsumeRequestSchema>["kind"]): Promise<void> {
    return this.requests.write(create(ConsumeRequestSchema, { kind }));
  }

  /** Ends the consumer's side of the stream. */
  close(): void {
    this.requests.close();
  }
}
