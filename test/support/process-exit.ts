import type { CliProcess } from "./processes.js";
import { waitFor } from "./wait.js";

/** Resolves with the exit code or signal, or fails with the process's stderr after timeoutMs. */
export async function exitOf(proc: CliProcess, name: string, timeoutMs = 20_000): Promise<number | NodeJS.Signals> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name} to exit, stderr: ${proc.stderr()}`)), timeoutMs);
  });
  try {
    return await Promise.race([proc.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Kills a process that is still running, and waits for it to exit. It sends
 * SIGCONT first, so a process a test stopped with SIGSTOP ends as well.
 */
export async function killAndWait(proc: CliProcess): Promise<void> {
  if (proc.child.exitCode === null && proc.child.signalCode === null) {
    proc.child.kill("SIGCONT");
    proc.child.kill("SIGKILL");
  }
  await proc.exited;
}

/** Returns the process's first JSON log line with this msg, or undefined when it has not logged one yet. */
export function logLineOf(proc: CliProcess, msg: string): Record<string, unknown> | undefined {
  return proc.logs().find((line) => line["msg"] === msg);
}

/** Waits for a consumer's last log line, which carries its own counts. */
export function finalReportOf(proc: CliProcess, name: string): Promise<Record<string, unknown>> {
  return waitFor(`the final report of ${name}`, () => proc.logs().find((line) => line["msg"] === "consumer stream ended"));
}
