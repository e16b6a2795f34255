import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The built command line, as `npx mpmc` runs it. */
export const cliEntry = fileURLToPath(new URL("../../packages/cli/dist/main.js", import.meta.url));

export interface CliProcess {
  readonly child: ChildProcess;
  /** Resolves with the exit code, or the signal name when a signal ended the process. */
  readonly exited: Promise<number | NodeJS.Signals>;
  /** Everything written to stdout so far. */
  stdout(): string;
  stderr(): string;
  /** Parsed JSON log lines from stdout. */
  logs(): Record<string, unknown>[];
}

/**
 * Starts `mpmc ARGS...` as a separate process. Its metrics server listens on
 * a free loopback port unless env sets MPMC_METRICS_PORT, because the fixed default
 * ports would collide between processes and test files running at once.
 */
export function startCli(args: string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, [cliEntry, ...args], {
    env: { ...process.env, MPMC_METRICS_PORT: "0", MPMC_METRICS_HOST: "127.0.0.1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<number | NodeJS.Signals>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? signal ?? -1));
  });
  return {
    child,
    exited,
    stdout: () => out,
    stderr: () => err,
    logs: () =>
      out
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

/** Stops a process that is still running with SIGKILL; used in test teardown. */
export function killIfRunning(proc: CliProcess | undefined): void {
  if (proc !== undefined && proc.child.exitCode === null && proc.child.signalCode === null) {
    proc.child.kill("SIGKILL");
  }
}
