import { create } from "@bufbuild/protobuf";
import { JobSpecSchema, PublishRequestSchema, type PublishRequest } from "@mpmc/common";

/**
 * Yields one Publish stream's requests: `jobs` jobs numbered from 1, as the mpmc
 * producer numbers them, in batches of batchSize. Each request is built when
 * the stream reads it, so a stream held back by a full queue builds none.
 */
export async function* publishRequests(producerId: string, jobs: number, batchSize: number, payload: Uint8Array): AsyncGenerator<PublishRequest> {
  for (let sequence = 1; sequence <= jobs; ) {
    const batch = [];
    for (let i = 0; i < batchSize && sequence <= jobs; i++, sequence++) {
      batch.push(create(JobSpecSchema, { data: BigInt(sequence % 100), payload, sequence: BigInt(sequence) }));
    }
    yield create(PublishRequestSchema, { producerId, jobs: batch });
  }
}

/** Returns a payload of the given size; every job shares it, so building requests costs the client no copies. */
export function payloadOf(bytes: number): Uint8Array {
  return new Uint8Array(bytes).fill(7);
}
