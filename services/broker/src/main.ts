import {
  collectDefaultMetrics,
  createLogger,
  notifyParent,
  serveMetrics,
  stopOnSignals,
  type RunningMetricsServer,
} from "@mpmc/common";
import { startBroker } from "./server.js";
import type { BrokerSettings } from "./settings.js";

/** Runs a broker process until SIGTERM or SIGINT. */
export async function runBroker(settings: BrokerSettings): Promise<void> {
  const logger = createLogger({ name: "broker", level: settings.logLevel, format: settings.logFormat });
  const broker = await startBroker(settings, logger);
  collectDefaultMetrics({ register: broker.metrics });
  let metricsServer: RunningMetricsServer | undefined;
  try {
    metricsServer = await serveMetrics(settings, broker.metrics, logger, () => broker.isServing());
  } catch (err) {
    await broker.shutdown(0);
    throw err;
  }
  notifyParent({ type: "listening", port: broker.port });
  stopOnSignals(logger, async () => {
    logger.info({ graceMs: settings.shutdownGrace }, "shutting down: health checks report NOT_SERVING and new calls are rejected");
    await broker.shutdown();
    // Closed last, so /readyz reports 503 to probes while calls finish.
    await metricsServer?.close();
    logger.info({ stats: { created: broker.core.snapshot().created, processed: broker.core.snapshot().processed } }, "broker stopped");
  });
}
