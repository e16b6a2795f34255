import { LatencyRecorder } from "./latency.js";
import { Progress, perSecond } from "./progress.js";

export interface LoadOptions {
  /** Names the run in progress lines, e.g. "submit mpmc". */
  label: string;
  /** Calls in flight at once. */
  concurrency: number;
  /** Calls to make; the run stops after this many. */
  count: number;
  /** The run also stops when this much time has passed, with fewer calls. */
  timeLimitMs: number;
  /** Makes call number index (from 0); a rejection counts as an error with its gRPC status. */
  call: (index: number) => Promise<void>;
  /** Progress lines are written unless this is false, e.g. for a warm-up. */
  progress?: boolean;
}

export interface LoadResult {
  recorder: LatencyRecorder;
  elapsedMs: number;
  /** "count" when every call was made, "time" when the time limit cut the run short. */
  stoppedBy: "count" | "time";
}

/**
 * Makes `count` calls with `concurrency` of them in flight, as ghz does, and
 * records each call's latency and status. It stops after `count` calls or
 * when `timeLimitMs` has passed, whichever comes first.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const recorder = new LatencyRecorder();
  const started = performance.now();
  const deadline = started + options.timeLimitMs;
  let next = 0;
  let timedOut = false;
  const progress =
    options.progress === false
      ? undefined
      : new Progress(options.label, () => {
          const done = recorder.count;
          return `${done} of ${options.count} calls, ${perSecond(done, performance.now() - started)}, ${recorder.errors} errors`;
        });

  const worker = async (): Promise<void> => {
    while (next < options.count) {
      if (performance.now() >= deadline) {
        timedOut = true;
        return;
      }
      const index = next++;
      const callStarted = performance.now();
      try {
        await options.call(index);
        recorder.recordOk(performance.now() - callStarted);
      } catch (err) {
        recorder.recordError(err);
      }
    }
  };

  try {
    await Promise.all(Array.from({ length: Math.min(options.concurrency, options.count) }, worker));
  } finally {
    progress?.stop();
  }
  return { recorder, elapsedMs: performance.now() - started, stoppedBy: timedOut ? "time" : "count" };
}
