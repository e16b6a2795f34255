import { fork, type ChildProcess } from "node:child_process";
import type { ChildMessage } from "@mpmc/common";

/** One service process started by `mpmc run`. */
export class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<number | NodeJS.Signals>;
  private readonly messages: ChildMessage[] = [];
  private readonly waiters: { type: ChildMessage["type"]; resolve: (m: ChildMessage) => void }[] = [];

  constructor(
    readonly name: string,
    entry: string,
    args: string[],
  ) {
    this.process = fork(entry, args, { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.process.on("message", (message: ChildMessage) => {
      const index = this.waiters.findIndex((w) => w.type === message.type);
      if (index >= 0) {
        this.waiters.splice(index, 1)[0]?.resolve(message);
      } else {
        this.messages.push(message);
      }
    });
    this.exited = new Promise((resolve) => {
      this.process.on("exit", (code, signal) => resolve(code ?? signal ?? 1));
    });
  }

  /** Resolves with the first message of that type; rejects if the process exits first. */
  async waitFor<T extends ChildMessage["type"]>(type: T): Promise<Extract<ChildMessage, { type: T }>> {
    const queued = this.messages.findIndex((m) => m.type === type);
    if (queued >= 0) {
      return this.messages.splice(queued, 1)[0] as Extract<ChildMessage, { type: T }>;
    }
    const received = new Promise<ChildMessage>((resolve) => this.waiters.push({ type, resolve }));
    const outcome = await Promise.race([received, this.exited.then((code) => ({ exit: code }))]);
    if ("exit" in outcome) {
      throw new Error(`${this.name} exited (${outcome.exit}) before it reported "${type}"`);
    }
    return outcome as Extract<ChildMessage, { type: T }>;
  }

  /** Sends SIGTERM, and SIGKILL if the process is still running after graceMs. */
  async stop(graceMs: number): Promise<number | NodeJS.Signals> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill("SIGTERM");
      const timer = setTimeout(() => this.process.kill("SIGKILL"), graceMs);
      const code = await this.exited;
      clearTimeout(timer);
      return code;
    }
    return this.exited;
  }
}
