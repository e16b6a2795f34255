// An example mpmc job handler: returns the square of the job's data.
// Run it with: npx mpmc consumer --handler examples/square-handler.mjs
//
// The default export receives the job and an AbortSignal, and returns the
// output as a bigint or a safe integer. Throwing fails this attempt: the
// broker puts the job back at the end of the queue with its attempt raised.

/**
 * @param {{ id: number, producerId: string, data: bigint, payload: Uint8Array,
 *           attributes: Readonly<Record<string, string>>, attempt: number, createdAt: Date }} job
 * @param {AbortSignal} signal aborted when the consumer must stop before the handler finishes
 * @returns {Promise<bigint>}
 */
export default async function square(job, signal) {
  signal.throwIfAborted();
  return job.data * job.data;
}
