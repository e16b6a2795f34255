import { createLogger, notifyParent, stopOnSignals } from "@mpmc/common";
import { startBroker } from "./server.js";
import type { BrokerSettings } from "./settings.js";

/** Runs a broker process until SIGTERM or SIGINT. */
export async function runBroker(settings: BrokerSettings): Promise<void> {
  const logger = createLogger({ name: "broker", level: settings.logLevel, format: settings.logFormat });
  const broker = await startBroker(settings, logger);
  notifyParent({ type: "listening", port: broker.port });
  stopOnSignals(logger, async () => {
    await broker.shutdown();
    logger.info({ stats: { created: broker.core.snapshot().created, processed: broker.core.snapshot().processed } }, "broker stopped");
  });
}
