import {
  defaultProcessId,
  BrokerService,
  collectDefaultMetrics,
  connectTo,
  createLogger,
  createSessionManager,
  readClientTls,
  Registry,
  serveMetrics,
  stopOnSignals,
} from "@mpmc/common";
import { Consumer, type ConsumerReport } from "./consumer.js";
import { loadHandler, simulatedWork } from "./handler.js";
import { instrumentHandler } from "./metrics.js";
import type { ConsumerSettings } from "./settings.js";

/**
 * Runs a consumer process until the queue drains or SIGTERM stops it. Exits
 * with 0 in both cases, and with 1 when the stream fails.
 */
export async function runConsumer(settings: ConsumerSettings): Promise<ConsumerReport> {
  const id = settings.id || defaultProcessId();
  const logger = createLogger({ name: "consumer", level: settings.logLevel, format: settings.logFormat }).child({ consumerId: id });
  const concurrency = settings.concurrency ?? settings.credit;
  if (concurrency > settings.credit) {
    throw new Error(`--concurrency (${concurrency}) must not exceed --credit (${settings.credit}): a consumer cannot run more jobs than it holds`);
  }
  const handler = settings.handler === undefined ? simulatedWork(settings.workMs) : await loadHandler(settings.handler);
  const tls = readClientTls(settings);
  const connection = createSessionManager(settings.broker, tls);

  const metrics = new Registry();
  metrics.setDefaultLabels({ consumer_id: id });
  collectDefaultMetrics({ register: metrics });

  const consumer = new Consumer(connectTo(BrokerService, settings.broker, tls, connection), {
    id,
    credit: settings.credit,
    concurrency,
    handler: instrumentHandler(handler, metrics),
    queueWarnMs: settings.queueWarn,
    logger,
  });
  logger.info(
    { broker: settings.broker, tls: tls !== undefined, credit: settings.credit, concurrency, handler: settings.handler ?? "simulated" },
    "consumer starting",
  );
  // Ready while a Consume stream is open on a live connection and the consumer still takes jobs.
  const metricsServer = await serveMetrics(settings, metrics, logger, () => consumer.connected && connection.state() === "open");
  const running = consumer.run();
  stopOnSignals(logger, async () => {
    await consumer.stop(settings.shutdownGrace);
    // The broker ends the stream once it has the last results; exiting earlier could lose them.
    await running;
  });
  try {
    return await running;
  } finally {
    await metricsServer?.close();
  }
}
