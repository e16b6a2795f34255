import { describe, expect, it } from "vitest";
import { Deque } from "./deque.js";

describe("Deque", () => {
  it("starts empty", () => {
    const deque = new Deque<number>();

    expect(deque.length).toBe(0);
    expect(deque.peek()).toBeUndefined();
    expect(deque.shift()).toBeUndefined();
    expect(deque.drain()).toEqual([]);
  });

  it("shifts pushBack items in FIFO order", () => {
    const deque = new Deque<number>(4);
    deque.pushBack(1);
    deque.pushBack(2);
    deque.pushBack(3);

    expect(deque.length).toBe(3);
    expect(deque.shift()).toBe(1);
    expect(deque.shift()).toBe(2);
    expect(deque.shift()).toBe(3);
    expect(deque.shift()).toBeUndefined();
    expect(deque.length).toBe(0);
  });

  it("shifts pushFront items in LIFO order", () => {
    const deque = new Deque<number>(4);
    deque.pushFront(1);
    deque.pushFront(2);
    deque.pushFront(3);

    expect(deque.drain()).toEqual([3, 2, 1]);
  });

  it("mixes pushFront and pushBack", () => {
    const deque = new Deque<string>(4);
    deque.pushBack("b");
    deque.pushFront("a");
    deque.pushBack("c");
    deque.pushFront("z");

    expect(deque.length).toBe(4);
    expect(deque.drain()).toEqual(["z", "a", "b", "c"]);
  });

  it("peek returns the front without removing it", () => {
    const deque = new Deque<number>();
    deque.pushBack(7);
    deque.pushBack(8);

    expect(deque.peek()).toBe(7);
    expect(deque.peek()).toBe(7);
    expect(deque.length).toBe(2);

    deque.pushFront(6);
    expect(deque.peek()).toBe(6);
  });

  it("at indexes from the front", () => {
    const deque = new Deque<string>(4);
    deque.pushBack("b");
    deque.pushBack("c");
    deque.pushFront("a");

    expect(deque.at(0)).toBe("a");
    expect(deque.at(1)).toBe("b");
    expect(deque.at(2)).toBe("c");
    expect(deque.length).toBe(3);
  });

  it("at returns undefined out of range", () => {
    const deque = new Deque<number>(4);
    deque.pushBack(1);
    deque.pushBack(2);

    expect(deque.at(-1)).toBeUndefined();
    expect(deque.at(2)).toBeUndefined();
    expect(deque.at(100)).toBeUndefined();
    deque.shift();
    expect(deque.at(1)).toBeUndefined();
    expect(deque.at(0)).toBe(2);
  });

  it("at follows the ring across the buffer end", () => {
    const deque = new Deque<number>(4);
    for (let i = 0; i < 3; i++) {
      deque.pushBack(i);
    }
    deque.shift();
    deque.shift();
    // head is now at slot 2, so the next pushes wrap to slots 0 and 1.
    deque.pushBack(3);
    deque.pushBack(4);

    expect([0, 1, 2].map((index) => deque.at(index))).toEqual([2, 3, 4]);
  });

  it("drain empties the deque front first", () => {
    const deque = new Deque<number>(2);
    for (let i = 1; i <= 5; i++) {
      deque.pushBack(i);
    }

    expect(deque.drain()).toEqual([1, 2, 3, 4, 5]);
    expect(deque.length).toBe(0);
    expect(deque.peek()).toBeUndefined();
  });

  it("grows past the initial capacity with pushBack", () => {
    const deque = new Deque<number>(2);
    for (let i = 0; i < 100; i++) {
      deque.pushBack(i);
    }

    expect(deque.length).toBe(100);
    expect(deque.drain()).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it("grows past the initial capacity with pushFront", () => {
    const deque = new Deque<number>(2);
    for (let i = 0; i < 100; i++) {
      deque.pushFront(i);
    }

    expect(deque.length).toBe(100);
    expect(deque.drain()).toEqual(Array.from({ length: 100 }, (_, i) => 99 - i));
  });

  it("treats capacity below 2 as 2", () => {
    for (const capacity of [0, 1, -5]) {
      const deque = new Deque<number>(capacity);
      deque.pushBack(1);
      deque.pushFront(0);
      deque.pushBack(2);

      expect(deque.drain()).toEqual([0, 1, 2]);
    }
  });

  it("wraps around the end of the buffer", () => {
    const deque = new Deque<number>(4);
    // Moving head to the last slot makes the next pushBacks land at index 0 and up.
    deque.pushBack(0);
    deque.pushBack(1);
    deque.pushBack(2);
    deque.shift();
    deque.shift();
    deque.shift();
    deque.pushBack(3);
    deque.pushBack(4);
    deque.pushBack(5);
    deque.pushBack(6);

    expect(deque.length).toBe(4);
    expect(deque.peek()).toBe(3);
    expect(deque.drain()).toEqual([3, 4, 5, 6]);
  });

  it("pushFront wraps below index 0", () => {
    const deque = new Deque<number>(4);
    deque.pushBack(2);
    deque.pushFront(1);
    deque.pushFront(0);

    expect(deque.drain()).toEqual([0, 1, 2]);
  });

  it("keeps order when growing while wrapped", () => {
    const deque = new Deque<number>(4);
    deque.pushBack(0);
    deque.pushBack(1);
    deque.shift();
    deque.shift();
    // These pushes wrap past the end of the buffer and fill it, so the next push grows it while wrapped.
    deque.pushBack(2);
    deque.pushBack(3);
    deque.pushBack(4);
    deque.pushFront(1);
    deque.pushBack(5);
    deque.pushFront(0);

    expect(deque.length).toBe(6);
    expect(deque.drain()).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it("matches an array model over random operations", () => {
    const random = mulberry32(12345);
    const deque = new Deque<number>(2);
    const model: number[] = [];
    let next = 0;

    for (let step = 0; step < 5000; step++) {
      const choice = random();
      if (choice < 0.35) {
        deque.pushBack(next);
        model.push(next);
        next++;
      } else if (choice < 0.6) {
        deque.pushFront(next);
        model.unshift(next);
        next++;
      } else if (choice < 0.95) {
        expect(deque.shift()).toBe(model.shift());
      } else {
        expect(deque.drain()).toEqual(model.splice(0));
      }
      expect(deque.length).toBe(model.length);
      expect(deque.peek()).toBe(model[0]);
      const index = Math.floor(random() * (model.length + 1));
      expect(deque.at(index)).toBe(model[index]);
    }
    expect(deque.drain()).toEqual(model);
  });
});

/** Returns a seeded mulberry32 PRNG that yields floats in [0, 1), so a failing random sequence can be replayed. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
