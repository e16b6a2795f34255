import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The parts of a V8 .cpuprofile (as `node --cpu-prof` writes it) that the summary reads. */
interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number } }[];
  /** Microseconds on the monotonic clock that process.hrtime reads, on Linux. */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A span of the monotonic clock in microseconds, as process.hrtime.bigint() / 1000n reads it in any process on the machine. */
export interface ProfileWindow {
  startMicros: number;
  endMicros: number;
}

export interface ProfileEntry {
  name: string;
  selfMs: number;
  /** Share of the samples in which the process was not idle, in %. */
  busyPercent: number;
}

export interface ProfileSummary {
  file: string;
  /** The span the samples were taken from; the whole profile when unset. */
  window: ProfileWindow | undefined;
  sampledMs: number;
  idleMs: number;
  busyMs: number;
  /** Functions by self time, largest first. */
  functions: ProfileEntry[];
  /** Self time by the package or part of the broker the code belongs to. */
  categories: ProfileEntry[];
}

/** The repository root as profile URLs spell it, cut from locations to keep them short. */
const repositoryUrl = new URL("../../", import.meta.url).href;

/**
 * Sums self time per function and per category of code, over the samples in
 * window when one is given, so the process's start and stop stay out. Each
 * sample lasts until the next one (timeDeltas[i + 1] in µs), as Chrome
 * DevTools counts it; the last sample gets no time.
 */
export function summarizeProfile(file: string, top = 25, window?: ProfileWindow): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const byFunction = new Map<string, number>();
  const byCategory = new Map<string, number>();
  let sampledMicros = 0;
  let idleMicros = 0;
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (window !== undefined && (at < window.startMicros || at > window.endMicros)) {
      continue;
    }
    const micros = profile.timeDeltas[i + 1] ?? 0;
    const node = nodes.get(profile.samples[i] as number);
    if (node === undefined) {
      continue;
    }
    sampledMicros += micros;
    const frame = node.callFrame;
    if (frame.functionName === "(idle)") {
      idleMicros += micros;
      continue;
    }
    const name = functionNameOf(frame);
    byFunction.set(name, (byFunction.get(name) ?? 0) + micros);
    const category = categoryOf(frame.url, frame.functionName);
    byCategory.set(category, (byCategory.get(category) ?? 0) + micros);
  }
  const busyMicros = sampledMicros - idleMicros;
  const entries = (totals: Map<string, number>): ProfileEntry[] =>
    [...totals]
      .sort(([, a], [, b]) => b - a)
      .map(([name, micros]) => ({ name, selfMs: micros / 1000, busyPercent: busyMicros > 0 ? (micros * 100) / busyMicros : 0 }));
  return {
    file,
    window,
    sampledMs: sampledMicros / 1000,
    idleMs: idleMicros / 1000,
    busyMs: busyMicros / 1000,
    functions: entries(byFunction).slice(0, top),
    categories: entries(byCategory),
  };
}

function functionNameOf(frame: CpuProfile["nodes"][number]["callFrame"]): string {
  const name = frame.functionName === "" ? "(anonymous)" : frame.functionName;
  if (frame.url === "") {
    return name;
  }
  const location = frame.url.startsWith(repositoryUrl) ? frame.url.slice(repositoryUrl.length) : frame.url;
  return `${name} ${location}:${frame.lineNumber + 1}`;
}

/** Groups code by where it lives: a package, a part of mpmc, Node's own JavaScript, or V8. */
function categoryOf(url: string, functionName: string): string {
  const packages: [string, string][] = [
    ["/node_modules/@grpc/grpc-js/", "grpc-js"],
    ["/node_modules/@bufbuild/protobuf/", "protobuf-es"],
    ["/node_modules/pino", "pino logging"],
    ["/node_modules/sonic-boom/", "pino logging"],
    ["/node_modules/prom-client/", "prom-client metrics"],
    ["/node_modules/hdr-histogram-js/", "hdr-histogram-js"],
    ["/services/broker/dist/core/", "broker core"],
    ["/services/broker/dist/rpc/", "broker rpc"],
    ["/services/broker/dist/", "broker, other"],
    ["/packages/common/dist/", "@mpmc/common"],
  ];
  for (const [fragment, category] of packages) {
    if (url.includes(fragment)) {
      return category;
    }
  }
  if (url.startsWith("node:")) {
    return "Node.js internals (node:*)";
  }
  if (url.includes("/node_modules/")) {
    return "other packages";
  }
  if (functionName === "(garbage collector)") {
    return "V8 garbage collector";
  }
  if (functionName === "(program)") {
    return "V8 and native code outside JavaScript (program)";
  }
  return url === "" ? "V8 builtins and native functions" : "other JavaScript";
}

/** Formats a summary as the tables docs/performance.md shows. */
export function formatProfileSummary(summary: ProfileSummary): string {
  const span = summary.window === undefined ? "the whole process" : `${((summary.window.endMicros - summary.window.startMicros) / 1e6).toFixed(2)} s of load`;
  const lines = [
    `CPU profile ${summary.file}, ${span}`,
    `sampled ${summary.sampledMs.toFixed(0)} ms: busy ${summary.busyMs.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms; shares are of the busy time`,
    "",
    "| self ms | share | category |",
    "| ---: | ---: | --- |",
    ...summary.categories.map((e) => `| ${e.selfMs.toFixed(0)} | ${e.busyPercent.toFixed(1)} % | ${e.name} |`),
    "",
    "| self ms | share | function |",
    "| ---: | ---: | --- |",
    ...summary.functions.map((e) => `| ${e.selfMs.toFixed(0)} | ${e.busyPercent.toFixed(1)} % | \`${e.name}\` |`),
  ];
  return lines.join("\n") + "\n";
}

/** Names of the .cpuprofile files in a directory; none when it does not exist. */
export function listProfiles(dir: string): string[] {
  try {
    return readdirSync(dir).filter((name) => name.endsWith(".cpuprofile"));
  } catch {
    return [];
  }
}

/**
 * Finds the profile a process wrote, which Node names
 * CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile, among files not in before.
 */
export function profileOfProcess(dir: string, pid: number, before: Set<string>): string | undefined {
  const written = listProfiles(dir).filter((name) => !before.has(name) && name.includes(`.${pid}.`));
  return written.length === 0 ? undefined : join(dir, written[0] as string);
}

/** Returns the current time on the clock that V8 CPU profiles use, in microseconds. */
export function monotonicMicros(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

// Run as a script: node bench/dist/profile-summary.js FILE [TOP [START_US END_US]]
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, top, start, end] = process.argv.slice(2);
  if (file === undefined) {
    process.stderr.write("usage: node bench/dist/profile-summary.js FILE.cpuprofile [TOP [START_US END_US]]\n");
    process.exit(2);
  }
  const window = start === undefined || end === undefined ? undefined : { startMicros: Number(start), endMicros: Number(end) };
  process.stdout.write(formatProfileSummary(summarizeProfile(file, top === undefined ? 25 : Number(top), window)));
}
