import { describe, expect, it } from "vitest";
import { ManualClock } from "./clock.js";

describe("ManualClock", () => {
  it("starts at the given time", () => {
    expect(new ManualClock(5_000).now()).toBe(5_000);
    expect(new ManualClock().now()).toBe(1_700_000_000_000);
  });

  it("advance moves now forward", () => {
    const clock = new ManualClock(0);
    clock.advance(250);

    expect(clock.now()).toBe(250);

    clock.advance(0);
    expect(clock.now()).toBe(250);
  });

  it("runs a timer only once it is due", () => {
    const clock = new ManualClock(0);
    const calls: number[] = [];
    clock.schedule(() => calls.push(clock.now()), 100);

    clock.advance(99);
    expect(calls).toEqual([]);

    clock.advance(1);
    expect(calls).toEqual([100]);

    clock.advance(1_000);
    expect(calls).toEqual([100]);
  });

  it("runs due timers in deadline order", () => {
    const clock = new ManualClock(0);
    const calls: string[] = [];
    clock.schedule(() => calls.push("c"), 30);
    clock.schedule(() => calls.push("a"), 10);
    clock.schedule(() => calls.push("b"), 20);
    clock.schedule(() => calls.push("late"), 500);

    clock.advance(100);

    expect(calls).toEqual(["a", "b", "c"]);
  });

  it("shows each timer its own deadline as now", () => {
    const clock = new ManualClock(1_000);
    const seen: number[] = [];
    clock.schedule(() => seen.push(clock.now()), 40);
    clock.schedule(() => seen.push(clock.now()), 15);

    clock.advance(60);

    expect(seen).toEqual([1_015, 1_040]);
    expect(clock.now()).toBe(1_060);
  });

  it("runs timers with equal deadlines in schedule order", () => {
    const clock = new ManualClock(0);
    const calls: number[] = [];
    for (let i = 0; i < 5; i++) {
      clock.schedule(() => calls.push(i), 10);
    }

    clock.advance(10);

    expect(calls).toEqual([0, 1, 2, 3, 4]);
  });

  it("cancel stops a timer from running", () => {
    const clock = new ManualClock(0);
    const calls: string[] = [];
    const cancelA = clock.schedule(() => calls.push("a"), 10);
    clock.schedule(() => calls.push("b"), 20);

    cancelA();
    clock.advance(100);

    expect(calls).toEqual(["b"]);
  });

  it("cancel after the timer ran is harmless", () => {
    const clock = new ManualClock(0);
    let calls = 0;
    const cancel = clock.schedule(() => calls++, 10);

    clock.advance(10);
    cancel();
    clock.advance(10);

    expect(calls).toBe(1);
  });

  it("timer can cancel a later timer", () => {
    const clock = new ManualClock(0);
    const calls: string[] = [];
    const cancelB = clock.schedule(() => calls.push("b"), 20);
    clock.schedule(() => {
      calls.push("a");
      cancelB();
    }, 10);

    clock.advance(100);

    expect(calls).toEqual(["a"]);
  });

  it("runs timers scheduled during advance", () => {
    const clock = new ManualClock(0);
    const calls: Array<[string, number]> = [];
    clock.schedule(() => {
      calls.push(["first", clock.now()]);
      clock.schedule(() => calls.push(["second", clock.now()]), 30);
      clock.schedule(() => calls.push(["too late", clock.now()]), 500);
    }, 10);

    clock.advance(100);

    expect(calls).toEqual([
      ["first", 10],
      ["second", 40],
    ]);

    clock.advance(410);
    expect(calls).toEqual([
      ["first", 10],
      ["second", 40],
      ["too late", 510],
    ]);
  });

  it("runs a zero-delay timer on the next advance", () => {
    const clock = new ManualClock(0);
    let calls = 0;
    clock.schedule(() => calls++, 0);

    expect(calls).toBe(0);

    clock.advance(0);
    expect(calls).toBe(1);
  });
});
