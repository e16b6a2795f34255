import { fork, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The built `mpmc` command line, which runs every mpmc service. */
export const cliEntry = fileURLToPath(new URL("../../packages/cli/dist/main.js", import.meta.url));

/** Path of a built script of this package, e.g. "baselines/echo-server.js". */
export function benchScript(relativePath: string): string {
  return fileURLToPath(new URL(relativePath, import.meta.url));
}

/** An IPC message from a child: mpmc services send "listening" and "finished", the bench scripts send more. */
export interface ChildMessage {
  type: string;
  [key: string]: unknown;
}

export interface ChildOptions {
  /** Names the process in progress lines and errors, e.g. "broker". */
  name: string;
  script: string;
  args: string[];
  /** Node flags of the child, e.g. --cpu-prof; none when unset, so the bench's own flags are not inherited. */
  execArgv?: string[];
}

/** Log lines kept per child to explain a failure. */
const keptLines = 40;

/** Pino's numeric levels of warn and error. */
const warnLevel = 40;
const errorLevel = 50;

/** One process the benchmark started, with its IPC messages and the tail of its output. */
export class BenchChild {
  readonly name: string;
  readonly process: ChildProcess;
  /** Resolves with the exit code, or the signal name when a signal ended the process. */
  readonly exited: Promise<number | NodeJS.Signals>;
  /** JSON log lines at warn level, and at error level or above. */
  warnings = 0;
  errors = 0;
  private readonly recent: string[] = [];
  private readonly messages: ChildMessage[] = [];
  private readonly waiters: { type: string; resolve: (message: ChildMessage) => void }[] = [];
  private readonly lineListeners: ((line: string) => void)[] = [];
  private readonly messageListeners = new Map<string, (message: ChildMessage) => void>();

  constructor(options: ChildOptions) {
    this.name = options.name;
    this.process = fork(options.script, options.args, {
      execArgv: options.execArgv ?? [],
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    this.exited = new Promise((resolve) => {
      this.process.on("exit", (code, signal) => resolve(code ?? signal ?? 1));
    });
    this.process.on("message", (message: ChildMessage) => this.receive(message));
    for (const stream of [this.process.stdout, this.process.stderr]) {
      if (stream !== null) {
        createInterface({ input: stream }).on("line", (line) => this.keepLine(line));
      }
    }
  }

  get pid(): number {
    if (this.process.pid === undefined) {
      throw new Error(`${this.name} has no process id: it failed to start`);
    }
    return this.process.pid;
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Calls listener with every line the child writes to stdout or stderr from now on. */
  onLine(listener: (line: string) => void): void {
    this.lineListeners.push(listener);
  }

  /** Calls listener with every message of that type from now on, instead of keeping them for waitFor. */
  onMessage(type: string, listener: (message: ChildMessage) => void): void {
    this.messageListeners.set(type, listener);
  }

  /**
   * Resolves with the first message of that type. Rejects when the process
   * exits first or when timeoutMs passes, with the child's last output lines.
   */
  async waitFor(type: string, timeoutMs: number): Promise<ChildMessage> {
    const queued = this.messages.findIndex((m) => m.type === type);
    if (queued >= 0) {
      return this.messages.splice(queued, 1)[0] as ChildMessage;
    }
    let timer: NodeJS.Timeout | undefined;
    const received = new Promise<ChildMessage>((resolve) => this.waiters.push({ type, resolve }));
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const exited = this.exited.then((code) => ({ exit: code }));
    const outcome = await Promise.race([received, timedOut, exited]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      throw new Error(`${this.name} sent no "${type}" message within ${timeoutMs} ms${this.tail()}`);
    }
    if ("exit" in outcome) {
      throw new Error(`${this.name} exited (${String(outcome.exit)}) before it sent "${type}"${this.tail()}`);
    }
    return outcome as ChildMessage;
  }

  /** Sends an IPC message; does nothing once the child has exited. */
  send(message: ChildMessage): void {
    if (this.running && this.process.connected) {
      this.process.send(message);
    }
  }

  /** Sends SIGTERM, then SIGKILL if the process is still running after graceMs. */
  async stop(graceMs: number): Promise<number | NodeJS.Signals> {
    if (this.running) {
      this.process.kill("SIGTERM");
      const timer = setTimeout(() => this.kill(), graceMs);
      const code = await this.exited;
      clearTimeout(timer);
      return code;
    }
    return this.exited;
  }

  kill(): void {
    if (this.running) {
      this.process.kill("SIGKILL");
    }
  }

  /** Returns the child's last output lines for error messages, or "" when it wrote none. */
  tail(): string {
    return this.recent.length === 0 ? "" : `; last output of ${this.name}:\n  ${this.recent.join("\n  ")}`;
  }

  private receive(message: ChildMessage): void {
    const listener = this.messageListeners.get(message.type);
    if (listener !== undefined) {
      listener(message);
      return;
    }
    const index = this.waiters.findIndex((w) => w.type === message.type);
    if (index >= 0) {
      this.waiters.splice(index, 1)[0]?.resolve(message);
    } else {
      this.messages.push(message);
    }
  }

  private keepLine(line: string): void {
    this.recent.push(line.length > 500 ? `${line.slice(0, 500)}...` : line);
    if (this.recent.length > keptLines) {
      this.recent.shift();
    }
    const level = logLevelOf(line);
    if (level >= errorLevel) {
      this.errors++;
    } else if (level >= warnLevel) {
      this.warnings++;
    }
    for (const listener of this.lineListeners) {
      listener(line);
    }
  }
}

/** Returns the pino level of a JSON log line, or 0 for any other line. */
function logLevelOf(line: string): number {
  if (!line.startsWith("{")) {
    return 0;
  }
  try {
    const level = (JSON.parse(line) as { level?: unknown }).level;
    return typeof level === "number" ? level : 0;
  } catch {
    return 0;
  }
}

/**
 * Every process the benchmark started, so that each one is stopped at the
 * end of a scenario, on an error and on Ctrl-C.
 */
export class ProcessGroup {
  private readonly children: BenchChild[] = [];

  start(options: ChildOptions): BenchChild {
    const child = new BenchChild(options);
    this.children.push(child);
    return child;
  }

  /** Starts an mpmc service with `mpmc ARGS...` from the built command line. */
  startService(name: string, args: string[], execArgv?: string[]): BenchChild {
    return this.start({ name, script: cliEntry, args, execArgv });
  }

  /** Stops every child still running, the last started first, and removes them all from the group. */
  async stopAll(graceMs: number): Promise<void> {
    const children = this.children.splice(0, this.children.length).reverse();
    await Promise.all(children.map((child) => child.stop(graceMs)));
  }

  /** Sends SIGKILL to every child still running; safe to call from a process "exit" handler. */
  killAll(): void {
    for (const child of this.children) {
      child.kill();
    }
  }
}
