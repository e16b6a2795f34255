/**
 * Lease deadlines in one binary min-heap, so the broker keeps a single timer
 * for all leases instead of one per job. Entries are never removed early: a
 * settled or extended lease leaves a stale entry that pop() callers skip by
 * checking the lease's current token and deadline.
 */
export interface LeaseDeadline {
  deadline: number;
  jobId: number;
  token: number;
}

export class LeaseTimers {
  private readonly heap: LeaseDeadline[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(entry: LeaseDeadline): void {
    this.heap.push(entry);
    this.siftUp(this.heap.length - 1);
  }

  /** Returns the earliest deadline, or undefined when empty. */
  peekDeadline(): number | undefined {
    return this.heap[0]?.deadline;
  }

  /** Removes and returns the earliest entry if its deadline is at or before nowMs. */
  popDue(nowMs: number): LeaseDeadline | undefined {
    const top = this.heap[0];
    if (top === undefined || top.deadline > nowMs) {
      return undefined;
    }
    const last = this.heap.pop() as LeaseDeadline;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftUp(index: number): void {
    const heap = this.heap;
    let i = index;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as LeaseDeadline).deadline <= (heap[i] as LeaseDeadline).deadline) {
        break;
      }
      [heap[parent], heap[i]] = [heap[i] as LeaseDeadline, heap[parent] as LeaseDeadline];
      i = parent;
    }
  }

  private siftDown(index: number): void {
    const heap = this.heap;
    let i = index;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && (heap[left] as LeaseDeadline).deadline < (heap[smallest] as LeaseDeadline).deadline) {
        smallest = left;
      }
      if (right < heap.length && (heap[right] as LeaseDeadline).deadline < (heap[smallest] as LeaseDeadline).deadline) {
        smallest = right;
      }
      if (smallest === i) {
        return;
      }
      [heap[smallest], heap[i]] = [heap[i] as LeaseDeadline, heap[smallest] as LeaseDeadline];
      i = smallest;
    }
  }
}
