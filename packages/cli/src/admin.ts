import { toJsonString } from "@bufbuild/protobuf";
import { Command } from "commander";
import {
  adminTokenHeaders,
  adminTokenOption,
  BrokerService,
  BrokerStatsSchema,
  brokerAddressOption,
  connectTo,
  msOfDuration,
  readClientTls,
  tlsOptions,
  type BrokerStats,
  type ClientTlsSettings,
} from "@mpmc/common";

/** The stats and close commands: one call each to a running broker. */

export function formatStats(stats: BrokerStats): string {
  const ms = (d: Parameters<typeof msOfDuration>[0]): string => `${msOfDuration(d).toFixed(1)} ms`;
  const lines = [
    `created ${stats.created}, processed ${stats.processed}, in flight ${stats.inFlight}, queued ${stats.queued} of ${stats.capacity}`,
    `closed ${stats.closed}, drained ${stats.drained}, consumers connected ${stats.consumersConnected}`,
    `average processing ${ms(stats.averageProcessingDuration)}; queue wait p50 ${ms(stats.queueWait?.p50)}, p90 ${ms(stats.queueWait?.p90)}, p99 ${ms(stats.queueWait?.p99)}`,
    `waiting retry ${stats.waitingRetry}, dead-lettered ${stats.deadLettered} (${stats.deadLetters} held), duplicates refused ${stats.duplicatesRefused}`,
    `redelivered ${stats.redelivered}, failed attempts ${stats.failedAttempts}, rejected results ${stats.rejectedResults} (${stats.lateResults} late)`,
  ];
  for (const c of stats.consumers) {
    lines.push(`  consumer ${c.consumerId}: processed ${c.processed}, in flight ${c.inFlight}, credit ${c.credit}${c.connected ? "" : " (disconnected)"}`);
  }
  for (const p of stats.producers) {
    lines.push(`  producer ${p.producerId}: created ${p.created}`);
  }
  return lines.join("\n");
}

/** Adds the client TLS options to a command that calls the broker. */
export function withClientTls(command: Command): Command {
  for (const option of tlsOptions({ server: false, client: true })) {
    command.addOption(option);
  }
  return command;
}

export function statsCommand(): Command {
  return withClientTls(
    new Command("stats")
      .description("print a running broker's counters")
      .addOption(brokerAddressOption())
      .option("--json", "print the stats as protobuf JSON"),
  ).action(async (options: { broker: string; json?: boolean } & ClientTlsSettings) => {
    const { stats } = await connectTo(BrokerService, options.broker, readClientTls(options)).getStats({}, { timeoutMs: 10_000 });
    if (stats === undefined) {
      throw new Error("broker returned no stats");
    }
    process.stdout.write(
      (options.json === true ? toJsonString(BrokerStatsSchema, stats, { prettySpaces: 2 }) : formatStats(stats)) + "\n",
    );
  });
}

export function closeCommand(): Command {
  return withClientTls(
    new Command("close")
      .description("close a running broker's queue: consumers drain what is left, then end")
      .addOption(brokerAddressOption())
      .addOption(adminTokenOption("admin token the broker requires, sent as \"authorization: Bearer <token>\"; prefer MPMC_ADMIN_TOKEN, since other users can read command lines")),
  ).action(async (options: { broker: string; adminToken?: string } & ClientTlsSettings) => {
    const headers = adminTokenHeaders(options.adminToken);
    const response = await connectTo(BrokerService, options.broker, readClientTls(options)).closeQueue({}, { timeoutMs: 10_000, headers });
    const state = response.alreadyClosed ? "was already closed" : "closed";
    process.stdout.write(`queue ${state}; ${response.stats?.queued ?? 0} queued and ${response.stats?.inFlight ?? 0} in flight left to drain\n`);
  });
}
