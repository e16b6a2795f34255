import { pino } from "pino";
import { brokerDefaults, startBroker, type BrokerSettings, type RunningBroker } from "@mpmc/broker";
import { BrokerService, connectTo } from "@mpmc/common";

export interface TestBroker {
  readonly broker: RunningBroker;
  /** "127.0.0.1:PORT" */
  readonly address: string;
  readonly client: ReturnType<typeof connectTo<typeof BrokerService>>;
  stop(): Promise<void>;
}

/** Starts a real broker in this process on a free loopback port. */
export async function startTestBroker(overrides: Partial<BrokerSettings> = {}): Promise<TestBroker> {
  const settings: BrokerSettings = {
    ...brokerDefaults,
    host: "127.0.0.1",
    port: 0,
    logLevel: "silent",
    logFormat: "json",
    ...overrides,
  };
  const broker = await startBroker(settings, pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }));
  const address = `127.0.0.1:${broker.port}`;
  return {
    broker,
    address,
    client: connectTo(BrokerService, address),
    stop: () => broker.shutdown(500),
  };
}
