/** The broker core's records. Plain data, independent of the wire format. */

/** A job as a producer hands it over, before the broker accepts it. */
export interface JobInput {
  data: bigint;
  payload: Uint8Array;
  attributes: Readonly<Record<string, string>>;
  /** Position in the producer's sequence, 0 when the producer does not number its jobs. */
  sequence: number;
  /** The job's own lease timeout in ms, 0 for the broker's default. */
  leaseMs: number;
}

export interface JobRecord extends JobInput {
  /** Unique and increasing. A JavaScript number is exact up to 2^53 jobs. */
  readonly id: number;
  readonly producerId: string;
  /** When the broker accepted the job, in ms since the epoch. */
  readonly createdAtMs: number;
  /** Delivery attempt, from 1. Raised when a delivery is lost; unchanged when a consumer releases the job. */
  attempt: number;
}

/** One delivery of a job to a consumer session. */
export interface Lease {
  readonly job: JobRecord;
  readonly sessionId: number;
  /** Unique per delivery; only the newest delivery's token settles the job. */
  readonly token: number;
  readonly deliveredAtMs: number;
  deadlineMs: number;
  /** Deadline of the lease-heap entry that wakes the broker for this lease; at most deadlineMs. */
  wakeAtMs: number;
}

export interface AckInput {
  jobId: number;
  token: number;
  output: bigint;
  processingMs: number;
}

export interface NackInput {
  jobId: number;
  token: number;
  error: string;
  /** Do not retry: dead-letter the job at once. */
  permanent: boolean;
}

export interface ExtendInput {
  jobId: number;
  token: number;
  /** New lease length from now in ms; undefined uses the job's lease timeout. */
  extensionMs: number | undefined;
}

/** The outcome of offering jobs to the queue. */
export interface OfferResult {
  accepted: JobRecord[];
  /** Jobs whose sequence number the producer had used before; they were not queued. */
  duplicates: number;
  /** How many of the offered jobs were handled, accepted or duplicate, from the start. The rest wait for room. */
  consumed: number;
}

/** One job in flight, for introspection. */
export interface LeaseInfo {
  jobId: number;
  consumerId: string;
  token: number;
  attempt: number;
  deliveredAtMs: number;
  deadlineMs: number;
}

/** The numbers that change with every job. */
export interface QueueGauges {
  queued: number;
  inFlight: number;
  waitingRetry: number;
  oldestJobAgeMs: number;
  created: number;
  processed: number;
  deadLettered: number;
  consumersConnected: number;
  closed: boolean;
  drained: boolean;
}

export interface LeaseRef {
  jobId: number;
  token: number;
}

export interface Rejection extends LeaseRef {
  reason: string;
}

export interface ResultRecord {
  /** Position in the broker's result stream, from 1. */
  readonly sequence: number;
  readonly jobId: number;
  readonly consumerId: string;
  readonly producerId: string;
  readonly data: bigint;
  readonly output: bigint;
  readonly attempt: number;
  readonly processingMs: number;
  readonly queueWaitMs: number;
  readonly completedAtMs: number;
}

/** Receives what the broker sends to one consumer stream. Implemented by the RPC shell. */
export interface ConsumerSink {
  deliver(leases: readonly Lease[]): void;
  /** The queue is closed and every job is settled: end the stream with OK. */
  end(): void;
}

/** Receives what the broker sends to one result subscriber. */
export interface ResultSink {
  results(batch: readonly ResultRecord[]): void;
  /** The queue is closed and drained: send the final stats and end the stream. */
  finish(stats: BrokerSnapshot): void;
}

export interface QueueWaitPercentiles {
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface ConsumerSnapshot {
  consumerId: string;
  connected: boolean;
  credit: number;
  inFlight: number;
  processed: number;
  totalProcessingMs: number;
  rejectedResults: number;
  failedAttempts: number;
}

export interface ProducerSnapshot {
  producerId: string;
  created: number;
  lastSequence: number;
}

export interface BrokerSnapshot {
  created: number;
  processed: number;
  inFlight: number;
  queued: number;
  capacity: number;
  closed: boolean;
  drained: boolean;
  totalProcessingMs: number;
  averageProcessingMs: number;
  queueWait: QueueWaitPercentiles;
  redelivered: number;
  rejectedResults: number;
  lateResults: number;
  failedAttempts: number;
  waitingRetry: number;
  deadLettered: number;
  deadLetters: number;
  duplicatesRefused: number;
  oldestJobAgeMs: number;
  lastResultSequence: number;
  firstKeptResultSequence: number;
  consumersConnected: number;
  subscribersConnected: number;
  consumers: ConsumerSnapshot[];
  producers: ProducerSnapshot[];
}
