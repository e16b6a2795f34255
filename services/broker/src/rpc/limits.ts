/** Bounds on what one request may carry. Each is a broker setting. */
export interface RequestLimits {
  /** Maximum jobs in one PublishRequest. */
  maxBatchJobs: number;
  /** Largest payload of one job, in bytes. */
  maxPayloadBytes: number;
  /** Most attributes on one job. */
  maxAttributes: number;
  /** Maximum length of an attribute key or value, in characters. */
  maxAttributeLength: number;
  /** Most acks or releases in one ConsumeRequest. */
  maxBatchAcks: number;
}

export const defaultRequestLimits: RequestLimits = {
  maxBatchJobs: 1_000,
  maxPayloadBytes: 1_048_576,
  maxAttributes: 64,
  maxAttributeLength: 4_096,
  maxBatchAcks: 10_000,
};
