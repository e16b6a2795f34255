import { createWriteStream, type WriteStream } from "node:fs";
import { once } from "node:events";
import { create, toJsonString } from "@bufbuild/protobuf";
import {
  AggregatorService,
  BrokerService,
  GetSummaryResponseSchema,
  ResultSchema,
  addGrpcService,
  collectDefaultMetrics,
  connectTo,
  createLogger,
  file_mpmc_v1_aggregator,
  notifyParent,
  readClientTls,
  readServerTls,
  Registry,
  serveMetrics,
  startGrpcServer,
  stopOnSignals,
  type RunningMetricsServer,
} from "@mpmc/common";
import { Aggregation } from "./aggregation.js";
import { registerAggregatorMetrics } from "./metrics.js";
import type { AggregatorSettings } from "./settings.js";
import { followResults } from "./subscriber.js";

export const aggregatorServiceName = "mpmc.v1.AggregatorService";

/**
 * Runs an aggregator process: it follows the broker's results and serves
 * GetSummary until SIGTERM, also after the broker has drained, so the final
 * totals stay readable.
 */
export async function runAggregator(settings: AggregatorSettings): Promise<void> {
  const logger = createLogger({ name: "aggregator", level: settings.logLevel, format: settings.logFormat });
  const serverTls = readServerTls(settings);
  const clientTls = readClientTls(settings);
  const aggregation = new Aggregation();
  const server = await startGrpcServer({
    host: settings.host,
    port: settings.port,
    maxMessageBytes: 65_536,
    serviceNames: [aggregatorServiceName],
    files: [file_mpmc_v1_aggregator],
    register: (grpcServer) =>
      addGrpcService(grpcServer, AggregatorService, {
        getSummary: (_call, callback) => callback(null, create(GetSummaryResponseSchema, { summary: aggregation.summary() })),
      }),
    tls: serverTls,
  });
  logger.info({ port: server.port, broker: settings.broker, tls: serverTls !== undefined, brokerTls: clientTls !== undefined }, "aggregator listening");

  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics });
  registerAggregatorMetrics(metrics, aggregation);
  let metricsServer: RunningMetricsServer | undefined;
  try {
    metricsServer = await serveMetrics(settings, metrics, logger, () => server.servingStatus() === "SERVING");
  } catch (err) {
    await server.shutdown(0);
    throw err;
  }
  notifyParent({ type: "listening", port: server.port });

  const resultsFile: WriteStream | undefined =
    settings.resultsFile === undefined ? undefined : createWriteStream(settings.resultsFile, { flags: "w" });
  let resultsFileClosed: Promise<void> | undefined;
  const closeResultsFile = (): Promise<void> => {
    resultsFileClosed ??= resultsFile === undefined ? Promise.resolve() : new Promise<void>((resolve) => resultsFile.end(resolve));
    return resultsFileClosed;
  };

  const controller = new AbortController();
  stopOnSignals(logger, async () => {
    controller.abort();
    await server.shutdown(settings.shutdownGrace);
    await metricsServer?.close();
    // The process exits right after this, so the last results must be on disk first.
    await closeResultsFile();
  });

  await followResults(
    connectTo(BrokerService, settings.broker, clientTls),
    aggregation,
    {
      subscriberId: `aggregator-${process.pid}`,
      progressEvery: settings.progressEvery,
      logger,
      onResult: resultsFile && ((result) => resultsFile.write(toJsonString(ResultSchema, result) + "\n")),
    },
    controller.signal,
  );
  await closeResultsFile();
  if (aggregation.finished) {
    logger.info(
      {
        results: aggregation.results,
        averageProcessingMs: Math.round(aggregation.averageProcessingMs * 100) / 100,
        duplicateResults: aggregation.duplicateResults,
        perConsumer: Object.fromEntries(aggregation.perConsumer().map((c) => [c.consumerId, c.results])),
      },
      "aggregator finished",
    );
    notifyParent({ type: "finished" });
  }
}
