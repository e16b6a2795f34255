import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import type { ClientTls } from "../tls.js";

// A ping every 15 s notices a broker that vanished without closing the connection.
const pingOptions = {
  pingIntervalMs: 15_000,
  pingTimeoutMs: 10_000,
  pingIdleConnection: true,
};

/**
 * Creates the HTTP/2 connection of a client to "host:port": TLS when tls is
 * set, plaintext otherwise. A readiness check reads its state() to learn
 * whether the connection is up.
 */
export function createSessionManager(address: string, tls?: ClientTls): Http2SessionManager {
  if (tls === undefined) {
    return new Http2SessionManager(`http://${address}`, pingOptions);
  }
  return new Http2SessionManager(`https://${address}`, pingOptions, { ca: tls.ca, cert: tls.cert, key: tls.key });
}

/**
 * Creates a gRPC transport over HTTP/2 to "host:port": TLS when tls is set,
 * plaintext otherwise. A caller that passes its own sessionManager must have
 * created it with createSessionManager for the same address and tls.
 */
export function createTransport(
  address: string,
  tls?: ClientTls,
  sessionManager: Http2SessionManager = createSessionManager(address, tls),
): Transport {
  return createGrpcTransport({
    baseUrl: `${tls === undefined ? "http" : "https"}://${address}`,
    sessionManager,
  });
}

/** Creates a typed client for a service at "host:port", over TLS when tls is set. */
export function connectTo<T extends DescService>(
  service: T,
  address: string,
  tls?: ClientTls,
  sessionManager?: Http2SessionManager,
): Client<T> {
  return createClient(service, createTransport(address, tls, sessionManager));
}
