import { pathToFileURL } from "node:url";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { randomInRange, type MsRange } from "@mpmc/common";

/** A job as a handler receives it. */
export interface HandlerJob {
  /** The broker's job id. */
  id: number;
  producerId: string;
  /** The job's integer input; int64 on the wire, so a bigint. */
  data: bigint;
  payload: Uint8Array;
  attributes: Readonly<Record<string, string>>;
  /** Delivery attempt, from 1. */
  attempt: number;
  /** When the broker accepted the job. */
  createdAt: Date;
}

/**
 * Runs one job and returns its output. A thrown error fails the attempt: the
 * broker retries the job after a backoff, until its last attempt. An error
 * with `permanent: true` (such as PermanentJobError) is not retried: the job
 * moves to the dead letters at once. The signal aborts when the consumer's
 * stream to the broker ends, because the broker has then requeued the job.
 */
export type JobHandler = (job: HandlerJob, signal: AbortSignal) => Promise<bigint | number>;

/** A handler error that marks its job as not retryable. */
export class PermanentJobError extends Error {
  override readonly name = "PermanentJobError";
  readonly permanent = true;
}

/** True for errors that mark a job as not retryable: any error object with permanent === true. */
export function isPermanentFailure(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { permanent?: unknown }).permanent === true;
}

/** The default handler: simulated work for a random time in the range, then data * 2. */
export function simulatedWork(workMs: MsRange): JobHandler {
  return async (job, signal) => {
    await sleep(randomInRange(workMs), undefined, { signal });
    return job.data * 2n;
  };
}

/**
 * Loads a handler from a module whose default export (or export named
 * "handler") is a JobHandler. Relative paths are resolved from the working directory.
 */
export async function loadHandler(modulePath: string): Promise<JobHandler> {
  const url = pathToFileURL(resolve(modulePath)).href;
  let loaded: { default?: unknown; handler?: unknown };
  try {
    loaded = (await import(url)) as { default?: unknown; handler?: unknown };
  } catch (err) {
    throw new Error(`cannot load handler module "${modulePath}": ${(err as Error).message}`, { cause: err });
  }
  const handler = loaded.default ?? loaded.handler;
  if (typeof handler !== "function") {
    throw new Error(`handler module "${modulePath}" must export an async function as default or as "handler"`);
  }
  return handler as JobHandler;
}

/** Converts what a handler returned to an int64 output. */
export function outputOf(value: unknown): bigint {
  if (typeof value === "bigint") {
    return value;
  }
  if (typeof value === "number" && Number.isSafeInteger(value)) {
    return BigInt(value);
  }
  throw new Error(`handler must return an integer (number or bigint), got ${typeof value === "number" ? value : typeof value}`);
}
