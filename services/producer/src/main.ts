import { BrokerService, connectTo, createLogger, stopOnSignals } from "@mpmc/common";
import { runProducerLoop, type Pace, type ProducerLoopReport } from "./producer.js";
import { defaultProducerId, type ProducerSettings } from "./settings.js";

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
  const id = settings.id ?? defaultProducerId();
  const logger = createLogger({ name: "producer", level: settings.logLevel, format: settings.logFormat });
  const client = connectTo(BrokerService, settings.broker);
  const controller = new AbortController();
  const pace = paceOf(settings);
  logger.info({ producerId: id, broker: settings.broker, loops: settings.loops, pace }, "producer starting");
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
    controller.abort();
    await all;
  });
  return all;
}
