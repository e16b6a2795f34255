import type { DescFile } from "@bufbuild/protobuf";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import type { ServerTls } from "../tls.js";
import { MpmcError } from "../errors.js";
import { addReflection } from "./reflection.js";

export interface GrpcServerOptions {
  /** Interface to listen on, e.g. "127.0.0.1" or "0.0.0.0". */
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Largest request message the server accepts, in bytes; larger ones get RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /** Fully qualified names of the services on this server, for health checks. */
  serviceNames: readonly string[];
  /** Files whose services the server exposes, for reflection. */
  files: readonly DescFile[];
  /** Registers the application services. */
  register: (server: Server) => void;
  /** Serves TLS with this certificate, and mutual TLS when it has a client CA; plaintext when unset. */
  tls?: ServerTls;
}

export interface RunningGrpcServer {
  readonly server: Server;
  readonly port: number;
  /** Sets the health of the whole server ("") and of every service on it. */
  setServing(status: ServingStatus): void;
  /** The health last set with setServing, or by shutdown. */
  servingStatus(): ServingStatus;
  /**
   * Stops accepting calls and waits for running calls to finish, then cancels
   * those still running after graceMs. Calling it again returns the same promise.
   */
  shutdown(graceMs: number): Promise<void>;
}

/**
 * Keepalive pings find a vanished peer (a crashed host, a cut network) whose
 * connection the kernel never closes. Values in milliseconds.
 */
const keepaliveOptions = {
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  // Clients ping every 15 s; accept that rather than closing their connections.
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
};

/** Starts a gRPC server with reflection and grpc.health.v1 beside the application services. */
export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const server = new Server({
    ...keepaliveOptions,
    "grpc.max_receive_message_length": options.maxMessageBytes,
  });
  options.register(server);

  const health = new HealthImplementation({ "": "NOT_SERVING" });
  health.addToServer(server);
  addReflection(server, options.files);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${options.host}:${options.port}`, credentialsOf(options.tls), (err, boundPort) => {
      if (err) {
        const inUse = err.message.includes("EADDRINUSE");
        const hint = inUse ? "the port is in use: choose another --port, or 0 for a free one" : err.message;
        reject(new MpmcError("unavailable", `cannot listen on ${options.host}:${options.port}: ${hint}`, { cause: err }));
      } else {
        resolve(boundPort);
      }
    });
  });

  let current: ServingStatus = "NOT_SERVING";
  const setServing = (status: ServingStatus): void => {
    current = status;
    health.setStatus("", status);
    for (const name of options.serviceNames) {
      health.setStatus(name, status);
    }
  };
  setServing("SERVING");

  let shutdownPromise: Promise<void> | undefined;
  const shutdown = (graceMs: number): Promise<void> => {
    shutdownPromise ??= new Promise<void>((resolve) => {
      setServing("NOT_SERVING");
      // forceShutdown destroys the sessions, but tryShutdown calls back only once
      // every server and session reports closed, so resolve here too rather than hang.
      const force = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
      force.unref();
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    return shutdownPromise;
  };

  return { server, port, setServing, servingStatus: () => current, shutdown };
}

function credentialsOf(tls: ServerTls | undefined): ServerCredentials {
  if (tls === undefined) {
    return ServerCredentials.createInsecure();
  }
  // With a client CA, grpc-js rejects the handshake of a client without a certificate signed by it.
  return ServerCredentials.createSsl(tls.clientCa ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], tls.clientCa !== undefined);
}
