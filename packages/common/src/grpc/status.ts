import { Metadata, status, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { MpmcError, type ErrorCode } from "../errors.js";

/** Maps an mpmc error code to its gRPC status code. */
export function grpcStatusOf(code: ErrorCode): status {
  switch (code) {
    case "invalid_argument":
      return status.INVALID_ARGUMENT;
    case "failed_precondition":
      return status.FAILED_PRECONDITION;
    case "resource_exhausted":
      return status.RESOURCE_EXHAUSTED;
    case "not_found":
      return status.NOT_FOUND;
    case "already_exists":
      return status.ALREADY_EXISTS;
    case "out_of_range":
      return status.OUT_OF_RANGE;
    case "deadline_exceeded":
      return status.DEADLINE_EXCEEDED;
    case "cancelled":
      return status.CANCELLED;
    case "unavailable":
      return status.UNAVAILABLE;
    case "permission_denied":
      return status.PERMISSION_DENIED;
    case "unauthenticated":
      return status.UNAUTHENTICATED;
    case "aborted":
      return status.ABORTED;
    case "internal":
      return status.INTERNAL;
  }
}

/**
 * Converts anything thrown by a handler into the status the client receives.
 * Errors that are not MpmcError become INTERNAL, without their message, because
 * their text may expose internals; the caller logs them.
 */
export function toServiceError(err: unknown): Partial<StatusObject> & ServiceError {
  const metadata = new Metadata();
  if (err instanceof MpmcError) {
    return Object.assign(new Error(err.message), { code: grpcStatusOf(err.code), details: err.message, metadata });
  }
  return Object.assign(new Error("internal error"), { code: status.INTERNAL, details: "internal error", metadata });
}
