import { Code } from "@connectrpc/connect";
import { execFile, type ExecFileException } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { waitFor } from "./support/wait.js";

const execFileAsync = promisify(execFile);

/** The buf CLI from the @bufbuild/buf dev dependency. */
const bufPath = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));

const brokerMethods = [
  "CloseQueue",
  "Consume",
  "GetProducerCursor",
  "GetStats",
  "ListDeadLetters",
  "ListLeases",
  "Publish",
  "PurgeDeadLetters",
  "ReleaseLease",
  "RequeueDeadLetters",
  "Submit",
  "SubscribeResults",
  "WatchStats",
].map(
  (name) => `mpmc.v1.BrokerService/${name}`,
);

interface BufOutput {
  exitCode: number;
  stdout: string;
  stderr: string;
}

let broker: TestBroker | undefined;

afterEach(async () => {
  await broker?.stop();
  broker = undefined;
});

async function startBroker(): Promise<TestBroker> {
  broker = await startTestBroker();
  return broker;
}

/**
 * Runs `buf curl` over gRPC without TLS, with the schema from server reflection.
 * A failed RPC is not an exception: buf exits with the gRPC code shifted left
 * three bits (`buf curl --help`, buf 1.75) and prints the error as JSON to stderr.
 */
async function bufCurl(args: readonly string[]): Promise<BufOutput> {
  const command = ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args];
  try {
    const { stdout, stderr } = await execFileAsync(bufPath, command, { timeout: 20_000 });
    return { exitCode: 0, stdout, stderr };
  } catch (err) {
    const failure = err as ExecFileException & { stdout?: string; stderr?: string };
    if (typeof failure.code !== "number") {
      throw err;
    }
    return { exitCode: failure.code, stdout: failure.stdout ?? "", stderr: failure.stderr ?? "" };
  }
}

/** Runs `buf curl` and returns stdout, failing with buf's stderr when it exits non-zero. */
async function bufCurlOk(args: readonly string[]): Promise<string> {
  const output = await bufCurl(args);
  expect(output.stderr).toBe("");
  expect(output.exitCode).toBe(0);
  return output.stdout;
}

