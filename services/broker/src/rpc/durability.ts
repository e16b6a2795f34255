import type { RpcContext } from "./context.js";

/** Rejects new jobs while the store cannot commit, with the store's own error (RESOURCE_EXHAUSTED when full). */
export function requireWritableStore(ctx: RpcContext): void {
  const failure = ctx.store.failure;
  if (failure !== undefined) {
    throw failure;
  }
}
