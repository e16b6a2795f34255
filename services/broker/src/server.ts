import { file_mpmc_v1_broker, MpmcError, readServerTls, Registry, startGrpcServer, type Logger, type RunningGrpcServer } from "@mpmc/common";
import { BrokerCore } from "./core/broker-core.js";
import { SqliteStore } from "./storage/sqlite-store.js";
import { MemoryStore, type BrokerStore } from "./storage/store.js";
import { registerBrokerMetrics } from "./metrics.js";
import { addBrokerService } from "./rpc/broker-service.js";
import type { RpcContext } from "./rpc/context.js";
import type { BrokerSettings } from "./settings.js";

export interface RunningBroker {
  readonly port: number;
  readonly core: BrokerCore;
  /** The broker's Prometheus metrics. The caller serves them and may add process metrics. */
  readonly metrics: Registry;
  /** True while health checks report SERVING: until the queue has drained or shutdown has begun. */
  isServing(): boolean;
  /** Reports NOT_SERVING, lets calls finish for up to the grace period, then cancels the rest. */
  shutdown(graceMs?: number): Promise<void>;
}

export const brokerServiceName = "mpmc.v1.BrokerService";

/** Starts a broker's gRPC server with reflection and health checks. */
export async function startBroker(settings: BrokerSettings, logger: Logger): Promise<RunningBroker> {
  const tls = readServerTls(settings);
  const store = openStore(settings, logger);
  const durable = settings.dataDir !== undefined;
  const core = new BrokerCore({
    capacity: settings.capacity,
    leaseMs: settings.leaseTimeout,
    maxAttempts: settings.maxAttempts,
    retryBackoff: settings.retryBackoff,
    resultWindow: settings.resultWindow,
    journal: durable ? (entry) => store.append(entry) : undefined,
  });
  if (durable) {
    const recovered = store.load();
    core.restore(recovered);
    store.setCountersSource(() => core.persistentCounters());
    const stats = core.snapshot();
    logger.info(
      {
        dataDir: settings.dataDir,
        fsync: settings.fsync,
        queued: stats.queued,
        returnedFromFlight: recovered.inFlight.length,
        waitingRetry: stats.waitingRetry,
        deadLetters: stats.deadLetters,
        created: stats.created,
        processed: stats.processed,
      },
      "store loaded",
    );
  }
  const ctx: RpcContext = {
    core,
    store,
    limits: settings,
    logger: logger.child({ component: "rpc" }),
    resultWindow: settings.resultWindow,
    openStreams: new Set(),
  };

  // The metrics observe every result batch, and the drain turns health to NOT_SERVING.
  const metrics = new Registry();
  const brokerMetrics = registerBrokerMetrics(metrics, () => core.snapshot());
  let server: RunningGrpcServer | undefined;
  core.observe({
    results: (batch) => brokerMetrics.observeResults(batch),
    finish: () => {
      logger.info("queue drained, health checks report NOT_SERVING");
      server?.setServing("NOT_SERVING");
    },
  });

  server = await startGrpcServer({
    host: settings.host,
    port: settings.port,
    maxMessageBytes: settings.maxMessageBytes,
    serviceNames: [brokerServiceName],
    files: [file_mpmc_v1_broker],
    register: (grpcServer) => addBrokerService(grpcServer, ctx, { adminToken: settings.adminToken }),
    tls,
  });
  const running = server;
  let shutdownPromise: Promise<void> | undefined;
  let tlsMode = "off";
  if (tls !== undefined) {
    tlsMode = tls.clientCa === undefined ? "on" : "mutual";
  }
  logger.info(
    {
      host: settings.host,
      port: running.port,
      capacity: settings.capacity,
      leaseTimeoutMs: settings.leaseTimeout,
      tls: tlsMode,
      adminToken: settings.adminToken === undefined ? "off" : "required for operator calls",
    },
    "broker listening",
  );
  return {
    port: running.port,
    core,
    metrics,
    isServing: () => running.servingStatus() === "SERVING",
    shutdown: (graceMs = settings.shutdownGrace) => {
      shutdownPromise ??= shutDown(graceMs);
      return shutdownPromise;
    },
  };

  /**
   * Stops the broker without losing jobs where it can: new jobs are refused
   * with UNAVAILABLE, consumers drain what is queued and in flight for up to
   * the grace period, then the remaining streams end with UNAVAILABLE so that
   * clients reconnect to the broker that replaces this one. With --data-dir,
   * what is left stays in the store for it.
   */
  async function shutDown(graceMs: number): Promise<void> {
    const started = Date.now();
    running.setServing("NOT_SERVING");
    core.beginShutdown();
    // Without consumers nothing would drain, so there is nothing to wait for.
    if (!core.idle && core.snapshot().consumersConnected > 0) {
      logger.info({ queued: core.queued, inFlight: core.inFlight, graceMs }, "shutting down: letting consumers drain the queue");
      await waitUntilIdle(core, graceMs);
    }
    const left = { queued: core.queued, inFlight: core.inFlight, waitingRetry: core.snapshot().waitingRetry };
    if (left.queued > 0 || left.inFlight > 0 || left.waitingRetry > 0) {
      logger.warn({ ...left, durable }, durable ? "shutting down with jobs left; they stay in the store" : "shutting down with jobs left; they are lost");
    }
    const unavailable = new MpmcError("unavailable", "the broker is shutting down; connect again");
    for (const endStream of [...ctx.openStreams]) {
      endStream(unavailable);
    }
    await running.shutdown(Math.max(1_000, graceMs - (Date.now() - started)));
    await store.close();
  }
}

/** Resolves once nothing is queued or in flight, or after timeoutMs. */
function waitUntilIdle(core: BrokerCore, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      unsubscribe();
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    const unsubscribe = core.onChange(() => {
      if (core.idle) {
        done();
      }
    });
  });
}

/** Opens the durable store in --data-dir, or the in-memory one without it. */
function openStore(settings: BrokerSettings, logger: Logger): BrokerStore {
  if (settings.dataDir === undefined) {
    return new MemoryStore();
  }
  return new SqliteStore({
    dataDir: settings.dataDir,
    fsync: settings.fsync,
    commitIntervalMs: settings.commitInterval,
    resultWindow: settings.resultWindow,
    maxBytes: settings.maxStoreBytes,
    logger: logger.child({ component: "store" }),
  });
}
