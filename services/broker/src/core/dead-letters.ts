import type { JobRecord } from "./types.js";

export interface DeadLetterRecord {
  readonly job: JobRecord;
  readonly error: string;
  /** Consumer of the last attempt; empty when no consumer was involved. */
  readonly consumerId: string;
  readonly deadLetteredAtMs: number;
}

/** Jobs that failed for good, in job id order, until they are requeued or purged. */
export class DeadLetters {
  private readonly entries = new Map<number, DeadLetterRecord>();
  /** Jobs purged so far; they stay counted as dead-lettered. */
  purged = 0;

  get size(): number {
    return this.entries.size;
  }

  add(record: DeadLetterRecord): void {
    this.entries.set(record.job.id, record);
  }

  /** Up to limit entries with a job id above afterJobId, in id order. */
  list(afterJobId: number, limit: number): DeadLetterRecord[] {
    return [...this.entries.values()]
      .filter((entry) => entry.job.id > afterJobId)
      .sort((a, b) => a.job.id - b.job.id)
      .slice(0, limit);
  }

  /** Removes and returns the entries with these job ids, or all entries when ids is "all". */
  take(ids: readonly number[] | "all"): DeadLetterRecord[] {
    const taken: DeadLetterRecord[] = [];
    const wanted = ids === "all" ? [...this.entries.keys()] : ids;
    for (const id of wanted) {
      const entry = this.entries.get(id);
      if (entry !== undefined) {
        this.entries.delete(id);
        taken.push(entry);
      }
    }
    return taken.sort((a, b) => a.job.id - b.job.id);
  }
}
