import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AggregatorService, BrokerService, connectTo, readClientTls, readServerTls, type ClientTls } from "@mpmc/common";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { ScriptedConsumer } from "./support/consumer-stream.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";
import { waitFor } from "./support/wait.js";

/**
 * Node's crypto module parses and verifies X.509 certificates but cannot
 * issue them, so these tests issue theirs with the openssl command.
 */
function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore", timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

const opensslConfig = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
[server_and_client]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
`;

/**
 * PEM file paths of a test PKI: a CA with a server, a client and an
 * aggregator certificate, and a second CA with its own client.
 */
interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherClientCert: string;
  otherClientKey: string;
  /** Valid for both ends, because the aggregator presents it to its clients and to the broker. */
  aggregatorCert: string;
  aggregatorKey: string;
}

function issueTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "mpmc-tls-"));
  const path = (name: string): string => join(dir, name);
  const config = path("openssl.cnf");
  writeFileSync(config, opensslConfig);
  const openssl = (args: string[]): void => {
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"], timeout: 30_000 });
  };
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

  const selfSignedCa = (name: string): void => {
    openssl(["req", "-x509", ...newKey, "-config", config, "-extensions", "ca", "-subj", `/CN=${name}`, "-days", "2",
      "-keyout", path(`${name}.key`), "-out", path(`${name}.pem`)]);
  };
  const issue = (name: string, ca: string, extensions: string): void => {
    openssl(["req", "-new", ...newKey, "-config", config, "-subj", `/CN=${name}`, "-keyout", path(`${name}.key`), "-out", path(`${name}.csr`)]);
    openssl(["x509", "-req", "-in", path(`${name}.csr`), "-CA", path(`${ca}.pem`), "-CAkey", path(`${ca}.key`), "-CAcreateserial",
      "-days", "2", "-extfile", config, "-extensions", extensions, "-out", path(`${name}.pem`)]);
  };

  selfSignedCa("test-ca");
  issue("server", "test-ca", "server");
  issue("client", "test-ca", "client");
  issue("aggregator", "test-ca", "server_and_client");
  selfSignedCa("other-ca");
  issue("other-client", "other-ca", "client");
  return {
    dir,
    ca: path("test-ca.pem"),
    serverCert: path("server.pem"),
    serverKey: path("server.key"),
    clientCert: path("client.pem"),
    clientKey: path("client.key"),
    otherClientCert: path("other-client.pem"),
    otherClientKey: path("other-client.key"),
    aggregatorCert: path("aggregator.pem"),
    aggregatorKey: path("aggregator.key"),
  };
}

const opensslFound = hasOpenssl();
let pki: TestPki;
let broker: TestBroker | undefined;
const processes: CliProcess[] = [];

beforeAll(() => {
  if (opensslFound) {
    pki = issueTestPki();
  }
});

afterAll(() => {
  if (pki !== undefined) {
    rmSync(pki.dir, { recursive: true, force: true });
  }
});

afterEach(async () => {
  for (const proc of processes.splice(0)) {
    killIfRunning(proc);
    await proc.exited;
  }
  await broker?.stop();
  broker = undefined;
});

/** Calls GetStats over a fresh connection and returns the number of jobs created. */
async function createdOver(tls: ClientTls | undefined): Promise<bigint | undefined> {
  if (broker === undefined) {
    throw new Error("no broker running");
  }
  const { stats } = await connectTo(BrokerService, broker.address, tls).getStats({}, { timeoutMs: 5_000 });
  return stats?.created;
}

/** Reads the test CA, and the client certificate when given, as a client's TLS settings. */
function clientTls(cert?: string, key?: string): ClientTls {
  const tls = readClientTls({ tlsCa: pki.ca, tlsCert: cert, tlsKey: key });
  if (tls === undefined) {
    throw new Error("readClientTls returned undefined although --tls-ca is set");
  }
  return tls;
}

describe.skipIf(!opensslFound)("TLS", () => {
  it("serves a client that trusts its CA", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey });
    expect(await createdOver(clientTls())).toBe(0n);
  });

  it("rejects a plaintext client", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey });
    await expect(createdOver(undefined)).rejects.toThrow();
  });

  it("is rejected by a client without its CA", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey });
    // TLS with only the system CAs, which do not include the test CA.
    await expect(createdOver({})).rejects.toThrow(/certificate/i);
  });

  it("mutual TLS requires a client certificate", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.ca });
    await expect(createdOver(clientTls())).rejects.toThrow();
  });

  it("mutual TLS rejects a certificate of another CA", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.ca });
    await expect(createdOver(clientTls(pki.otherClientCert, pki.otherClientKey))).rejects.toThrow();
  });

  it("mutual TLS accepts a client certificate of its CA", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.ca });
    expect(await createdOver(clientTls(pki.clientCert, pki.clientKey))).toBe(0n);
  });

  it("commands and consumers dial with mutual TLS", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.ca });
    const tlsArgs = ["--tls-ca", pki.ca, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey];

    const consumer = startCli(["consumer", "--broker", broker.address, "--id", "c1", "--work-ms", "1", "--log-level", "warn", ...tlsArgs]);
    processes.push(consumer);
    const client = connectTo(BrokerService, broker.address, clientTls(pki.clientCert, pki.clientKey));
    await client.submit({ producerId: "p1", job: { data: 1n } }, { timeoutMs: 5_000 });
    await waitFor("the TLS consumer to process a job", async () => (await client.getStats({}, { timeoutMs: 5_000 })).stats?.processed === 1n);

    const stats = startCli(["stats", "--broker", broker.address, ...tlsArgs]);
    processes.push(stats);
    expect(await stats.exited).toBe(0);
    expect(stats.stdout()).toContain("created 1, processed 1");

    const plaintext = startCli(["stats", "--broker", broker.address]);
    processes.push(plaintext);
    expect(await plaintext.exited).toBe(1);
  });
});

describe.skipIf(!opensslFound)("aggregator TLS", () => {
  it("serves and dials mutual TLS", async () => {
    broker = await startTestBroker({ tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.ca });
    const tls = clientTls(pki.clientCert, pki.clientKey);
    const client = connectTo(BrokerService, broker.address, tls);
    const aggregator = startCli([
      "aggregator", "--broker", broker.address, "--host", "127.0.0.1", "--port", "0", "--log-level", "info",
      "--tls-cert", pki.aggregatorCert, "--tls-key", pki.aggregatorKey, "--tls-client-ca", pki.ca, "--tls-ca", pki.ca,
    ]);
    processes.push(aggregator);
    const port = await waitFor("the aggregator's port", () => aggregator.logs().find((line) => line.msg === "aggregator listening")?.port as number | undefined);
    await waitFor("the aggregator to subscribe", async () => (await client.getStats({}, { timeoutMs: 5_000 })).stats?.subscribersConnected === 1);

    const consumer = new ScriptedConsumer(client, "c1", 1);
    try {
      await client.submit({ producerId: "p1", job: { data: 4n } }, { timeoutMs: 5_000 });
      await waitFor("the job to be delivered", () => consumer.deliveries.length === 1);
      await consumer.ack(consumer.deliveries);

      const summaries = connectTo(AggregatorService, `127.0.0.1:${port}`, tls);
      await waitFor("the aggregator to count the result", async () => (await summaries.getSummary({}, { timeoutMs: 5_000 })).summary?.results === 1n);
      await expect(connectTo(AggregatorService, `127.0.0.1:${port}`, clientTls()).getSummary({}, { timeoutMs: 5_000 })).rejects.toThrow();
    } finally {
      consumer.close();
    }
  });
});

describe.skipIf(!opensslFound)("TLS settings", () => {
  it("require the certificate and key together", () => {
    expect(() => readServerTls({ tlsCert: pki.serverCert, tlsKey: undefined, tlsClientCa: undefined })).toThrow(
      "--tls-key (MPMC_TLS_KEY) is missing: --tls-cert and --tls-key must be set together",
    );
    expect(() => readClientTls({ tlsCa: undefined, tlsCert: undefined, tlsKey: pki.clientKey })).toThrow(
      "--tls-cert (MPMC_TLS_CERT) is missing: --tls-cert and --tls-key must be set together",
    );
    expect(() => readServerTls({ tlsCert: undefined, tlsKey: undefined, tlsClientCa: pki.ca })).toThrow(
      "--tls-client-ca (MPMC_TLS_CLIENT_CA) requires --tls-cert and --tls-key",
    );
  });

  it("name the file that cannot be read", () => {
    const missing = join(pki.dir, "missing.pem");
    expect(() => readServerTls({ tlsCert: missing, tlsKey: pki.serverKey, tlsClientCa: undefined })).toThrow(
      `cannot read the --tls-cert file "${missing}"`,
    );
    const notPem = join(pki.dir, "server.csr.txt");
    writeFileSync(notPem, "not a certificate");
    expect(() => readClientTls({ tlsCa: notPem, tlsCert: undefined, tlsKey: undefined })).toThrow(
      `the --tls-ca file "${notPem}" is not PEM`,
    );
  });

  it("read PEM files into buffers", () => {
    const tls = readServerTls({ tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.ca });
    expect(tls?.cert.equals(readFileSync(pki.serverCert))).toBe(true);
    expect(tls?.clientCa?.equals(readFileSync(pki.ca))).toBe(true);
    expect(readClientTls({ tlsCa: undefined, tlsCert: undefined, tlsKey: undefined })).toBeUndefined();
  });
});
