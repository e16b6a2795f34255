import { describe, expect, it } from "vitest";
import { BrokerCore } from "./broker-core.js";
import { ManualClock } from "./clock.js";
import type { ConsumerSink, Lease } from "./types.js";

function recordingSink(): ConsumerSink & { leases: Lease[] } {
  const leases: Lease[] = [];
  return { leases, deliver: (batch) => leases.push(...batch), end: () => {} };
}

describe("lease heap", () => {
  it("stays small however often a lease is extended", () => {
    const clock = new ManualClock();
    const core = new BrokerCore({ capacity: 10, leaseMs: 1_000, clock });
    core.offer("p1", [{ data: 1n, payload: new Uint8Array(0), attributes: {}, sequence: 0, leaseMs: 0 }]);
    const sink = recordingSink();
    const session = core.attach("c1", 1, sink);
    const lease = sink.leases[0]!;
    for (let i = 0; i < 1_000; i++) {
      clock.advance(5);
      expect(core.extend(session, [{ jobId: lease.job.id, token: lease.token, extensionMs: 86_400_000 }])).toEqual([]);
    }
    expect(core.leaseHeapSize).toBe(1);
    // The first entry comes due, finds the lease extended, and is replaced by one entry at the new deadline.
    clock.advance(1_000);
    expect(core.inFlight).toBe(1);
    expect(core.leaseHeapSize).toBe(1);
  });

  it("still expires a lease that was shortened, then extended", () => {
    const clock = new ManualClock();
    const core = new BrokerCore({ capacity: 10, leaseMs: 10_000, clock });
    core.offer("p1", [{ data: 1n, payload: new Uint8Array(0), attributes: {}, sequence: 0, leaseMs: 0 }]);
    const sink = recordingSink();
    const session = core.attach("c1", 1, sink);
    const lease = sink.leases[0]!;
    core.extend(session, [{ jobId: lease.job.id, token: lease.token, extensionMs: 1_000 }]);
    core.extend(session, [{ jobId: lease.job.id, token: lease.token, extensionMs: 5_000 }]);
    clock.advance(4_999);
    expect(core.snapshot().redelivered).toBe(0);
    clock.advance(2);
    // Expired at 5,000 ms and delivered again, to the same idle consumer, with attempt 2.
    expect(core.snapshot().redelivered).toBe(1);
    expect(sink.leases).toHaveLength(2);
    expect(sink.leases[1]?.job.attempt).toBe(2);
  });
});
