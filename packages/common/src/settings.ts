import { hostname } from "node:os";
import { InvalidArgumentError } from "commander";

/**
 * Parsers for command-line flags and MPMC_* environment variables. Each throws
 * commander's InvalidArgumentError, so the message names the option and the value.
 */

export function integerIn(min: number, max: number): (value: string) => number {
  return (value) => {
    const parsed = Number(value.trim());
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return parsed;
  };
}

const durationPattern = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const unitMs: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/**
 * Parses "250ms", "3s", "1.5m" or "2h" into milliseconds. The unit is
 * required, because "3" could mean 3 ms or 3 s and either guess surprises someone.
 */
export function parseDurationMs(value: string): number {
  const match = durationPattern.exec(value.trim());
  if (!match) {
    throw new InvalidArgumentError(`expected a duration with a unit, such as "500ms", "3s", "2m" or "1h", got "${value}"`);
  }
  const amount = Number(match[1]);
  return Math.round(amount * (unitMs[match[2] as string] ?? 1));
}

/** Like parseDurationMs, bounded to [minMs, maxMs]. */
export function durationIn(minMs: number, maxMs: number): (value: string) => number {
  return (value) => {
    const ms = parseDurationMs(value);
    if (ms < minMs || ms > maxMs) {
      throw new InvalidArgumentError(`expected a duration from ${minMs}ms to ${maxMs}ms`);
    }
    return ms;
  };
}

export interface MsRange {
  minMs: number;
  maxMs: number;
}

/** Parses "MIN-MAX" in milliseconds, e.g. "80-200"; a single number is a fixed value. */
export function parseMsRange(value: string): MsRange {
  const match = /^(\d+)(?:-(\d+))?$/.exec(value.trim());
  if (!match) {
    throw new InvalidArgumentError('expected milliseconds as "MIN-MAX", e.g. "80-200", or one number');
  }
  const minMs = Number(match[1]);
  const maxMs = match[2] === undefined ? minMs : Number(match[2]);
  if (maxMs < minMs) {
    throw new InvalidArgumentError(`expected MIN <= MAX, got ${minMs} > ${maxMs}`);
  }
  if (maxMs > 3_600_000) {
    throw new InvalidArgumentError("expected at most 3600000 ms (one hour)");
  }
  return { minMs, maxMs };
}

/** Parses "host:port" for a client to dial; IPv6 hosts go in brackets, e.g. "[::1]:50051". */
export function parseAddress(value: string): string {
  const trimmed = value.trim();
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(trimmed);
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65_535) {
    throw new InvalidArgumentError('expected "host:port", e.g. "127.0.0.1:50051"');
  }
  return trimmed;
}

/** Returns HOST-PID with the host name reduced to id characters: unique per process on one host. */
export function defaultProcessId(): string {
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 100);
  return `${host}-${process.pid}`;
}

/** Parses a non-empty identifier of letters, digits, ".", "_" and "-", at most 128 characters. */
export function parseId(value: string): string {
  const trimmed = value.trim();
  if (!isValidId(trimmed)) {
    throw new InvalidArgumentError('expected 1 to 128 characters from "A-Z a-z 0-9 . _ -"');
  }
  return trimmed;
}

export const maxIdLength = 128;

export function isValidId(value: string): boolean {
  return value.length > 0 && value.length <= maxIdLength && /^[A-Za-z0-9._-]+$/.test(value);
}

/** Returns a whole number of milliseconds drawn uniformly from the range, both ends included. */
export function randomInRange(range: MsRange, random: () => number = Math.random): number {
  return range.minMs + Math.floor(random() * (range.maxMs - range.minMs + 1));
}
