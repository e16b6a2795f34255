import { Deque } from "./deque.js";
import type { ResultRecord } from "./types.js";

/**
 * The newest results, kept so that a subscriber can resume after the last
 * result it saw, and so that each subscriber reads at its own pace from one
 * shared buffer instead of a copy per subscriber. Its size bounds the memory
 * a slow subscriber can cost.
 */
export class ResultWindow {
  private readonly results = new Deque<ResultRecord>();
  private lastSequence = 0;

  constructor(readonly size: number) {}

  /** The newest result_sequence, 0 before the first result. */
  get last(): number {
    return this.lastSequence;
  }

  /** The oldest sequence still kept; last + 1 when none is kept. */
  get first(): number {
    return this.results.peek()?.sequence ?? this.lastSequence + 1;
  }

  push(result: ResultRecord): void {
    this.results.pushBack(result);
    this.lastSequence = result.sequence;
    if (this.results.length > this.size) {
      this.results.shift();
    }
  }

  /**
   * Returns up to limit results with a sequence above afterSequence, oldest
   * first, or undefined when some of them are no longer kept.
   */
  after(afterSequence: number, limit: number): ResultRecord[] | undefined {
    if (afterSequence >= this.lastSequence) {
      return [];
    }
    const first = this.first;
    if (afterSequence + 1 < first) {
      return undefined;
    }
    const out: ResultRecord[] = [];
    const offset = afterSequence + 1 - first;
    for (let i = offset; i < this.results.length && out.length < limit; i++) {
      out.push(this.results.at(i) as ResultRecord);
    }
    return out;
  }
}
