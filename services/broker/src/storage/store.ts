import type { MpmcError } from "@mpmc/common";
import type { DeadLetterRecord } from "../core/dead-letters.js";
import type { JobRecord, ResultRecord } from "../core/types.js";

/**
 * The broker's storage seam. The core reports every change to a job's place as
 * a journal entry; a store makes those entries durable in groups, and gives the
 * state back after a restart. Two implementations exist: MemoryStore (nothing
 * is kept, as without --data-dir) and SqliteStore. A backend on a distributed
 * engine implements the same four methods.
 */
export interface BrokerStore {
  /** Returns the state a previous run left, or an empty state for a new store. Called once, before append(). */
  load(): RecoveredState;
  /** Queues an entry for the next group commit. */
  append(entry: JournalEntry): void;
  /** Sets where each commit reads the counters to keep; they change with nearly every entry. */
  setCountersSource(read: () => PersistedCounters): void;
  /** Resolves once every entry appended so far is committed; rejects when the commit failed. */
  flush(): Promise<void>;
  /**
   * Why the store cannot take new jobs now, or undefined when it can: its
   * commits fail (a full disk, say), or it is close to its size limit. The
   * broker accepts no new jobs meanwhile, but keeps settling the ones it has.
   */
  readonly failure: MpmcError | undefined;
  /** The highest result_sequence committed; results above it are not yet sent to subscribers. */
  readonly committedResultSequence: number;
  close(): Promise<void>;
}

/** One change to where a job is. Entries apply in the order the core emits them. */
export type JournalEntry =
  | { kind: "accepted"; job: JobRecord }
  | { kind: "delivered"; jobId: number; attempt: number }
  | { kind: "returned"; jobId: number; attempt: number; to: "front" | "back" }
  | { kind: "retrying"; jobId: number; attempt: number; retryAtMs: number }
  | { kind: "settled"; result: ResultRecord }
  | { kind: "dead-lettered"; deadLetter: DeadLetterRecord }
  | { kind: "purged"; jobId: number }
  /** The queue was closed; the counters written with the commit record it. */
  | { kind: "closed" };

/** The counters that survive a restart. The queue-wait histogram does not. */
export interface PersistedCounters {
  created: number;
  processed: number;
  redelivered: number;
  rejectedResults: number;
  lateResults: number;
  failedAttempts: number;
  duplicatesRefused: number;
  totalProcessingMs: number;
  purged: number;
  /** True once the queue was closed; absent in stores written before it was kept. */
  closed?: boolean;
  consumers: { consumerId: string; processed: number; totalProcessingMs: number; rejectedResults: number; failedAttempts: number }[];
  producers: { producerId: string; created: number; lastSequence: number }[];
}

export interface RecoveredState {
  nextJobId: number;
  counters: PersistedCounters | undefined;
  /** Queued jobs, front first. */
  queue: JobRecord[];
  /** Jobs that were in flight when the broker stopped; their deliveries are lost. */
  inFlight: JobRecord[];
  retrying: { job: JobRecord; retryAtMs: number }[];
  deadLetters: DeadLetterRecord[];
  /** The kept results, oldest first. */
  results: ResultRecord[];
}

export function emptyState(): RecoveredState {
  return { nextJobId: 1, counters: undefined, queue: [], inFlight: [], retrying: [], deadLetters: [], results: [] };
}

/** The store of a broker without --data-dir: it keeps nothing and commits at once. */
export class MemoryStore implements BrokerStore {
  readonly failure = undefined;
  readonly committedResultSequence = Number.MAX_SAFE_INTEGER;

  load(): RecoveredState {
    return emptyState();
  }

  append(): void {}

  setCountersSource(): void {}

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
