import { createHash, timingSafeEqual } from "node:crypto";
import type { handleUnaryCall, Metadata } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { MpmcError } from "./errors.js";
import { toServiceError } from "./grpc/status.js";

/**
 * Checks the "authorization: Bearer <token>" metadata of an admin call.
 * Throws MpmcError "unauthenticated" when the metadata is missing or not a
 * bearer token, and "permission_denied" when the token is wrong. Does nothing
 * when adminToken is undefined, because then admin calls are open.
 */
export function checkAdminToken(metadata: Metadata, adminToken: string | undefined, rpc: string): void {
  if (adminToken === undefined) {
    return;
  }
  const values = metadata.get("authorization");
  if (values.length === 0) {
    throw new MpmcError("unauthenticated", `${rpc} requires the admin token: send metadata "authorization: Bearer <token>"`);
  }
  const match = /^Bearer +(\S+)\s*$/i.exec(String(values[0]));
  if (values.length > 1 || match === null) {
    throw new MpmcError("unauthenticated", `${rpc} requires exactly one "authorization: Bearer <token>" metadata entry`);
  }
  if (!tokensEqual(match[1] as string, adminToken)) {
    throw new MpmcError("permission_denied", `${rpc} rejected: the admin token is not valid`);
  }
}

/** Returns the gRPC metadata that carries an admin token, or none when the token is unset. */
export function adminTokenHeaders(adminToken: string | undefined): Record<string, string> {
  return adminToken === undefined ? {} : { authorization: `Bearer ${adminToken}` };
}

export interface AdminAuth {
  /** Bearer token that admin calls must carry. Every call passes when it is undefined. */
  adminToken: string | undefined;
  /** Logs each rejected call with its peer, for audits. */
  logger: Logger;
}

/**
 * Wraps a unary handler so that it runs only for calls that carry the admin
 * token. A rejected call ends with UNAUTHENTICATED or PERMISSION_DENIED.
 */
export function requireAdminToken<Req, Res>(auth: AdminAuth, rpc: string, handler: handleUnaryCall<Req, Res>): handleUnaryCall<Req, Res> {
  const { adminToken, logger } = auth;
  if (adminToken === undefined) {
    return handler;
  }
  return (call, callback) => {
    try {
      checkAdminToken(call.metadata, adminToken, rpc);
    } catch (err) {
      const error = toServiceError(err);
      logger.warn({ rpc, peer: call.getPeer(), code: error.code, reason: error.details }, "admin call rejected");
      callback(error);
      return;
    }
    handler(call, callback);
  };
}

/**
 * Compares in time that does not depend on where the tokens differ. Hashing
 * first gives timingSafeEqual inputs of equal length, so the length of the
 * admin token does not leak either.
 */
function tokensEqual(received: string, expected: string): boolean {
  const digest = (value: string): Buffer => createHash("sha256").update(value, "utf8").digest();
  return timingSafeEqual(digest(received), digest(expected));
}
