/**
 * Preloaded into the scale scenario's memory broker with `--expose-gc
 * --import`, so the benchmark can read the broker's live memory without a
 * change to the broker: on the IPC message {type: "bench-gc"} it runs two
 * full garbage collections and replies with process.memoryUsage(). Without
 * them, garbage from the Publish requests would count as memory per job.
 */
process.on("message", (message: { type?: unknown }) => {
  if (message.type !== "bench-gc") {
    return;
  }
  if (globalThis.gc === undefined) {
    process.send?.({ type: "bench-memory", error: "the broker was started without --expose-gc" });
    return;
  }
  // A second collection frees what finalizers of the first released.
  globalThis.gc();
  globalThis.gc();
  process.send?.({ type: "bench-memory", ...process.memoryUsage() });
});
