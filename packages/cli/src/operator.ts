import { toJsonString } from "@bufbuild/protobuf";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  adminTokenHeaders,
  adminTokenOption,
  BrokerService,
  brokerAddressOption,
  connectTo,
  DeadLetterSchema,
  durationOfMs,
  LeaseInfoSchema,
  msOfDuration,
  msOfTimestamp,
  parseDurationMs,
  parseId,
  readClientTls,
  type ClientTlsSettings,
} from "@mpmc/common";
import { withClientTls } from "./admin.js";

/** Operator commands: dead letters, leases and a live view of the queue. */

interface BrokerCallOptions extends ClientTlsSettings {
  broker: string;
  adminToken?: string;
  json?: boolean;
}

function brokerClient(options: BrokerCallOptions): ReturnType<typeof connectTo<typeof BrokerService>> {
  return connectTo(BrokerService, options.broker, readClientTls(options));
}

function parseJobId(value: string): bigint {
  if (!/^\d{1,16}$/.test(value) || value === "0" || /^0+$/.test(value)) {
    throw new InvalidArgumentError(`expected a job id, a positive integer, got "${value}"`);
  }
  return BigInt(value);
}

/** Says how many of the named jobs were not dead letters, when some were not. */
function notFound(ids: string[], all: boolean | undefined, done: bigint): string {
  const missing = all === true ? 0 : ids.length - Number(done);
  return missing > 0 ? ` (${missing} of the ${ids.length} named jobs are not in the dead letters)` : "";
}

function brokerCommand(name: string, description: string): Command {
  return withClientTls(new Command(name).description(description).addOption(brokerAddressOption()));
}

function adminCommand(name: string, description: string): Command {
  return brokerCommand(name, description).addOption(
    adminTokenOption('admin token the broker requires, sent as "authorization: Bearer <token>"; prefer MPMC_ADMIN_TOKEN'),
  );
}

/** Job ids from the arguments, or all of them with --all; one of the two is required. */
function targetsOf(ids: string[], all: boolean | undefined): { jobIds: bigint[]; all: boolean } {
  if (all === true) {
    if (ids.length > 0) {
      throw new InvalidArgumentError("give job ids or --all, not both");
    }
    return { jobIds: [], all: true };
  }
  if (ids.length === 0) {
    throw new InvalidArgumentError("give the job ids to act on, or --all");
  }
  return { jobIds: ids.map(parseJobId), all: false };
}

export function deadLettersCommand(): Command {
  const command = new Command("dead-letters").description("list, requeue or purge jobs that failed for good");

  command.addCommand(
    brokerCommand("list", "list dead letters in job id order")
      .option("--json", "print protobuf JSON, one dead letter per line")
      .option("--page-size <count>", "maximum entries to print", "100")
      .option("--after <job-id>", "start after this job id", "0")
      .action(async (options: BrokerCallOptions & { pageSize: string; after: string }) => {
        const response = await brokerClient(options).listDeadLetters(
          { pageSize: Number(options.pageSize), afterJobId: BigInt(options.after) },
          { timeoutMs: 10_000 },
        );
        for (const entry of response.deadLetters) {
          if (options.json === true) {
            process.stdout.write(toJsonString(DeadLetterSchema, entry) + "\n");
          } else {
            process.stdout.write(
              `job ${entry.job?.id} from ${entry.job?.producerId} after attempt ${entry.job?.attempt}` +
                `${entry.consumerId === "" ? "" : ` on ${entry.consumerId}`}: ${entry.error}\n`,
            );
          }
        }
        if (options.json !== true) {
          const last = response.deadLetters.at(-1)?.job?.id;
          const more = last !== undefined && BigInt(response.deadLetters.length) < response.total ? `; the next page starts with --after ${last}` : "";
          process.stdout.write(`${response.deadLetters.length} shown, ${response.total} held${more}\n`);
        }
      }),
  );

  command.addCommand(
    adminCommand("requeue", "move dead letters back to the end of the queue with a fresh attempt count")
      .argument("[job-ids...]", "jobs to requeue")
      .option("--all", "requeue every dead letter")
      .action(async (ids: string[], options: BrokerCallOptions & { all?: boolean }) => {
        const response = await brokerClient(options).requeueDeadLetters(targetsOf(ids, options.all), {
          timeoutMs: 10_000,
          headers: adminTokenHeaders(options.adminToken),
        });
        process.stdout.write(`${response.requeued} dead letters requeued${notFound(ids, options.all, response.requeued)}\n`);
      }),
  );

  command.addCommand(
    adminCommand("purge", "delete dead letters for good")
      .argument("[job-ids...]", "jobs to delete")
      .option("--all", "delete every dead letter")
      .action(async (ids: string[], options: BrokerCallOptions & { all?: boolean }) => {
        const response = await brokerClient(options).purgeDeadLetters(targetsOf(ids, options.all), {
          timeoutMs: 10_000,
          headers: adminTokenHeaders(options.adminToken),
        });
        process.stdout.write(`${response.purged} dead letters purged${notFound(ids, options.all, response.purged)}\n`);
      }),
  );
  return command;
}