function linesOf(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

describe("server reflection", () => {
  it("lists services", async () => {
    const { address } = await startBroker();

    const services = linesOf(await bufCurlOk(["--list-services", `http://${address}`]));

    expect(services).toContain("mpmc.v1.BrokerService");
    expect(services).toContain("grpc.health.v1.Health");
  });

  it("lists BrokerService methods", async () => {
    const { address } = await startBroker();

    const methods = linesOf(await bufCurlOk(["--list-methods", `http://${address}`]));

    expect(methods.filter((method) => method.startsWith("mpmc.v1.BrokerService/")).sort()).toEqual(brokerMethods);
    expect(methods).toContain("grpc.health.v1.Health/Check");
  });

  // buf falls back from grpc-v1 to grpc-v1alpha only when --reflect-protocol is unset (`buf curl --help`), so each case uses only its protocol.
  it.each(["grpc-v1", "grpc-v1alpha"])("serves reflection protocol %s", async (protocol) => {
    const { address } = await startBroker();

    const methods = linesOf(await bufCurlOk(["--reflect-protocol", protocol, "--list-methods", `http://${address}`]));
    const output = await bufCurlOk([
      "--reflect-protocol",
      protocol,
      "-d",
      '{"producer_id":"p1","job":{"data":7}}',
      `http://${address}/mpmc.v1.BrokerService/Submit`,
    ]);

    expect(methods.filter((method) => method.startsWith("mpmc.v1.BrokerService/")).sort()).toEqual(brokerMethods);
    expect(JSON.parse(output).job.data).toBe("7");
  });
});

describe("buf curl calls", () => {
  it("submits JSON job", async () => {
    const { address } = await startBroker();

    const output = await bufCurlOk([
      "-d",
      '{"producer_id":"p1","job":{"data":21}}',
      `http://${address}/mpmc.v1.BrokerService/Submit`,
    ]);
    const { job } = JSON.parse(output) as { job: Record<string, unknown> };

    // protojson renders 64-bit integers as strings.
    expect(job.id).toBe("1");
    expect(job.data).toBe("21");
    expect(job.producerId).toBe("p1");
    expect(job.attempt).toBe(1);
  });

  it("returns stats as JSON", async () => {
    const { address } = await startBroker();
    await bufCurlOk(["-d", '{"producer_id":"p1","job":{"data":21}}', `http://${address}/mpmc.v1.BrokerService/Submit`]);

    const output = await bufCurlOk([`http://${address}/mpmc.v1.BrokerService/GetStats`]);
    const { stats } = JSON.parse(output) as { stats: Record<string, unknown> };

    expect(stats.created).toBe("1");
    expect(stats.queued).toBe("1");
    expect(stats.capacity).toBe(20);
  });

  it.each([
    { name: "whole server", service: "" },
    { name: "BrokerService", service: "mpmc.v1.BrokerService" },
  ])("reports $name health SERVING", async ({ service }) => {
    const { address } = await startBroker();

    const output = await bufCurlOk(["-d", JSON.stringify({ service }), `http://${address}/grpc.health.v1.Health/Check`]);

    expect(JSON.parse(output)).toEqual({ status: "SERVING" });
  });

  it("reports unknown service health NOT_FOUND", async () => {
    const { address } = await startBroker();

    const output = await bufCurl(["-d", '{"service":"mpmc.v1.Unknown"}', `http://${address}/grpc.health.v1.Health/Check`]);

    expect(output.exitCode).toBe(Code.NotFound << 3);
    expect(JSON.parse(output.stderr).code).toBe("not_found");
  });

  it("shows error code of bad request", async () => {
    const { address } = await startBroker();

    const output = await bufCurl([
      "-d",
      '{"producer_id":"bad id!","job":{"data":1}}',
      `http://${address}/mpmc.v1.BrokerService/Submit`,
    ]);
    const error = JSON.parse(output.stderr) as { code: string; message: string };

    expect(output.exitCode).toBe(Code.InvalidArgument << 3);
    expect(output.stdout).toBe("");
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toContain("producer_id must be 1 to 128 characters");
  });
});

describe("well-known types", () => {
  // buf curl has no describe verb. It can only print a google.protobuf.Duration
  // in its JSON form ("1.500s") when reflection also served the imported google/protobuf/duration.proto.
  it("renders zero durations", async () => {
    const { address } = await startBroker();

    const output = await bufCurlOk([`http://${address}/mpmc.v1.BrokerService/GetStats`]);
    const { stats } = JSON.parse(output) as { stats: Record<string, unknown> };

    expect(stats.totalProcessingDuration).toBe("0s");
    expect(stats.averageProcessingDuration).toBe("0s");
    expect(stats.queueWait).toEqual({ p50: "0s", p90: "0s", p99: "0s", max: "0s" });
  });

  it("renders reported duration", async () => {
    const { address, client } = await startBroker();
    const consumer = new ScriptedConsumer(client, "c1", 1);
    await client.submit({ producerId: "p1", job: { data: 1n } });
    const delivery = await waitFor("a delivery", () => consumer.deliveries[0], 10_000);
    await consumer.ack([delivery], 1_500);
    await waitFor("the job to be processed", async () => (await client.getStats({})).stats?.processed === 1n, 10_000);
    consumer.close();

    const output = await bufCurlOk([`http://${address}/mpmc.v1.BrokerService/GetStats`]);
    const { stats } = JSON.parse(output) as { stats: Record<string, unknown> };

    expect(stats.processed).toBe("1");
    expect(stats.totalProcessingDuration).toBe("1.500s");
    expect(stats.averageProcessingDuration).toBe("1.500s");
  });
});
