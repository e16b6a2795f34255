import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "pino";

/** The --metrics-port value that turns the metrics server off. */
export const metricsDisabledPort = -1;

export interface MetricsSettings {
  /** TCP port of the metrics server. 0 picks a free one, and metricsDisabledPort turns the server off. */
  metricsPort: number;
  metricsHost: string;
}

export interface MetricsServerOptions {
  host: string;
  /** TCP port, or 0 for a free one. */
  port: number;
  registry: Registry;
  /** Readiness check behind /readyz, which returns 200 when it returns true and 503 otherwise. Without it, /readyz returns 200. */
  ready?: () => boolean;
  logger: Logger;
}

export interface RunningMetricsServer {
  readonly port: number;
  /** Stops listening and closes open connections, including idle keep-alive ones. */
  close(): Promise<void>;
}

/**
 * Starts an HTTP server for Prometheus and for orchestrators' probes:
 * GET /metrics returns the registry in the Prometheus text format, /healthz
 * returns 200 while the process runs, and /readyz returns 200 or 503 from
 * options.ready.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<RunningMetricsServer> {
  const server = createServer((request, response) => {
    handleRequest(options, request, response).catch((err: unknown) => {
      options.logger.error({ err, path: request.url }, "metrics request failed");
      if (!response.headersSent) {
        reply(response, 500, "text/plain; charset=utf-8", "internal error\n");
      } else {
        response.destroy();
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      reject(
        new Error(
          `cannot serve metrics on ${options.host}:${options.port}: ${err.message}; ` +
            "set --metrics-port (MPMC_METRICS_PORT) to a free port, 0 for any free port, or -1 to turn metrics off",
          { cause: err },
        ),
      );
    });
    server.listen(options.port, options.host, () => resolve());
  });
  server.on("error", (err) => options.logger.error({ err }, "metrics server failed"));

  let closing: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Prometheus keeps its connection open between scrapes, and close() alone would wait for it to end.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/**
 * Starts the metrics server unless settings.metricsPort is metricsDisabledPort,
 * and logs where it listens. Returns undefined when metrics are turned off.
 */
export async function serveMetrics(
  settings: MetricsSettings,
  registry: Registry,
  logger: Logger,
  ready?: () => boolean,
): Promise<RunningMetricsServer | undefined> {
  if (settings.metricsPort === metricsDisabledPort) {
    logger.info("metrics server turned off (--metrics-port -1)");
    return undefined;
  }
  const server = await startMetricsServer({ host: settings.metricsHost, port: settings.metricsPort, registry, ready, logger });
  logger.info({ metricsHost: settings.metricsHost, metricsPort: server.port }, "metrics listening");
  return server;
}

async function handleRequest(options: MetricsServerOptions, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const path = (request.url ?? "/").split("?", 1)[0];
  if (path !== "/metrics" && path !== "/healthz" && path !== "/readyz") {
    reply(response, 404, "text/plain; charset=utf-8", "not found: the paths are /metrics, /healthz and /readyz\n");
    return;
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.setHeader("Allow", "GET, HEAD");
    reply(response, 405, "text/plain; charset=utf-8", `method ${request.method} not allowed: use GET or HEAD\n`);
    return;
  }
  switch (path) {
    case "/metrics":
      reply(response, 200, options.registry.contentType, await options.registry.metrics());
      return;
    case "/healthz":
      reply(response, 200, "text/plain; charset=utf-8", "ok\n");
      return;
    case "/readyz": {
      const ready = options.ready?.() ?? true;
      reply(response, ready ? 200 : 503, "text/plain; charset=utf-8", ready ? "ready\n" : "not ready\n");
      return;
    }
  }
}

function reply(response: ServerResponse, status: number, contentType: string, body: string): void {
  response.writeHead(status, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
  // HEAD gets the headers only; ServerResponse drops the body of a HEAD response by itself.
  response.end(body);
}
