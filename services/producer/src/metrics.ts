import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { Counter, type BrokerService, type PublishRequestSchema, type Registry } from "@mpmc/common";

type BrokerClient = Client<typeof BrokerService>;
type PublishRequestInit = MessageInitShape<typeof PublishRequestSchema>;

/**
 * Registers the producer's metrics and returns the client with Publish
 * wrapped to count jobs per producer id. A job counts as sent when the stream
 * takes its request, and as accepted when the broker's response counts it at
 * the end of the stream.
 */
export function instrumentPublish(client: BrokerClient, registry: Registry): BrokerClient {
  const sent = new Counter({
    name: "mpmc_producer_jobs_sent_total",
    help: "Jobs written to Publish streams, whether or not the broker has accepted them yet.",
    labelNames: ["producer_id"],
    registers: [registry],
  });
  const accepted = new Counter({
    name: "mpmc_producer_jobs_accepted_total",
    help: "Jobs the broker accepted, counted when each Publish stream ends.",
    labelNames: ["producer_id"],
    registers: [registry],
  });

  const publish: BrokerClient["publish"] = async (requests, options) => {
    let producerId = "";
    async function* counted(): AsyncGenerator<PublishRequestInit> {
      for await (const request of requests) {
        producerId = request.producerId ?? "";
        sent.inc({ producer_id: producerId }, request.jobs?.length ?? 0);
        yield request;
      }
    }
    const response = await client.publish(counted(), options);
    accepted.inc({ producer_id: producerId }, Number(response.accepted));
    return response;
  };
  return { ...client, publish };
}
