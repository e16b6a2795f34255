import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { startTestBroker, type TestBroker } from "./support/broker.js";
import { killIfRunning, startCli, type CliProcess } from "./support/processes.js";

const token = "s3cret-Admin.token_42";

let broker: TestBroker | undefined;
const processes: CliProcess[] = [];

afterEach(async () => {
  for (const proc of processes.splice(0)) {
    killIfRunning(proc);
    await proc.exited;
  }
  await broker?.stop();
  broker = undefined;
});

/** Calls CloseQueue with the given authorization metadata and returns the error, or undefined on success. */
async function closeWith(client: TestBroker["client"], authorization?: string): Promise<ConnectError | undefined> {
  const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
  try {
    await client.closeQueue({}, { timeoutMs: 5_000, headers });
    return undefined;
  } catch (err) {
    return ConnectError.from(err);
  }
}

async function isClosed(client: TestBroker["client"]): Promise<boolean | undefined> {
  return (await client.getStats({}, { timeoutMs: 5_000 })).stats?.closed;
}

describe("CloseQueue admin token", () => {
  it("rejects a call without the token", async () => {
    broker = await startTestBroker({ adminToken: token });
    const err = await closeWith(broker.client);
    expect(err?.code).toBe(Code.Unauthenticated);
    expect(err?.rawMessage).toBe('CloseQueue requires the admin token: send metadata "authorization: Bearer <token>"');
    expect(await isClosed(broker.client)).toBe(false);
  });

  it("rejects a malformed authorization", async () => {
    broker = await startTestBroker({ adminToken: token });
    for (const authorization of [`Basic ${token}`, "Bearer", token]) {
      const err = await closeWith(broker.client, authorization);
      expect(err?.code, authorization).toBe(Code.Unauthenticated);
      expect(err?.rawMessage, authorization).toContain('"authorization: Bearer <token>"');
    }
    expect(await isClosed(broker.client)).toBe(false);
  });

  it("rejects a wrong token", async () => {
    broker = await startTestBroker({ adminToken: token });
    for (const wrong of ["wrong", `${token}x`, token.slice(0, -1), token.toUpperCase()]) {
      const err = await closeWith(broker.client, `Bearer ${wrong}`);
      expect(err?.code, wrong).toBe(Code.PermissionDenied);
      expect(err?.rawMessage, wrong).toBe("CloseQueue rejected: the admin token is not valid");
    }
    expect(await isClosed(broker.client)).toBe(false);
  });

  it("accepts the right token", async () => {
    broker = await startTestBroker({ adminToken: token });
    expect(await closeWith(broker.client, `Bearer ${token}`)).toBeUndefined();
    expect(await isClosed(broker.client)).toBe(true);
  });

  it("leaves other RPCs open", async () => {
    broker = await startTestBroker({ adminToken: token });
    const { job } = await broker.client.submit({ producerId: "p1", job: { data: 7n } }, { timeoutMs: 5_000 });
    expect(job?.data).toBe(7n);
    expect((await broker.client.getStats({}, { timeoutMs: 5_000 })).stats?.created).toBe(1n);
  });

  it("is open without an admin token", async () => {
    broker = await startTestBroker();
    expect(await closeWith(broker.client)).toBeUndefined();
    expect(await isClosed(broker.client)).toBe(true);
  });

  it("mpmc close sends the token", async () => {
    broker = await startTestBroker({ adminToken: token });
    const without = startCli(["close", "--broker", broker.address]);
    processes.push(without);
    expect(await without.exited).toBe(1);
    expect(without.stderr()).toContain("CloseQueue requires the admin token");

    const wrong = startCli(["close", "--broker", broker.address, "--admin-token", "wrong"]);
    processes.push(wrong);
    expect(await wrong.exited).toBe(1);
    expect(wrong.stderr()).toContain("the admin token is not valid");
    expect(await isClosed(broker.client)).toBe(false);

    const right = startCli(["close", "--broker", broker.address], { MPMC_ADMIN_TOKEN: token });
    processes.push(right);
    expect(await right.exited).toBe(0);
    expect(right.stdout()).toContain("queue closed");
    expect(await isClosed(broker.client)).toBe(true);
  });
});
