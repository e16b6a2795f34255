import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ConsumeResponseSchema,
  DeliverySchema,
  PublishRequestSchema,
  ResultSchema,
  SubscribeResultsResponseSchema,
  durationOfMs,
  timestampOfMs,
  type Delivery,
  type Result,
} from "@mpmc/common";
import type { JobRecord, Lease, ResultRecord } from "../core/types.js";
import { jobMessageOf } from "./convert.js";
import { decodePublishRequest, encodeDeliveryBatch, encodeResultBatch } from "./wire.js";

/** The reference: the Delivery protobuf-es builds, which the direct encoder must match. */
function deliveryMessageOf(lease: Lease): Delivery {
  return create(DeliverySchema, {
    job: jobMessageOf(lease.job),
    leaseToken: BigInt(lease.token),
    leaseDeadline: timestampOfMs(lease.deadlineMs),
    queueWait: durationOfMs(lease.deliveredAtMs - lease.job.createdAtMs),
  });
}

/** The reference: the Result protobuf-es builds, which the direct encoder must match. */
function resultMessageOf(result: ResultRecord): Result {
  return create(ResultSchema, {
    jobId: BigInt(result.jobId),
    consumerId: result.consumerId,
    output: result.output,
    processingDuration: durationOfMs(result.processingMs),
    queueWait: durationOfMs(result.queueWaitMs),
    producerId: result.producerId,
    data: result.data,
    attempt: result.attempt,
    resultSequence: BigInt(result.sequence),
    completedAt: timestampOfMs(result.completedAtMs),
  });
}

function job(overrides: Partial<JobRecord> = {}): JobRecord {
  return {
    id: 42,
    producerId: "producer-1",
    data: 21n,
    payload: new Uint8Array([1, 2, 3]),
    attributes: { tenant: "a", "trace-id": "x-1" },
    sequence: 7,
    leaseMs: 0,
    createdAtMs: 1_796_414_090_421.5,
    attempt: 2,
    ...overrides,
  };
}

const jobs: JobRecord[] = [
  job(),
  // Zero and empty fields, which proto3 leaves out of the wire.
  job({ id: 1, producerId: "", data: 0n, payload: new Uint8Array(0), attributes: {}, sequence: 0, attempt: 0, createdAtMs: 0 }),
  // Negative and large int64 values, and a time before the epoch.
  job({ id: 2 ** 53 - 1, data: -(2n ** 63n), sequence: 2 ** 40, createdAtMs: -1_500.25 }),
  job({ id: 9, data: 2n ** 63n - 1n, attributes: { "ünïcode": "✓ 値" } }),
];

describe("wire encoders", () => {
  it("encode deliveries as protobuf-es does", () => {
    const leases: Lease[] = jobs.map((j, i) => ({
      job: j,
      sessionId: 1,
      token: i === 2 ? 2 ** 52 : i + 1,
      deliveredAtMs: j.createdAtMs + 1_234.567891,
      deadlineMs: j.createdAtMs + 30_000.25,
      wakeAtMs: j.createdAtMs + 30_000.25,
    }));
    const expected = create(ConsumeResponseSchema, {
      kind: { case: "deliveries", value: { deliveries: leases.map(deliveryMessageOf) } },
    });
    const decoded = fromBinary(ConsumeResponseSchema, encodeDeliveryBatch(leases));
    expect(equals(ConsumeResponseSchema, decoded, expected)).toBe(true);
    expect(decoded).toEqual(expected);
  });

  it("encode results as protobuf-es does", () => {
    const results: ResultRecord[] = jobs.map((j, i) => ({
      sequence: i + 1,
      jobId: j.id,
      consumerId: i === 1 ? "" : `consumer-${i}`,
      producerId: j.producerId,
      data: j.data,
      output: j.data / -2n,
      attempt: j.attempt,
      processingMs: i * 0.123456,
      queueWaitMs: i === 3 ? 0 : 12.5,
      completedAtMs: j.createdAtMs + 99.9,
    }));
    const expected = create(SubscribeResultsResponseSchema, {
      kind: { case: "results", value: { results: results.map(resultMessageOf) } },
    });
    const decoded = fromBinary(SubscribeResultsResponseSchema, encodeResultBatch(results));
    expect(equals(SubscribeResultsResponseSchema, decoded, expected)).toBe(true);
    expect(decoded).toEqual(expected);
  });

  it("encode an empty batch", () => {
    const decoded = fromBinary(ConsumeResponseSchema, encodeDeliveryBatch([]));
    expect(decoded.kind.case).toBe("deliveries");
  });
});

describe("Publish request decoder", () => {
  const requests = [
    create(PublishRequestSchema, { producerId: "p1", jobs: [] }),
    create(PublishRequestSchema, {
      producerId: "producer-ü",
      jobs: [
        { data: 21n, payload: new Uint8Array([9, 8, 7]), attributes: { a: "1", "ключ": "値" }, sequence: 3n },
        { data: -(2n ** 63n), sequence: 2n ** 53n, leaseTimeout: { seconds: 12n, nanos: 500_000_000 } },
        {},
      ],
    }),
  ];

  it("decodes as protobuf-es does", () => {
    for (const request of requests) {
      const bytes = toBinary(PublishRequestSchema, request);
      const decoded = decodePublishRequest(bytes);
      const reference = fromBinary(PublishRequestSchema, bytes);
      expect(decoded.producerId).toBe(reference.producerId);
      expect(decoded.jobs).toHaveLength(reference.jobs.length);
      decoded.jobs.forEach((job, i) => {
        const expected = reference.jobs[i]!;
        expect(job.data).toBe(expected.data);
        expect([...job.payload]).toEqual([...expected.payload]);
        expect(job.attributes).toEqual(expected.attributes);
        expect(job.sequence).toBe(expected.sequence);
        expect(job.leaseTimeout?.seconds).toBe(expected.leaseTimeout?.seconds);
        expect(job.leaseTimeout?.nanos).toBe(expected.leaseTimeout?.nanos);
      });
    }
  });

  it("skips unknown fields", () => {
    const known = toBinary(PublishRequestSchema, requests[1]!);
    // Field 15 as a varint and field 16 as bytes, which a newer producer might send.
    const unknown = new Uint8Array([15 << 3, 42, (16 << 3) | 2, 2, 1, 2]);
    const decoded = decodePublishRequest(new Uint8Array([...unknown, ...known]));
    expect(decoded.producerId).toBe("producer-ü");
    expect(decoded.jobs).toHaveLength(3);
  });

  it("rejects truncated bytes", () => {
    const bytes = toBinary(PublishRequestSchema, requests[1]!);
    expect(() => decodePublishRequest(bytes.subarray(0, bytes.length - 3))).toThrow();
  });
});
