import { build, JsHistogram, type Histogram } from "hdr-histogram-js";
import { Code, ConnectError } from "@connectrpc/connect";

/** One bucket of the latency histogram, as ghz prints it: calls at or below markMs and above the previous mark. */
export interface HistogramBucket {
  markMs: number;
  count: number;
  frequency: number;
}

/**
 * A load run's results in the shape of ghz's summary: call count, total
 * duration, calls per second, a 10-bucket latency histogram, percentiles, and
 * calls by gRPC status.
 */
export interface LoadSummary {
  count: number;
  totalMs: number;
  averageMs: number;
  fastestMs: number;
  slowestMs: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  histogram: HistogramBucket[];
  latencyDistribution: { percentage: number; latencyMs: number }[];
  /** Calls by gRPC status name, "OK" included. */
  statusCodeDistribution: Record<string, number>;
  /** Calls that ended with a status other than OK. */
  errors: number;
}

/** Latency in microseconds, so sub-millisecond loopback calls keep three significant digits. */
const microsPerMs = 1000;
const histogramBuckets = 10;
const reportedPercentiles = [10, 25, 50, 75, 90, 95, 99];

/** Records call latencies in an HdrHistogram and counts calls by gRPC status. */
export class LatencyRecorder {
  readonly histogram: Histogram = build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
  readonly statuses = new Map<string, number>();

  recordOk(latencyMs: number): void {
    this.histogram.recordValue(Math.max(1, Math.round(latencyMs * microsPerMs)));
    this.countStatus("OK");
  }

  /** Counts a failed call by its status; its latency stays out of the histogram, as in ghz. */
  recordError(err: unknown): void {
    this.countStatus(statusNameOf(err));
  }

  countStatus(name: string, count = 1): void {
    this.statuses.set(name, (this.statuses.get(name) ?? 0) + count);
  }

  get count(): number {
    let total = 0;
    for (const count of this.statuses.values()) {
      total += count;
    }
    return total;
  }

  get errors(): number {
    return this.count - (this.statuses.get("OK") ?? 0);
  }

  /** Adds another recorder's calls, e.g. those of a second round. */
  add(other: LatencyRecorder): void {
    this.histogram.add(other.histogram);
    for (const [name, count] of other.statuses) {
      this.countStatus(name, count);
    }
  }

  summarize(totalMs: number): LoadSummary {
    const h = this.histogram;
    const ms = (micros: number): number => micros / microsPerMs;
    const empty = h.totalCount === 0;
    return {
      count: this.count,
      totalMs,
      averageMs: empty ? 0 : ms(h.mean),
      fastestMs: empty ? 0 : ms(h.minNonZeroValue),
      slowestMs: empty ? 0 : ms(h.maxValue),
      rps: totalMs > 0 ? (this.count * 1000) / totalMs : 0,
      p50Ms: ms(h.getValueAtPercentile(50)),
      p90Ms: ms(h.getValueAtPercentile(90)),
      p99Ms: ms(h.getValueAtPercentile(99)),
      histogram: empty ? [] : linearBuckets(h),
      latencyDistribution: reportedPercentiles.map((percentage) => ({ percentage, latencyMs: ms(h.getValueAtPercentile(percentage)) })),
      statusCodeDistribution: Object.fromEntries([...this.statuses].sort(([a], [b]) => a.localeCompare(b))),
      errors: this.errors,
    };
  }
}

/**
 * Splits [fastest, slowest] into 10 equal buckets, as ghz does, counting the
 * values recorded in the HdrHistogram (each at its bucket's equivalent value).
 */
function linearBuckets(h: Histogram): HistogramBucket[] {
  if (!(h instanceof JsHistogram)) {
    throw new Error("the latency histogram must be a JsHistogram; it is built without WebAssembly");
  }
  const fastest = h.minNonZeroValue;
  const slowest = h.maxValue;
  const width = (slowest - fastest) / histogramBuckets;
  const counts = new Array<number>(histogramBuckets).fill(0);
  for (let index = 0; index < h.countsArrayLength; index++) {
    const count = h.getCountAtIndex(index);
    if (count === 0) {
      continue;
    }
    const value = h.valueFromIndex(index);
    const bucket = width === 0 ? 0 : Math.min(histogramBuckets - 1, Math.max(0, Math.floor((value - fastest) / width)));
    counts[bucket] = (counts[bucket] ?? 0) + count;
  }
  const total = h.totalCount;
  return counts.map((count, i) => ({
    markMs: (fastest + width * (i + 1)) / microsPerMs,
    count,
    frequency: count / total,
  }));
}

/** gRPC status names by Connect code, as grpc-go and ghz print them. */
const statusNames: Record<number, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** Returns the gRPC status name of a failed call, e.g. "UNAVAILABLE". */
export function statusNameOf(err: unknown): string {
  return statusNames[ConnectError.from(err).code] ?? "UNKNOWN";
}
