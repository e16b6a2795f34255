/**
 * The one error type that mpmc code throws for expected failures. Each code
 * mirrors a gRPC status, and the RPC edge turns it into that status.
 */
export type ErrorCode =
  | "invalid_argument"
  | "failed_precondition"
  | "resource_exhausted"
  | "not_found"
  | "already_exists"
  | "out_of_range"
  | "deadline_exceeded"
  | "cancelled"
  | "unavailable"
  | "permission_denied"
  | "unauthenticated"
  | "aborted"
  | "internal";

export class MpmcError extends Error {
  override readonly name = "MpmcError";

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Returns true when err is an MpmcError with the given code. */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof MpmcError && err.code === code;
}
