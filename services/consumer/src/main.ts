import { BrokerService, connectTo, createLogger, stopOnSignals } from "@mpmc/common";
import { Consumer, type ConsumerReport } from "./consumer.js";
import { loadHandler, simulatedWork } from "./handler.js";
import { defaultConsumerId, type ConsumerSettings } from "./settings.js";

/**
 * Runs a consumer process until the queue drains or SIGTERM stops it. Exits
 * with 0 in both cases, and with 1 when the stream fails.
 */
export async function runConsumer(settings: ConsumerSettings): Promise<ConsumerReport> {
  const id = settings.id || defaultConsumerId();
  const logger = createLogger({ name: "consumer", level: settings.logLevel, format: settings.logFormat }).child({ consumerId: id });
  const handler = settings.handler === undefined ? simulatedWork(settings.workMs) : await loadHandler(settings.handler);
  const consumer = new Consumer(connectTo(BrokerService, settings.broker), {
    id,
    credit: settings.credit,
    handler,
    queueWarnMs: settings.queueWarn,
    logger,
  });
  logger.info({ broker: settings.broker, credit: settings.credit, handler: settings.handler ?? "simulated" }, "consumer starting");
  const running = consumer.run();
  stopOnSignals(logger, async () => {
    await consumer.stop(settings.shutdownGrace);
    // The broker ends the stream once it has the last results; exiting earlier could lose them.
    await running;
  });
  return running;
}
