import type { ProcessGroup } from "../processes.js";
import type { BenchSettings } from "../settings.js";

/** The process group and settings of a run. Each scenario stops the processes it started before it returns. */
export interface ScenarioContext {
  group: ProcessGroup;
  settings: BenchSettings;
}

/** How long a stopped child may take to exit before SIGKILL; a broker writing a CPU profile needs a few seconds. */
export const stopGraceMs = 10_000;

/** CPU time a process spent per unit of work, in ms; 0 when no work was done. */
export function cpuMsPer(cpuMs: number, units: number): number {
  return units > 0 ? cpuMs / units : 0;
}
