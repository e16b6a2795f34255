import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";

/** Creates a gRPC transport over HTTP/2 without TLS to "host:port". */
export function createTransport(address: string): Transport {
  return createGrpcTransport({
    baseUrl: `http://${address}`,
    // A ping every 15 s notices a broker that vanished without closing the connection.
    pingIntervalMs: 15_000,
    pingTimeoutMs: 10_000,
    pingIdleConnection: true,
  });
}

/** Creates a typed client for a service at "host:port". */
export function connectTo<T extends DescService>(service: T, address: string): Client<T> {
  return createClient(service, createTransport(address));
}
