import {
  collectDefaultMetrics,
  createLogger,
  notifyParent,
  serveMetrics,
  stopOnSignals,
  type RunningMetricsServer,
} from "@mpmc/common";
import { startBroker, type RunningBroker } from "./server.js";
import type { BrokerSettings } from "./settings.js";

/** Runs a broker process until SIGTERM or SIGINT. */
export async function runBroker(settings: BrokerSettings): Promise<void> {
  const logger = createLogger({ name: "broker", level: settings.logLevel, format: settings.logFormat });
  let metricsServer: RunningMetricsServer | undefined;
  const started = (async (): Promise<RunningBroker> => {
    const broker = await startBroker(settings, logger);
    collectDefaultMetrics({ register: broker.metrics });
    try {
      metricsServer = await serveMetrics(settings, broker.metrics, logger, () => broker.isServing());
    } catch (err) {
      await broker.shutdown(0);
      throw err;
    }
    return broker;
  })();

  // Registered before the broker starts, so that a signal during startup, when loading a large
  // store can take seconds, waits for it and then stops cleanly instead of killing the process.
  stopOnSignals(logger, async () => {
    const broker = await started.catch(() => undefined);
    if (broker === undefined) {
      return;
    }
    logger.info({ graceMs: settings.shutdownGrace }, "shutting down: health checks report NOT_SERVING and new calls are rejected");
    await broker.shutdown();
    // Closed last, so /readyz reports 503 to probes while calls finish.
    await metricsServer?.close();
    logger.info({ stats: { created: broker.core.snapshot().created, processed: broker.core.snapshot().processed } }, "broker stopped");
  });

  const broker = await started;
  notifyParent({ type: "listening", port: broker.port });
}
