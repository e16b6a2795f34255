import { readFileSync } from "node:fs";

/** PEM material for a gRPC server. */
export interface ServerTls {
  /** Certificate chain the server presents. */
  cert: Buffer;
  key: Buffer;
  /** CA that must sign client certificates. Set it for mutual TLS. */
  clientCa?: Buffer;
}

/** PEM material for a gRPC client. Any of it set means the client dials with TLS. */
export interface ClientTls {
  /** CA that must sign the server's certificate. The system CAs apply when it is unset. */
  ca?: Buffer;
  /** Client certificate chain for servers that require mutual TLS. Set it together with key. */
  cert?: Buffer;
  key?: Buffer;
}

/** File paths of the server's TLS settings, as the flags give them. */
export interface ServerTlsSettings {
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsClientCa: string | undefined;
}

/** File paths of a client's TLS settings, as the flags give them. */
export interface ClientTlsSettings {
  tlsCa: string | undefined;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
}

/**
 * Reads the server's PEM files. Returns undefined when neither --tls-cert nor
 * --tls-key is set, so the server runs without TLS. Throws an error that names
 * the setting when only one of the pair is set or a file cannot be read.
 */
export function readServerTls(settings: ServerTlsSettings): ServerTls | undefined {
  if (settings.tlsCert === undefined && settings.tlsKey === undefined) {
    if (settings.tlsClientCa !== undefined) {
      throw new Error("--tls-client-ca (MPMC_TLS_CLIENT_CA) requires --tls-cert and --tls-key, because mutual TLS runs over TLS");
    }
    return undefined;
  }
  requirePair(settings.tlsCert, settings.tlsKey);
  const tls: ServerTls = {
    cert: readPem("--tls-cert", settings.tlsCert as string),
    key: readPem("--tls-key", settings.tlsKey as string),
  };
  if (settings.tlsClientCa !== undefined) {
    tls.clientCa = readPem("--tls-client-ca", settings.tlsClientCa);
  }
  return tls;
}

/**
 * Reads a client's PEM files. Returns undefined when none of --tls-ca,
 * --tls-cert and --tls-key is set, so the client dials without TLS.
 */
export function readClientTls(settings: ClientTlsSettings): ClientTls | undefined {
  if (settings.tlsCa === undefined && settings.tlsCert === undefined && settings.tlsKey === undefined) {
    return undefined;
  }
  const tls: ClientTls = {};
  if (settings.tlsCa !== undefined) {
    tls.ca = readPem("--tls-ca", settings.tlsCa);
  }
  if (settings.tlsCert !== undefined || settings.tlsKey !== undefined) {
    requirePair(settings.tlsCert, settings.tlsKey);
    tls.cert = readPem("--tls-cert", settings.tlsCert as string);
    tls.key = readPem("--tls-key", settings.tlsKey as string);
  }
  return tls;
}

function requirePair(cert: string | undefined, key: string | undefined): void {
  if (cert === undefined || key === undefined) {
    const missing = cert === undefined ? "--tls-cert (MPMC_TLS_CERT)" : "--tls-key (MPMC_TLS_KEY)";
    throw new Error(`${missing} is missing: --tls-cert and --tls-key must be set together`);
  }
}

function readPem(option: string, path: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read the ${option} file "${path}": ${(err as Error).message}`, { cause: err });
  }
  if (!pem.includes("-----BEGIN ")) {
    throw new Error(`the ${option} file "${path}" is not PEM: expected a "-----BEGIN ...-----" block`);
  }
  return pem;
}
