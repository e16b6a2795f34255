import { isValidId, maxIdLength, MpmcError, msOfDuration } from "@mpmc/common";
import type { JobInput } from "../core/types.js";
import type { RequestLimits } from "./limits.js";
import type { JobSpecFields } from "./wire.js";

/** Checks the fields of incoming requests. Each error names the field and the rule it broke. */

function invalid(message: string): MpmcError {
  return new MpmcError("invalid_argument", message);
}

export function requireId(field: string, value: string): string {
  if (value === "") {
    throw invalid(`${field} is required`);
  }
  if (!isValidId(value)) {
    throw invalid(`${field} must be 1 to ${maxIdLength} characters from "A-Z a-z 0-9 . _ -", got "${value.slice(0, maxIdLength)}"`);
  }
  return value;
}

const emptyPayload = new Uint8Array(0);
const noAttributes: Readonly<Record<string, string>> = Object.freeze({});

/** Bounds of a lease timeout or extension a client may ask for, in ms. */
export const minLeaseMs = 100;
export const maxLeaseMs = 86_400_000;

/** Converts one JobSpec, checking its payload, attributes and sequence against the limits. */
export function jobInputOf(field: string, spec: JobSpecFields, limits: RequestLimits): JobInput {
  if (spec.payload.length > limits.maxPayloadBytes) {
    throw new MpmcError(
      "resource_exhausted",
      `${field}.payload is ${spec.payload.length} bytes, over the limit of ${limits.maxPayloadBytes} bytes (max-payload-bytes)`,
    );
  }
  const keys = Object.keys(spec.attributes);
  if (keys.length > limits.maxAttributes) {
    throw new MpmcError(
      "resource_exhausted",
      `${field}.attributes has ${keys.length} entries, over the limit of ${limits.maxAttributes} (max-attributes)`,
    );
  }
  for (const key of keys) {
    const value = spec.attributes[key] as string;
    if (key.length === 0 || key.length > limits.maxAttributeLength || value.length > limits.maxAttributeLength) {
      throw invalid(`${field}.attributes: keys must be 1 to ${limits.maxAttributeLength} characters and values at most ${limits.maxAttributeLength}`);
    }
  }
  if (spec.sequence > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw invalid(`${field}.sequence must be at most ${Number.MAX_SAFE_INTEGER}, got ${spec.sequence}`);
  }
  let leaseMs = 0;
  if (spec.leaseTimeout !== undefined) {
    leaseMs = msOfDuration(spec.leaseTimeout);
    if (!(leaseMs >= minLeaseMs && leaseMs <= maxLeaseMs)) {
      throw invalid(`${field}.lease_timeout must be from ${minLeaseMs} ms to ${maxLeaseMs} ms, got ${leaseMs} ms`);
    }
  }
  // Jobs without payload or attributes share one empty value each, which saves a few hundred bytes per queued job.
  return {
    data: spec.data,
    payload: spec.payload.length === 0 ? emptyPayload : spec.payload,
    attributes: keys.length === 0 ? noAttributes : spec.attributes,
    sequence: Number(spec.sequence),
    leaseMs,
  };
}

/** Converts a batch of JobSpecs; the whole batch is checked before any job is accepted. */
export function jobInputsOf(jobs: readonly JobSpecFields[], limits: RequestLimits): JobInput[] {
  if (jobs.length === 0) {
    throw invalid("jobs must contain at least one job");
  }
  if (jobs.length > limits.maxBatchJobs) {
    throw new MpmcError(
      "resource_exhausted",
      `jobs has ${jobs.length} entries, over the limit of ${limits.maxBatchJobs} per request (max-batch-jobs)`,
    );
  }
  return jobs.map((spec, i) => jobInputOf(`jobs[${i}]`, spec, limits));
}

/** Converts an optional lease extension, checking its bounds. */
export function extensionMsOf(field: string, duration: Parameters<typeof msOfDuration>[0]): number | undefined {
  if (duration === undefined) {
    return undefined;
  }
  const ms = msOfDuration(duration);
  if (!(ms >= minLeaseMs && ms <= maxLeaseMs)) {
    throw invalid(`${field} must be from ${minLeaseMs} ms to ${maxLeaseMs} ms, got ${ms} ms`);
  }
  return ms;
}

/** Converts a uint64 job id or lease token from the wire; 0 and values past 2^53 are invalid. */
export function idNumberOf(field: string, value: bigint): number {
  if (value <= 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw invalid(`${field} must be from 1 to ${Number.MAX_SAFE_INTEGER}, got ${value}`);
  }
  return Number(value);
}
