/**
 * The consumers that can take a job now, grouped by how many jobs each holds.
 * pick() returns one holding the fewest, so a fast consumer, which frees its
 * credit sooner, takes more work, and a consumer that joins late gets work at
 * once. Among equals, the one waiting longest goes first.
 */
export class ConsumerPool<K> {
  /** buckets[n] contains the ready consumers that hold n jobs, in the order they became ready. */
  private readonly buckets: Set<K>[] = [];
  private readonly loadOf = new Map<K, number>();

  get size(): number {
    return this.loadOf.size;
  }

  has(key: K): boolean {
    return this.loadOf.has(key);
  }

  /** Adds a consumer as ready with the given load, or moves it to that load. */
  set(key: K, load: number): void {
    this.delete(key);
    let bucket = this.buckets[load];
    if (bucket === undefined) {
      bucket = new Set<K>();
      this.buckets[load] = bucket;
    }
    bucket.add(key);
    this.loadOf.set(key, load);
  }

  delete(key: K): void {
    const load = this.loadOf.get(key);
    if (load === undefined) {
      return;
    }
    this.buckets[load]?.delete(key);
    this.loadOf.delete(key);
  }

  /** Returns a ready consumer holding the fewest jobs, without removing it. */
  pick(): K | undefined {
    if (this.loadOf.size === 0) {
      return undefined;
    }
    // Loads are bounded by the largest credit, so this scan is short.
    for (const bucket of this.buckets) {
      if (bucket !== undefined && bucket.size > 0) {
        return bucket.values().next().value;
      }
    }
    return undefined;
  }
}
