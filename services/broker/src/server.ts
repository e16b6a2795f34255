import { file_mpmc_v1_broker, startGrpcServer, type Logger } from "@mpmc/common";
import { BrokerCore } from "./core/broker-core.js";
import { addBrokerService } from "./rpc/broker-service.js";
import type { RpcContext } from "./rpc/context.js";
import type { BrokerSettings } from "./settings.js";

export interface RunningBroker {
  readonly port: number;
  readonly core: BrokerCore;
  /** Reports NOT_SERVING, lets calls finish for up to the grace period, then cancels the rest. */
  shutdown(graceMs?: number): Promise<void>;
}

export const brokerServiceName = "mpmc.v1.BrokerService";

/** Starts a broker's gRPC server with reflection and health checks. */
export async function startBroker(settings: BrokerSettings, logger: Logger): Promise<RunningBroker> {
  const core = new BrokerCore({ capacity: settings.capacity, leaseMs: settings.leaseTimeout });
  const ctx: RpcContext = {
    core,
    limits: settings,
    logger: logger.child({ component: "rpc" }),
    maxSubscriberBacklog: settings.maxSubscriberBacklog,
  };
  const server = await startGrpcServer({
    host: settings.host,
    port: settings.port,
    maxMessageBytes: settings.maxMessageBytes,
    serviceNames: [brokerServiceName],
    files: [file_mpmc_v1_broker],
    register: (grpcServer) => addBrokerService(grpcServer, ctx),
  });
  logger.info({ host: settings.host, port: server.port, capacity: settings.capacity, leaseTimeoutMs: settings.leaseTimeout }, "broker listening");
  return {
    port: server.port,
    core,
    shutdown: (graceMs = settings.shutdownGrace) => server.shutdown(graceMs),
  };
}
