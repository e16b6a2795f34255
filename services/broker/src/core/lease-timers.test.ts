import { describe, expect, it } from "vitest";
import { LeaseTimers, type LeaseDeadline } from "./lease-timers.js";

describe("LeaseTimers", () => {
  it("starts empty", () => {
    const timers = new LeaseTimers();

    expect(timers.size).toBe(0);
    expect(timers.peekDeadline()).toBeUndefined();
    expect(timers.popDue(Number.MAX_SAFE_INTEGER)).toBeUndefined();
  });

  it("peekDeadline returns the earliest deadline", () => {
    const timers = new LeaseTimers();
    timers.push({ deadline: 300, jobId: 1, token: 1 });
    timers.push({ deadline: 100, jobId: 2, token: 2 });
    timers.push({ deadline: 200, jobId: 3, token: 3 });

    expect(timers.peekDeadline()).toBe(100);
    expect(timers.size).toBe(3);
  });

  it("popDue returns nothing before the earliest deadline", () => {
    const timers = new LeaseTimers();
    timers.push({ deadline: 100, jobId: 1, token: 1 });

    expect(timers.popDue(99)).toBeUndefined();
    expect(timers.size).toBe(1);
  });

  it("popDue includes an entry due exactly now", () => {
    const timers = new LeaseTimers();
    const entry = { deadline: 100, jobId: 1, token: 1 };
    timers.push(entry);

    expect(timers.popDue(100)).toBe(entry);
    expect(timers.size).toBe(0);
    expect(timers.peekDeadline()).toBeUndefined();
  });

  it("popDue stops at the first entry not yet due", () => {
    const timers = new LeaseTimers();
    timers.push({ deadline: 30, jobId: 3, token: 3 });
    timers.push({ deadline: 10, jobId: 1, token: 1 });
    timers.push({ deadline: 40, jobId: 4, token: 4 });
    timers.push({ deadline: 20, jobId: 2, token: 2 });

    expect(timers.popDue(25)?.jobId).toBe(1);
    expect(timers.popDue(25)?.jobId).toBe(2);
    expect(timers.popDue(25)).toBeUndefined();
    expect(timers.size).toBe(2);
    expect(timers.peekDeadline()).toBe(30);
  });

  it("pops entries in deadline order", () => {
    const timers = new LeaseTimers();
    const deadlines = [50, 10, 90, 30, 70, 20, 80, 60, 40, 100, 0, 15];
    deadlines.forEach((deadline, i) => timers.push({ deadline, jobId: i, token: i }));

    const popped: number[] = [];
    for (let entry = timers.popDue(1000); entry !== undefined; entry = timers.popDue(1000)) {
      popped.push(entry.deadline);
    }

    expect(popped).toEqual([...deadlines].sort((a, b) => a - b));
    expect(timers.size).toBe(0);
  });

  it("keeps entries with equal deadlines", () => {
    const timers = new LeaseTimers();
    timers.push({ deadline: 5, jobId: 1, token: 1 });
    timers.push({ deadline: 5, jobId: 2, token: 2 });
    timers.push({ deadline: 5, jobId: 3, token: 3 });

    const jobIds = [timers.popDue(5), timers.popDue(5), timers.popDue(5)].map((entry) => entry?.jobId);

    expect(jobIds.sort()).toEqual([1, 2, 3]);
    expect(timers.popDue(5)).toBeUndefined();
  });

  it("matches a sorted model over random pushes and pops", () => {
    const random = mulberry32(777);
    const timers = new LeaseTimers();
    let model: LeaseDeadline[] = [];
    let now = 0;

    for (let step = 0; step < 5000; step++) {
      if (random() < 0.6) {
        const entry = { deadline: now + Math.floor(random() * 1000), jobId: step, token: step };
        timers.push(entry);
        model.push(entry);
      } else {
        now += Math.floor(random() * 200);
        const expected = model.filter((entry) => entry.deadline <= now).map((entry) => entry.deadline);
        expected.sort((a, b) => a - b);
        const popped: number[] = [];
        for (let entry = timers.popDue(now); entry !== undefined; entry = timers.popDue(now)) {
          popped.push(entry.deadline);
        }
        expect(popped).toEqual(expected);
        model = model.filter((entry) => entry.deadline > now);
      }
      expect(timers.size).toBe(model.length);
      const earliest = model.length === 0 ? undefined : Math.min(...model.map((entry) => entry.deadline));
      expect(timers.peekDeadline()).toBe(earliest);
    }
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
