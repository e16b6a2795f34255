import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/**
 * Readers of another process's CPU time and memory from Linux /proc, so the
 * benchmark measures the server processes it started without changing them.
 */

let ticksPerSecond: number | undefined;

/** Clock ticks per second of /proc/PID/stat times (sysconf CLK_TCK), usually 100. */
function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      // NOTE: getconf is part of libc on Linux; 100 is the value on every common Linux build.
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/**
 * Returns user plus system CPU time of a process in ms, from utime and stime in
 * /proc/PID/stat. The resolution is one clock tick, 10 ms at CLK_TCK 100.
 */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name in field 2 may contain spaces and brackets, so split after its closing bracket.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state), so utime (field 14) and stime (field 15) are at 11 and 12.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / clockTicksPerSecond();
}

/** Returns the resident set size of a process in bytes, from VmRSS in /proc/PID/status. */
export function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (match === null) {
    throw new Error(`/proc/${pid}/status has no VmRSS line; is the process still running?`);
  }
  return Number(match[1]) * 1024;
}

/** This process's user plus system CPU time in ms. */
export function ownCpuTimeMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}
