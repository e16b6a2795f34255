/**
 * A double-ended queue on a growable ring buffer: push and shift at both ends
 * in O(1), amortized over the rare doubling of the buffer.
 */
export class Deque<T> {
  private buffer: (T | undefined)[];
  private head = 0;
  private size = 0;

  constructor(initialCapacity = 16) {
    this.buffer = new Array<T | undefined>(Math.max(2, initialCapacity));
  }

  get length(): number {
    return this.size;
  }

  pushBack(item: T): void {
    this.growIfFull();
    this.buffer[(this.head + this.size) % this.buffer.length] = item;
    this.size++;
  }

  pushFront(item: T): void {
    this.growIfFull();
    this.head = (this.head - 1 + this.buffer.length) % this.buffer.length;
    this.buffer[this.head] = item;
    this.size++;
  }

  shift(): T | undefined {
    if (this.size === 0) {
      return undefined;
    }
    const item = this.buffer[this.head];
    // Clear the slot so the deque does not keep a removed item alive.
    this.buffer[this.head] = undefined;
    this.head = (this.head + 1) % this.buffer.length;
    this.size--;
    return item;
  }

  /** Returns the item at index from the front, or undefined past the end. */
  at(index: number): T | undefined {
    if (index < 0 || index >= this.size) {
      return undefined;
    }
    return this.buffer[(this.head + index) % this.buffer.length];
  }

  peek(): T | undefined {
    return this.size === 0 ? undefined : this.buffer[this.head];
  }

  /** Removes every item and returns them, front first. */
  drain(): T[] {
    const items: T[] = [];
    for (let item = this.shift(); item !== undefined; item = this.shift()) {
      items.push(item);
    }
    return items;
  }

  private growIfFull(): void {
    if (this.size < this.buffer.length) {
      return;
    }
    const grown = new Array<T | undefined>(this.buffer.length * 2);
    for (let i = 0; i < this.size; i++) {
      grown[i] = this.buffer[(this.head + i) % this.buffer.length];
    }
    this.buffer = grown;
    this.head = 0;
  }
}
