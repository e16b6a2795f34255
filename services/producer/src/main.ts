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
import { instrumentPublish } from "./metrics.js";
import { runProducerLoop, type Pace, type ProducerLoopReport } from "./producer.js";
import type { ProducerSettings } from "./settings.js";

export function paceOf(settings: ProducerSettings): Pace {
  if (settings.count !== undefined) {
    return { kind: "fixed-count", count: settings.count };
  }
  if (settings.rate !== undefined) {
    return { kind: "fixed-rate", jobsPerSecond: settings.rate, durationMs: settings.duration };
  }
  return { kind: "random-pause", pauseMs: settings.pauseMs, durationMs: settings.duration };
}

/** Runs the producer loops of one process. SIGTERM ends them early; what was sent still counts. */
export async function runProducer(settings: ProducerSettings): Promise<ProducerLoopReport[]> {
  const id = settings.id ?? defaultProcessId();
  const logger = createLogger({ name: "producer", level: settings.logLevel, format: settings.logFormat });
  const tls = readClientTls(settings);
  const connection = createSessionManager(settings.broker, tls);

  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics });
  // Ready while the connection to the broker is up and the loops still produce.
  let producing = true;
  const metricsServer = await serveMetrics(settings, metrics, logger, () => {
    const state = connection.state();
    return producing && (state === "open" || state === "idle");
  });

  const client = instrumentPublish(connectTo(BrokerService, settings.broker, tls, connection), metrics);
  const controller = new AbortController();
  const pace = paceOf(settings);
  logger.info({ producerId: id, broker: settings.broker, tls: tls !== undefined, loops: settings.loops, pace }, "producer starting");
  const loops = Array.from({ length: settings.loops }, (_, i) =>
    runProducerLoop(
      client,
      {
        producerId: settings.loops === 1 ? id : `${id}-${i + 1}`,
        pace,
        batchSize: settings.batchSize,
        payloadBytes: settings.payloadBytes,
        logger: logger.child({ producerId: settings.loops === 1 ? id : `${id}-${i + 1}` }),
      },
      controller.signal,
    ),
  );
  const all = Promise.all(loops);
  stopOnSignals(logger, async () => {
    producing = false;
    controller.abort();
    await all;
  });
  try {
    return await all;
  } finally {
    producing = false;
    await metricsServer?.close();
  }
}
