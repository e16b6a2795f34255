import { pino, type Logger, type LevelWithSilent } from "pino";
import pretty from "pino-pretty";

export type { Logger } from "pino";

export type LogFormat = "json" | "pretty";

export interface LoggerOptions {
  /** Names the service or command in every line, e.g. "broker". */
  name: string;
  level: LevelWithSilent;
  format: LogFormat;
  /** Output file descriptor: 1 for stdout (services), 2 for stderr (commands that print results). */
  fd?: 1 | 2;
}

/** Creates the root logger of a process. Components take child loggers from it. */
export function createLogger(options: LoggerOptions): Logger {
  const fd = options.fd ?? 1;
  const base = { name: options.name, level: options.level };
  if (options.format === "pretty") {
    const stream = fd === 1 ? process.stdout : process.stderr;
    // A synchronous stream in-process, so no worker thread is started and no line is lost on exit.
    return pino(base, pretty({ sync: true, destination: fd, colorize: stream.isTTY === true }));
  }
  return pino(base, pino.destination({ fd, sync: true }));
}
