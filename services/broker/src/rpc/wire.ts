import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { JobRecord, Lease, ResultRecord } from "../core/types.js";

/**
 * Direct protobuf encoders for the two messages the broker sends once per job,
 * delivery batches on Consume and result batches on SubscribeResults, and a
 * direct decoder for the one it receives once per job, PublishRequest. They
 * read and write the wire format of proto/mpmc/v1 without building
 * protobuf-es messages, because reflection took about half of the broker's
 * CPU time in the pipeline benchmark. wire.test.ts checks each against
 * protobuf-es on the same bytes.
 */

/** ConsumeResponse { deliveries: DeliveryBatch { deliveries } } */
export function encodeDeliveryBatch(leases: readonly Lease[]): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).fork();
  for (const lease of leases) {
    w.tag(1, WireType.LengthDelimited).fork();
    writeDelivery(w, lease);
    w.join();
  }
  w.join();
  return w.finish();
}

/** SubscribeResultsResponse { results: ResultBatch { results } } */
export function encodeResultBatch(results: readonly ResultRecord[]): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).fork();
  for (const result of results) {
    w.tag(1, WireType.LengthDelimited).fork();
    writeResult(w, result);
    w.join();
  }
  w.join();
  return w.finish();
}

function writeDelivery(w: BinaryWriter, lease: Lease): void {
  w.tag(1, WireType.LengthDelimited).fork();
  writeJob(w, lease.job);
  w.join();
  w.tag(2, WireType.Varint).uint64(lease.token);
  writeTimestamp(w, 3, lease.deadlineMs);
  writeDuration(w, 4, lease.deliveredAtMs - lease.job.createdAtMs);
}

function writeJob(w: BinaryWriter, job: JobRecord): void {
  w.tag(1, WireType.Varint).uint64(job.id);
  if (job.producerId !== "") {
    w.tag(2, WireType.LengthDelimited).string(job.producerId);
  }
  if (job.data !== 0n) {
    w.tag(3, WireType.Varint).int64(job.data);
  }
  if (job.payload.length > 0) {
    w.tag(4, WireType.LengthDelimited).bytes(job.payload);
  }
  for (const key in job.attributes) {
    w.tag(5, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).string(key);
    w.tag(2, WireType.LengthDelimited).string(job.attributes[key] as string);
    w.join();
  }
  writeTimestamp(w, 6, job.createdAtMs);
  if (job.attempt !== 0) {
    w.tag(7, WireType.Varint).uint32(job.attempt);
  }
  if (job.sequence !== 0) {
    w.tag(8, WireType.Varint).uint64(job.sequence);
  }
}

function writeResult(w: BinaryWriter, result: ResultRecord): void {
  w.tag(1, WireType.Varint).uint64(result.jobId);
  if (result.consumerId !== "") {
    w.tag(2, WireType.LengthDelimited).string(result.consumerId);
  }
  if (result.output !== 0n) {
    w.tag(3, WireType.Varint).int64(result.output);
  }
  writeDuration(w, 4, result.processingMs);
  writeDuration(w, 5, result.queueWaitMs);
  if (result.producerId !== "") {
    w.tag(6, WireType.LengthDelimited).string(result.producerId);
  }
  if (result.data !== 0n) {
    w.tag(7, WireType.Varint).int64(result.data);
  }
  if (result.attempt !== 0) {
    w.tag(8, WireType.Varint).uint32(result.attempt);
  }
  w.tag(9, WireType.Varint).uint64(result.sequence);
  writeTimestamp(w, 10, result.completedAtMs);
}

/** google.protobuf.Timestamp, split as timestampOfMs in @mpmc/common splits it. */
function writeTimestamp(w: BinaryWriter, fieldNo: number, ms: number): void {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  writeSecondsNanos(w, fieldNo, seconds, nanos);
}

/** google.protobuf.Duration, split as durationOfMs in @mpmc/common splits it. */
function writeDuration(w: BinaryWriter, fieldNo: number, ms: number): void {
  const totalNanos = Math.round(ms * 1e6);
  const seconds = Math.trunc(totalNanos / 1e9);
  writeSecondsNanos(w, fieldNo, seconds, totalNanos - seconds * 1e9);
}

