import type { Logger } from "pino";

/** A message a service process sends to the parent that forked it. */
export type ChildMessage =
  | { type: "listening"; port: number }
  | { type: "finished"; summary?: unknown };

/** Tells a parent that forked this process with an IPC channel; does nothing otherwise. */
export function notifyParent(message: ChildMessage): void {
  process.send?.(message);
}

/**
 * Runs stop() on the first SIGTERM or SIGINT, then exits with 0, or with 1 if
 * stop() fails. A second signal exits at once with 130, for a user who presses
 * Ctrl-C twice.
 */
export function stopOnSignals(logger: Logger, stop: (signal: NodeJS.Signals) => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, "second signal, exiting at once");
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, "stopping");
    stop(signal).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "stop failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}
