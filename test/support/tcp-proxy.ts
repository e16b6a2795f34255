import { createConnection, createServer, type Socket } from "node:net";

/** A TCP proxy on loopback whose connections a test can cut while they carry traffic. */
export interface TcpProxy {
  /** "127.0.0.1:PORT", to pass as a client's broker address. */
  readonly address: string;
  /** Client connections accepted so far. */
  accepted(): number;
  /** Resets every open connection on both sides, and returns how many there were. */
  cutAll(): number;
  /** Stops listening and resets every open connection. */
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
}

/** Starts a proxy on 127.0.0.1 and a free port that forwards every connection to 127.0.0.1:targetPort. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let accepted = 0;

  const server = createServer((client) => {
    accepted++;
    const upstream = createConnection({ host: "127.0.0.1", port: targetPort });
    const pair: Pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    // Either side failing or closing ends the other, as a cut network would.
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
  });

  const cutAll = (): number => {
    const open = [...pairs];
    pairs.clear();
    for (const { client, upstream } of open) {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    }
    return open.length;
  };

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as { port: number }).port;

  return {
    address: `127.0.0.1:${port}`,
    accepted: () => accepted,
    cutAll,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      cutAll();
      await closed;
    },
  };
}