function writeSecondsNanos(w: BinaryWriter, fieldNo: number, seconds: number, nanos: number): void {
  w.tag(fieldNo, WireType.LengthDelimited).fork();
  if (seconds !== 0) {
    w.tag(1, WireType.Varint).int64(seconds);
  }
  if (nanos !== 0) {
    w.tag(2, WireType.Varint).int32(nanos);
  }
  w.join();
}

/** The fields of a JobSpec that the broker reads; a JobSpec message has them too. */
export interface JobSpecFields {
  data: bigint;
  payload: Uint8Array;
  attributes: Record<string, string>;
  sequence: bigint;
  leaseTimeout?: { seconds: bigint; nanos: number } | undefined;
}

/** The fields of a PublishRequest, decoded without protobuf-es messages. */
export interface PublishRequestFields {
  producerId: string;
  jobs: JobSpecFields[];
}

const noPayload = new Uint8Array(0);
/** Shared by every job without attributes, and never written to; a job with attributes gets its own object. */
const noAttributes: Record<string, string> = Object.freeze({}) as Record<string, string>;

/**
 * Decodes a PublishRequest. Unknown fields are skipped, as protobuf-es skips
 * them; malformed bytes throw, and grpc-js then fails the call.
 */
export function decodePublishRequest(bytes: Uint8Array): PublishRequestFields {
  const r = new BinaryReader(bytes);
  const request: PublishRequestFields = { producerId: "", jobs: [] };
  while (r.pos < r.len) {
    const [fieldNo, wireType] = r.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) {
      request.producerId = r.string();
    } else if (fieldNo === 2 && wireType === WireType.LengthDelimited) {
      request.jobs.push(readJobSpec(r, r.uint32()));
    } else {
      r.skip(wireType, fieldNo);
    }
  }
  return request;
}

function readJobSpec(r: BinaryReader, length: number): JobSpecFields {
  const end = r.pos + length;
  const spec: JobSpecFields = { data: 0n, payload: noPayload, attributes: noAttributes, sequence: 0n, leaseTimeout: undefined };
  while (r.pos < end) {
    const [fieldNo, wireType] = r.tag();
    if (fieldNo === 1 && wireType === WireType.Varint) {
      spec.data = BigInt(r.int64());
    } else if (fieldNo === 2 && wireType === WireType.LengthDelimited) {
      spec.payload = r.bytes();
    } else if (fieldNo === 3 && wireType === WireType.LengthDelimited) {
      if (spec.attributes === noAttributes) {
        spec.attributes = {};
      }
      readAttribute(r, r.uint32(), spec.attributes);
    } else if (fieldNo === 4 && wireType === WireType.Varint) {
      spec.sequence = BigInt(r.uint64());
    } else if (fieldNo === 5 && wireType === WireType.LengthDelimited) {
      spec.leaseTimeout = readSecondsNanos(r, r.uint32());
    } else {
      r.skip(wireType, fieldNo);
    }
  }
  checkEnd(r, end, "JobSpec");
  return spec;
}

function readAttribute(r: BinaryReader, length: number, into: Record<string, string>): void {
  const end = r.pos + length;
  let key = "";
  let value = "";
  while (r.pos < end) {
    const [fieldNo, wireType] = r.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) {
      key = r.string();
    } else if (fieldNo === 2 && wireType === WireType.LengthDelimited) {
      value = r.string();
    } else {
      r.skip(wireType, fieldNo);
    }
  }
  checkEnd(r, end, "attributes entry");
  into[key] = value;
}

function readSecondsNanos(r: BinaryReader, length: number): { seconds: bigint; nanos: number } {
  const end = r.pos + length;
  const duration = { seconds: 0n, nanos: 0 };
  while (r.pos < end) {
    const [fieldNo, wireType] = r.tag();
    if (fieldNo === 1 && wireType === WireType.Varint) {
      duration.seconds = BigInt(r.int64());
    } else if (fieldNo === 2 && wireType === WireType.Varint) {
      duration.nanos = r.int32();
    } else {
      r.skip(wireType, fieldNo);
    }
  }
  checkEnd(r, end, "Duration");
  return duration;
}

function checkEnd(r: BinaryReader, end: number, what: string): void {
  if (r.pos !== end) {
    throw new Error(`invalid ${what}: its fields run past its length`);
  }
}
