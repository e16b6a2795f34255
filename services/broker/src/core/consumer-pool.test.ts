import { describe, expect, it } from "vitest";
import { ConsumerPool } from "./consumer-pool.js";

describe("ConsumerPool", () => {
  it("starts empty", () => {
    const pool = new ConsumerPool<string>();

    expect(pool.size).toBe(0);
    expect(pool.has("a")).toBe(false);
    expect(pool.pick()).toBeUndefined();
  });

  it("pick returns the consumer with the fewest jobs", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 3);
    pool.set("b", 1);
    pool.set("c", 2);

    expect(pool.pick()).toBe("b");
  });

  it("pick does not remove the consumer", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 0);

    expect(pool.pick()).toBe("a");
    expect(pool.pick()).toBe("a");
    expect(pool.size).toBe(1);
    expect(pool.has("a")).toBe(true);
  });

  it("breaks ties by who became ready first", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 1);
    pool.set("b", 1);
    pool.set("c", 1);

    expect(pool.pick()).toBe("a");
    pool.delete("a");
    expect(pool.pick()).toBe("b");
  });

  it("moving a consumer puts it last among equals", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 0);
    pool.set("b", 0);
    pool.set("a", 1);
    pool.set("a", 0);

    expect(pool.pick()).toBe("b");
    pool.set("b", 1);
    expect(pool.pick()).toBe("a");
  });

  it("set moves a consumer to a new load", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 0);
    pool.set("b", 1);
    pool.set("a", 2);

    expect(pool.size).toBe(2);
    expect(pool.pick()).toBe("b");

    pool.set("b", 5);
    expect(pool.pick()).toBe("a");
  });

  it("delete removes a consumer", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 0);
    pool.set("b", 4);
    pool.delete("a");

    expect(pool.has("a")).toBe(false);
    expect(pool.has("b")).toBe(true);
    expect(pool.size).toBe(1);
    expect(pool.pick()).toBe("b");

    pool.delete("b");
    expect(pool.size).toBe(0);
    expect(pool.pick()).toBeUndefined();
  });

  it("delete of an unknown key is a no-op", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 2);
    pool.delete("zzz");

    expect(pool.size).toBe(1);
    expect(pool.pick()).toBe("a");
  });

  it("size counts each consumer once", () => {
    const pool = new ConsumerPool<number>();
    pool.set(1, 0);
    pool.set(1, 0);
    pool.set(1, 3);
    pool.set(2, 3);

    expect(pool.size).toBe(2);
    expect(pool.has(1)).toBe(true);
    expect(pool.has(2)).toBe(true);
    expect(pool.has(3)).toBe(false);
  });

  it("skips emptied lower buckets", () => {
    const pool = new ConsumerPool<string>();
    pool.set("a", 0);
    pool.set("b", 7);
    pool.set("a", 9);

    expect(pool.pick()).toBe("b");
  });
});
