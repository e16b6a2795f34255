import { create } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

/** Converts milliseconds, fractions included, to a Duration with whole nanoseconds. */
export function durationOfMs(ms: number): Duration {
  const totalNanos = Math.round(ms * 1e6);
  const seconds = Math.trunc(totalNanos / 1e9);
  return create(DurationSchema, { seconds: BigInt(seconds), nanos: totalNanos - seconds * 1e9 });
}

/** Converts a Duration, or anything with its two fields, to milliseconds; a missing Duration is 0. */
export function msOfDuration(duration: Pick<Duration, "seconds" | "nanos"> | undefined): number {
  if (duration === undefined) {
    return 0;
  }
  return Number(duration.seconds) * 1000 + duration.nanos / 1e6;
}

export function timestampOfMs(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return create(TimestampSchema, { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) });
}

export function msOfTimestamp(timestamp: Timestamp | undefined): number {
  if (timestamp === undefined) {
    return 0;
  }
  return Number(timestamp.seconds) * 1000 + timestamp.nanos / 1e6;
}
