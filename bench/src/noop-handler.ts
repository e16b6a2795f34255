/**
 * The consumers' handler in the pipeline and relay scenarios: it does no work,
 * so the benchmark measures the queue and the transport rather than a handler.
 * It returns data * 2, the default handler's output, so results stay checkable.
 */
export default async function noopHandler(job: { data: bigint }): Promise<bigint> {
  return job.data * 2n;
}