export function leasesCommand(): Command {
  const command = new Command("leases").description("see which consumer holds which job, and take a job back");

  command.addCommand(
    brokerCommand("list", "list jobs in flight, who holds each and since when")
      .option("--consumer <id>", "only this consumer's jobs", parseId)
      .option("--job <job-id>", "only this job", parseJobId)
      .option("--json", "print protobuf JSON, one lease per line")
      .action(async (options: BrokerCallOptions & { consumer?: string; job?: bigint }) => {
        const response = await brokerClient(options).listLeases(
          { consumerId: options.consumer ?? "", jobId: options.job ?? 0n, pageSize: 10_000 },
          { timeoutMs: 10_000 },
        );
        const now = Date.now();
        for (const lease of response.leases) {
          if (options.json === true) {
            process.stdout.write(toJsonString(LeaseInfoSchema, lease) + "\n");
          } else {
            const heldMs = now - msOfTimestamp(lease.deliveredAt);
            const leftMs = msOfTimestamp(lease.leaseDeadline) - now;
            process.stdout.write(
              `job ${lease.jobId} held by ${lease.consumerId} for ${(heldMs / 1000).toFixed(1)} s, ` +
                `attempt ${lease.attempt}, lease ends in ${(leftMs / 1000).toFixed(1)} s\n`,
            );
          }
        }
      }),
  );

  command.addCommand(
    adminCommand("release", "take a job back from its consumer; it returns to the front of the queue with its attempt raised")
      .argument("<job-id>", "the job to take back", parseJobId)
      .action(async (jobId: bigint, options: BrokerCallOptions) => {
        const response = await brokerClient(options).releaseLease({ jobId }, { timeoutMs: 10_000, headers: adminTokenHeaders(options.adminToken) });
        process.stdout.write(`job ${jobId} taken back from ${response.released?.consumerId ?? "its consumer"}\n`);
      }),
  );
  return command;
}

export function watchCommand(): Command {
  return brokerCommand("watch", "print the queue's gauges as they change, until the queue drains or Ctrl-C")
    .addOption(new Option("--interval <time>", "minimum time between two lines, e.g. 500ms").default(500, "500ms").argParser(parseDurationMs))
    .action(async (options: BrokerCallOptions & { interval: number }) => {
      const stream = brokerClient(options).watchStats({ minInterval: durationOfMs(options.interval) });
      for await (const { gauges } of stream) {
        if (gauges === undefined) {
          continue;
        }
        process.stdout.write(
          `${new Date().toISOString()} queued ${gauges.queued}, in flight ${gauges.inFlight}, waiting retry ${gauges.waitingRetry}, ` +
            `oldest ${msOfDuration(gauges.oldestJobAge).toFixed(0)} ms, created ${gauges.created}, processed ${gauges.processed}, ` +
            `dead-lettered ${gauges.deadLettered}, consumers ${gauges.consumersConnected}${gauges.drained ? ", drained" : gauges.closed ? ", closed" : ""}\n`,
        );
      }
    });
}
