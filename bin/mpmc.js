#!/usr/bin/env node
// The mpmc executable. The TypeScript build writes the command line to packages/cli/dist.
try {
  await import("../packages/cli/dist/main.js");
} catch (err) {
  if (err && err.code === "ERR_MODULE_NOT_FOUND" && String(err.message).includes("packages/cli/dist")) {
    process.stderr.write("mpmc: not built yet; run `npm run build` first\n");
    process.exit(1);
  }
  throw err;
}
