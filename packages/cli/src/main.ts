#!/usr/bin/env node
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { Command, type Option } from "commander";
import { brokerOptions, runBroker, type BrokerSettings } from "@mpmc/broker";
import { consumerOptions, runConsumer, type ConsumerSettings } from "@mpmc/consumer";
import { producerOptions, runProducer, type ProducerSettings } from "@mpmc/producer";
import { aggregatorOptions, runAggregator, type AggregatorSettings } from "@mpmc/aggregator";
import { createLogger, stopOnSignals } from "@mpmc/common";
import { closeCommand, statsCommand } from "./admin.js";
import { deadLettersCommand, leasesCommand, watchCommand } from "./operator.js";
import { Pipeline } from "./run/pipeline.js";
import { runOptions, type RunSettings } from "./run/settings.js";

const entry = fileURLToPath(import.meta.url);

// A reader that goes away (`mpmc dead-letters list | head`) is not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") {
    process.exit(0);
  }
  throw err;
});

function withOptions(command: Command, options: Option[]): Command {
  for (const option of options) {
    command.addOption(option);
  }
  return command;
}

const program = new Command("mpmc")
  .description("A gRPC work queue for many producers and many consumers")
  .showHelpAfterError()
  .configureHelp({ sortOptions: false });

program.addCommand(
  withOptions(new Command("broker").description("run the broker: the bounded job queue and its counters"), brokerOptions()).action(
    async (settings: BrokerSettings) => {
      await runBroker(settings);
    },
  ),
);

program.addCommand(
  withOptions(new Command("producer").description("push jobs to the broker over client streams"), producerOptions()).action(
    async (settings: ProducerSettings) => {
      await runProducer(settings);
      process.exit(0);
    },
  ),
);

program.addCommand(
  withOptions(new Command("consumer").description("receive jobs, run a handler and return results"), consumerOptions()).action(
    async (settings: ConsumerSettings) => {
      await runConsumer(settings);
      process.exit(0);
    },
  ),
);

program.addCommand(
  withOptions(new Command("aggregator").description("follow the broker's results and keep the totals"), aggregatorOptions()).action(
    async (settings: AggregatorSettings) => {
      await runAggregator(settings);
    },
  ),
);

program.addCommand(
  withOptions(
    new Command("run").description("run the whole pipeline as separate processes on this machine and print a final report"),
    runOptions(),
  ).action(async (settings: RunSettings) => {
    const logger = createLogger({ name: "run", level: settings.logLevel, format: settings.logFormat, fd: 2 });
    const pipeline = new Pipeline(entry, settings, logger);
    stopOnSignals(logger, async () => {
      await pipeline.stopAll();
      process.exit(130);
    });
    const timeout = setTimeout(() => {
      logger.error({ timeoutMs: settings.timeout }, "run timed out; stopping every process");
      void pipeline.stopAll().then(() => process.exit(1));
    }, settings.timeout);
    timeout.unref();
    try {
      const report = await pipeline.run();
      process.exit(report.ok ? 0 : 1);
    } catch (err) {
      logger.error({ err }, "run failed; stopping every process");
      await pipeline.stopAll();
      process.exit(1);
    }
  }),
);

program.addCommand(statsCommand());
program.addCommand(closeCommand());
program.addCommand(watchCommand());
program.addCommand(leasesCommand());
program.addCommand(deadLettersCommand());

program.parseAsync().catch((err: unknown) => {
  let message = err instanceof Error ? err.message : String(err);
  const code = err instanceof ConnectError ? err.code : undefined;
  if (code === Code.Unauthenticated || code === Code.PermissionDenied) {
    message += "\nSet the broker's admin token with --admin-token or MPMC_ADMIN_TOKEN.";
  }
  process.stderr.write(`mpmc: ${message}\n`);
  process.exit(1);
});
