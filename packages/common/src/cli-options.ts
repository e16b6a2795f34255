import { InvalidArgumentError, Option } from "commander";
import type { LevelWithSilent } from "pino";
import type { LogFormat } from "./logger.js";
import { durationIn, integerIn, parseAddress } from "./settings.js";

/** Options that several commands share, each with its environment variable. */

export interface LogSettings {
  logLevel: LevelWithSilent;
  logFormat: LogFormat;
}

export function logOptions(): Option[] {
  return [
    new Option("--log-level <level>", "minimum level of the log lines written")
      .choices(["trace", "debug", "info", "warn", "error", "fatal", "silent"])
      .env("LOG_LEVEL")
      .default("info"),
    new Option("--log-format <format>", "json for machines, pretty for people")
      .choices(["json", "pretty"])
      .env("LOG_FORMAT")
      .default("json"),
  ];
}

export function brokerAddressOption(): Option {
  return new Option("--broker <host:port>", "broker address to connect to")
    .env("MPMC_BROKER")
    .default("127.0.0.1:50051")
    .argParser(parseAddress);
}

export function listenOptions(defaultPort: number): Option[] {
  return [
    new Option("--port <port>", "TCP port to listen on; 0 picks a free port")
      .env("MPMC_PORT")
      .default(defaultPort)
      .argParser(integerIn(0, 65_535)),
    new Option("--host <address>", "interface to listen on").env("MPMC_HOST").default("0.0.0.0"),
  ];
}

export function shutdownGraceOption(): Option {
  return new Option("--shutdown-grace <time>", "how long calls may run after SIGTERM before they are cancelled, e.g. 10s")
    .env("MPMC_SHUTDOWN_GRACE")
    .default(10_000, "10s")
    .argParser(durationIn(0, 3_600_000));
}

/**
 * --metrics-port and --metrics-host of a service's Prometheus endpoint.
 * -1 turns the endpoint off.
 */
export function metricsOptions(defaultPort: number): Option[] {
  return [
    new Option("--metrics-port <port>", "HTTP port for /metrics, /healthz and /readyz; 0 picks a free port, -1 turns metrics off")
      .env("MPMC_METRICS_PORT")
      .default(defaultPort)
      .argParser(parseMetricsPort),
    new Option("--metrics-host <address>", "interface the metrics server listens on").env("MPMC_METRICS_HOST").default("0.0.0.0"),
  ];
}

function parseMetricsPort(value: string): number {
  const parsed = Number(value.trim());
  if (!Number.isInteger(parsed) || parsed < -1 || parsed > 65_535) {
    throw new InvalidArgumentError("expected a port from 0 to 65535 (0 picks a free port), or -1 to turn metrics off");
  }
  return parsed;
}

/**
 * TLS flags of a gRPC server (--tls-cert, --tls-key, --tls-client-ca) and of
 * a gRPC client (--tls-ca, --tls-cert, --tls-key). A process that is both,
 * like the aggregator, presents one certificate to its clients and to the broker.
 */
export function tlsOptions(roles: { server: boolean; client: boolean }): Option[] {
  let presentedTo = "to the broker, for mutual TLS";
  if (roles.server) {
    presentedTo = roles.client ? "to clients and to the broker" : "to clients";
  }
  const options = [
    new Option("--tls-cert <file>", `PEM certificate chain presented ${presentedTo}; set with --tls-key`).env("MPMC_TLS_CERT"),
    new Option("--tls-key <file>", "PEM private key of --tls-cert").env("MPMC_TLS_KEY"),
  ];
  if (roles.server) {
    options.push(
      new Option("--tls-client-ca <file>", "PEM CA bundle; clients must present a certificate signed by it (mutual TLS)").env(
        "MPMC_TLS_CLIENT_CA",
      ),
    );
  }
  if (roles.client) {
    options.push(
      new Option("--tls-ca <file>", "PEM CA bundle trusted for the broker's certificate; any TLS flag makes the client dial with TLS").env(
        "MPMC_TLS_CA",
      ),
    );
  }
  return options;
}

/** --admin-token: the bearer token of operator RPCs such as CloseQueue. */
export function adminTokenOption(description: string): Option {
  return new Option("--admin-token <token>", description).env("MPMC_ADMIN_TOKEN").argParser(parseAdminToken);
}

function parseAdminToken(value: string): string {
  if (!/^[\x21-\x7e]{1,4096}$/.test(value)) {
    throw new InvalidArgumentError("expected 1 to 4096 printable ASCII characters without spaces");
  }
  return value;
}
