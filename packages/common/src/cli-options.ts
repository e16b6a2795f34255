import { Option } from "commander";
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
    new Option("--log-level <level>", "least severe log level written")
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
