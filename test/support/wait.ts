import { setTimeout as sleep } from "node:timers/promises";

/**
 * Polls until check() returns a value other than undefined or false, and
 * returns it. Fails with the description after timeoutMs. The timeout only
 * bounds a hang; tests never assert on how long something took.
 */
export async function waitFor<T>(
  description: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}`);
    }
    await sleep(intervalMs);
  }
}
